-- running → completed for a batch, each fenced by its attempt id (the predicate of
-- domain::task::decide). The caller holds the rows' locks (lock_many.sql). The attempt stays on the
-- task row (ops.attempts).
--
-- A row with `start` set is dispatched, and its report says "start" and then "complete" of the same
-- attempt (a task that ends as it starts): both updates in one row write, leaving what the two would
-- leave — started_at and finished_at are the transaction's now(), as when start_many.sql runs first
-- in the same transaction.
UPDATE tasks t
SET status = 'completed', result = v.result, finished_at = now(),
    started_at = CASE WHEN v.start THEN now() ELSE t.started_at END,
    usage = coalesce(v.usage, t.usage), session = coalesce(v.session, t.session),
    unlisted_since = NULL,
    deadline = NULL
FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::bool[], $5::jsonb[], $6::jsonb[])
     AS v (id, attempt_id, result, start, usage, session)
WHERE t.id = v.id AND t.attempt_id = v.attempt_id
  AND t.status = CASE WHEN v.start THEN 'dispatched' ELSE 'running' END
RETURNING t.id AS "id: TaskId", t.workspace_id AS "workspace_id: WorkspaceId", t.agent_id AS "agent_id: AgentId",
       t.runtime_id AS "runtime_id: RuntimeId", t.status AS "status: TaskStatus", t.priority, t.payload, t.progress, t.result, t.error,
       t.failure_reason AS "failure_reason: FailureReason", t.attempt, t.max_attempts, t.attempt_id AS "attempt_id: AttemptId", t.idempotency_key,
       t.run_after, t.enqueued_at, t.dispatched_at, t.started_at, t.finished_at, t.usage AS "usage: Json<Usage>", t.usage_prior AS "usage_prior: Json<Usage>",
       t.session AS "session: Json<StoredSession>", t.seq,
       t.concurrency_key, t.concurrency_limit, t.dispatch_timeout_ms, t.running_timeout_ms, t.queued_ttl_ms, t.deadline
