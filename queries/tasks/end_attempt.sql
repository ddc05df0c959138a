-- Ends the current attempt of an active task (or cancels a queued one): back to 'queued' with a
-- run_after (retry), or 'failed' / 'cancelled'. Fenced by attempt id and the expected statuses.
UPDATE tasks
SET status = $3,
    failure_reason = $4,
    error = $5,
    run_after = coalesce($6, run_after),
    finished_at = CASE WHEN $3 = 'queued' THEN NULL ELSE now() END,
    dispatched_at = CASE WHEN $3 = 'queued' THEN NULL ELSE dispatched_at END,
    started_at = CASE WHEN $3 = 'queued' THEN NULL ELSE started_at END,
    cancel_pending = $7
WHERE id = $1 AND attempt_id IS NOT DISTINCT FROM $2 AND status = ANY($8::text[])
RETURNING id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status AS "status: TaskStatus", priority, payload, progress, result, error,
       failure_reason AS "failure_reason: FailureReason", attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, seq
