-- Tasks dispatched longer than dispatch_timeout, oldest first (tasks_dispatched_at: dispatched rows
-- only), locked; rows another transaction holds are skipped and seen next tick.
SELECT id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status AS "status: TaskStatus", priority, payload, progress, result, error,
       failure_reason AS "failure_reason: FailureReason", attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, usage AS "usage: Json<Usage>", usage_prior AS "usage_prior: Json<Usage>",
       session AS "session: Json<StoredSession>", seq
FROM tasks
WHERE status = 'dispatched' AND dispatched_at < now() - make_interval(secs => $1)
ORDER BY dispatched_at
LIMIT $2
FOR UPDATE SKIP LOCKED
