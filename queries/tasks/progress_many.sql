-- Progress of running attempts for a batch, each fenced by its attempt id, with the usage and
-- session it carries (NULL: unchanged).
UPDATE tasks t
SET progress = v.progress, usage = coalesce(v.usage, t.usage), session = coalesce(v.session, t.session)
FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::jsonb[], $5::jsonb[])
     AS v (id, attempt_id, progress, usage, session)
WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status = 'running'
RETURNING t.id AS "id: TaskId", t.workspace_id AS "workspace_id: WorkspaceId", t.agent_id AS "agent_id: AgentId",
       t.runtime_id AS "runtime_id: RuntimeId", t.status AS "status: TaskStatus", t.priority, t.payload, t.progress, t.result, t.error,
       t.failure_reason AS "failure_reason: FailureReason", t.attempt, t.max_attempts, t.attempt_id AS "attempt_id: AttemptId", t.idempotency_key,
       t.run_after, t.enqueued_at, t.dispatched_at, t.started_at, t.finished_at, t.usage AS "usage: Json<Usage>", t.usage_prior AS "usage_prior: Json<Usage>",
       t.session AS "session: Json<StoredSession>", t.seq,
       t.concurrency_key, t.concurrency_limit, t.dispatch_timeout_ms, t.running_timeout_ms, t.queued_ttl_ms, t.deadline
