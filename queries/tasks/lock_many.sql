-- Reads and locks the tasks a batch report names, in id order so that concurrent batches over the
-- same tasks cannot deadlock. Tasks of other workspaces are not returned (404 for that update).
SELECT id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status, priority, payload, progress, result, error,
       failure_reason, attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, seq
FROM tasks
WHERE id = ANY($1) AND workspace_id = $2
ORDER BY id
FOR UPDATE
