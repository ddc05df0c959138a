-- Enqueues a task. With an idempotency key already used in the workspace (tasks_idempotency)
-- nothing is inserted and no row is returned: the caller then returns the existing task.
INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, priority, payload, max_attempts, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId", agent_id AS "agent_id: AgentId",
       runtime_id AS "runtime_id: RuntimeId", status AS "status: TaskStatus", priority, payload, progress, result, error,
       failure_reason AS "failure_reason: FailureReason", attempt, max_attempts, attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after, enqueued_at, dispatched_at, started_at, finished_at, usage AS "usage: Json<Usage>", usage_prior AS "usage_prior: Json<Usage>",
       session AS "session: Json<StoredSession>", seq
