-- Reads and locks the tasks a batch report names, in id order so that concurrent batches over the
-- same tasks cannot deadlock. Tasks of other workspaces are neither returned (404 for that update)
-- nor locked. The workspace test is written `IS TRUE` so that no index on workspace_id can serve it:
-- the primary key always finds the rows, even when the statistics are stale and think the workspace
-- small (a BitmapAnd with a workspace index costs a scan of the whole workspace).
SELECT id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status AS "status: TaskStatus", priority, payload, progress, result, error,
       failure_reason AS "failure_reason: FailureReason", attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, usage AS "usage: Json<Usage>", usage_prior AS "usage_prior: Json<Usage>",
       session AS "session: Json<StoredSession>", seq,
       concurrency_key, concurrency_limit, dispatch_timeout_ms, running_timeout_ms, queued_ttl_ms, deadline
FROM tasks
WHERE id = ANY($1) AND (workspace_id = $2) IS TRUE
ORDER BY id
FOR UPDATE
