-- Enqueues tasks set-wise, in input order (seq follows it: FIFO is request order). A task whose
-- idempotency key is already used in the workspace (tasks_idempotency; a concurrent enqueue that
-- committed first) is not inserted and not returned: the caller reads the existing task.
-- claim_key orders the queue under priority aging: enqueue time in ms minus priority steps of $14 ms
-- (db::tasks::aging_step); the deadline is the queued TTL's. Only what the database decides comes
-- back (seq, and now() as enqueued_at and run_after): the caller has the rest, and a full row a
-- task (its payload decoded again) was a third of a batch's cost.
INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, priority, payload, max_attempts, idempotency_key,
                   concurrency_key, concurrency_limit, dispatch_timeout_ms, running_timeout_ms, queued_ttl_ms,
                   claim_key, deadline)
SELECT u.id, $1, u.agent, u.runtime, u.priority, u.payload::jsonb, u.max_attempts, u.key,
       u.ckey, u.climit, u.dispatch_ms, u.running_ms, u.ttl_ms,
       (extract(epoch FROM now()) * 1000)::bigint - u.priority::bigint * $14::bigint,
       CASE WHEN u.ttl_ms > 0 THEN now() + u.ttl_ms * interval '1 ms' END
FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::int[], $6::text[], $7::int[], $8::text[],
            $9::text[], $10::int[], $11::bigint[], $12::bigint[], $13::bigint[])
     WITH ORDINALITY AS u (id, agent, runtime, priority, payload, max_attempts, key,
                           ckey, climit, dispatch_ms, running_ms, ttl_ms, ord)
ORDER BY u.ord
ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id AS "id: TaskId", seq, enqueued_at
