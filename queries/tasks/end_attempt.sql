-- Ends the current attempt of an active task (or cancels a queued one): back to 'queued' with a
-- run_after (retry), or 'failed' / 'cancelled'. Fenced by attempt id and the expected statuses.
-- $9 the attempt's usage and $10 the task's session (NULL: unchanged); $11 the earlier attempts'
-- summed usage (a retry adds the ended attempt's to it and starts the next from none).
UPDATE tasks
SET status = $3,
    failure_reason = $4,
    error = $5,
    run_after = coalesce($6, run_after),
    finished_at = CASE WHEN $3 = 'queued' THEN NULL ELSE now() END,
    dispatched_at = CASE WHEN $3 = 'queued' THEN NULL ELSE dispatched_at END,
    started_at = CASE WHEN $3 = 'queued' THEN NULL ELSE started_at END,
    cancel_pending = $7,
    usage = CASE WHEN $3 = 'queued' THEN NULL ELSE coalesce($9, usage) END,
    session = coalesce($10, session),
    usage_prior = $11,
    -- A pool agent's task goes back to the pool.
    runtime_id = CASE WHEN $3 = 'queued' AND EXISTS (SELECT 1 FROM agents a WHERE a.id = agent_id
                                                     AND a.runtime_selector IS NOT NULL)
                      THEN NULL ELSE runtime_id END,
    unlisted_since = NULL,
    -- Back in the queue: the backlog's deadline counts from the first enqueue.
    deadline = CASE WHEN $3 = 'queued' AND queued_ttl_ms > 0 THEN enqueued_at + queued_ttl_ms * interval '1 ms' END
WHERE id = $1 AND attempt_id IS NOT DISTINCT FROM $2 AND status = ANY($8::text[])
RETURNING id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status AS "status: TaskStatus", priority, payload, progress, result, error,
       failure_reason AS "failure_reason: FailureReason", attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, usage AS "usage: Json<Usage>", usage_prior AS "usage_prior: Json<Usage>",
       session AS "session: Json<StoredSession>", seq,
       concurrency_key, concurrency_limit, dispatch_timeout_ms, running_timeout_ms, queued_ttl_ms, deadline
