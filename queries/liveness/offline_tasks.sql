-- Active tasks of runtimes offline for longer than offline_grace ($1 seconds), at most $2, locked
-- (runtimes_offline_since, then tasks_active_runtime).
SELECT t.id AS "id: TaskId", t.workspace_id AS "workspace_id: WorkspaceId", t.agent_id AS "agent_id: AgentId",
       t.runtime_id AS "runtime_id: RuntimeId", t.status AS "status: TaskStatus", t.priority, t.payload,
       t.progress, t.result, t.error, t.failure_reason AS "failure_reason: FailureReason", t.attempt,
       t.max_attempts, t.attempt_id AS "attempt_id: AttemptId", t.idempotency_key, t.run_after,
       t.enqueued_at, t.dispatched_at, t.started_at, t.finished_at, t.usage AS "usage: Json<Usage>",
       t.usage_prior AS "usage_prior: Json<Usage>", t.session AS "session: Json<StoredSession>", t.seq,
       t.concurrency_key, t.concurrency_limit, t.dispatch_timeout_ms, t.running_timeout_ms, t.queued_ttl_ms, t.deadline
FROM runtimes r
JOIN tasks t ON t.runtime_id = r.id AND t.status IN ('dispatched', 'running')
WHERE r.status = 'offline' AND r.offline_at < now() - make_interval(secs => $1)
ORDER BY r.offline_at
LIMIT $2
FOR UPDATE OF t SKIP LOCKED
