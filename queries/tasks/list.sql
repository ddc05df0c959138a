-- Keyset page, newest first (tasks_list, or tasks_list_agent when filtered by agent; both ascending,
-- read backwards).
SELECT id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status AS "status: TaskStatus", priority, payload, progress, result, error,
       failure_reason AS "failure_reason: FailureReason", attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, usage AS "usage: Json<Usage>", usage_prior AS "usage_prior: Json<Usage>",
       session AS "session: Json<StoredSession>", seq,
       concurrency_key, concurrency_limit, dispatch_timeout_ms, running_timeout_ms, queued_ttl_ms, deadline
FROM tasks
WHERE workspace_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::uuid IS NULL OR agent_id = $3)
  AND ($4::uuid IS NULL OR runtime_id = $4)
  AND ($5::bigint IS NULL OR seq < $5)
ORDER BY seq DESC
LIMIT $6
