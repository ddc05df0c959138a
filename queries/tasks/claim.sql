-- The claim, in one statement (DESIGN §12):
--
-- * runtime: its free slots (tasks_active_runtime); none unless it is online, in the workspace and
--   not draining. The row is found by its key alone, (workspace_id, id); online and draining are
--   judged in the CASE, not the WHERE: with `status = 'online'` in the WHERE, a planner without
--   statistics on runtimes (a fresh or fast-grown table before its autovacuum analyze) can pick the
--   partial index runtimes_online_provider and scan the workspace's every online runtime (1.3 ms
--   at 10k runtimes against 0.02 ms; the generic plan keeps the choice).
-- * room: each live, unpaused agent of the runtime — bound to it (agents_runtime), or a pool agent
--   whose pool it is in (agents_pool: same workspace and provider, labels included) — with its free
--   slots (tasks_active_agent).
-- * candidates: per agent, its queued tasks that may run now in claim order (tasks_claim: agent_id,
--   claim_key, seq WHERE queued; ascending claim_key is descending effective priority under aging),
--   skipping tasks whose concurrency key is at its limit (tasks_active_key) and, for a pool agent,
--   retries held for the runtime their session was reported on (while it is online and not
--   draining, for 60 s after they became claimable), at most the agent's free slots and $3, locked
--   with SKIP LOCKED so concurrent claimers never take the same row.
-- * picked: the best candidates, at most $3 and the runtime's free slots, in this order:
--   effective priority (priority + one step per full $4 ms waited) first; then the agents in turn
--   (each agent's first candidate, then each one's second, ...), the agent served least recently
--   first; then claim order. A key gets at most its free slots among them.
--
-- Each picked task opens a new attempt with a fresh fencing token and its dispatch deadline; the
-- agents that got tasks are set `working` and stamped `last_claimed_at`; `agent_was` tells which of
-- them changed, for their agent.status events. The concurrency gate (trigger
-- tasks_concurrency_gate) leaves a row queued if a claim on another runtime took the key's last
-- slot meanwhile; the key locks it needs are taken first, in key order (key_locks).
--
-- The caller holds the runtime's advisory lock, taken by an earlier statement so that this one's
-- snapshot sees every claim committed before it: the slot counts cannot change under it. The agents
-- are updated even when already working so that their row lock orders this claim with a concurrent
-- status recomputation (agents/lock.sql).
WITH runtime AS (
    SELECT r.provider, r.labels,
           CASE WHEN r.status = 'online' AND NOT r.draining
                THEN coalesce(r.max_concurrency, 2147483647)::bigint
                     - (SELECT count(*) FROM tasks t
                        WHERE t.runtime_id = r.id AND t.status IN ('dispatched', 'running'))
                ELSE 0 END AS free
    FROM runtimes r
    WHERE r.id = $1 AND r.workspace_id = $2
),
served AS (
    SELECT a.id, a.last_claimed_at, a.max_concurrent_tasks, false AS pooled
    FROM agents a
    WHERE a.runtime_id = $1 AND a.archived_at IS NULL AND NOT a.paused
    UNION ALL
    SELECT a.id, a.last_claimed_at, a.max_concurrent_tasks, true
    FROM agents a, runtime rt
    WHERE a.workspace_id = $2 AND a.runtime_selector IS NOT NULL AND a.archived_at IS NULL
      AND runtime_in_pool(a.runtime_selector, rt.provider, rt.labels) AND NOT a.paused
),
room AS (
    SELECT s.id AS agent_id, s.last_claimed_at, s.pooled,
           s.max_concurrent_tasks - (SELECT count(*) FROM tasks t
                                     WHERE t.agent_id = s.id
                                       AND t.status IN ('dispatched', 'running')) AS free
    FROM served s
    WHERE EXISTS (SELECT 1 FROM runtime WHERE free > 0)
),
candidates AS (
    SELECT room.agent_id, room.last_claimed_at, c.id, c.seq, c.claim_key, c.concurrency_key,
           c.concurrency_limit, c.key_active,
           c.priority + floor(extract(epoch FROM now() - c.enqueued_at) * 1000 / $4::bigint)::bigint AS effective
    FROM room
    CROSS JOIN LATERAL (
        SELECT t.id, t.seq, t.claim_key, t.priority, t.enqueued_at, t.concurrency_key, t.concurrency_limit,
               k.active AS key_active
        FROM tasks t
        LEFT JOIN LATERAL (
            SELECT count(*) AS active FROM tasks a
            WHERE a.workspace_id = t.workspace_id AND a.concurrency_key = t.concurrency_key
              AND a.status IN ('dispatched', 'running')
        ) k ON t.concurrency_key IS NOT NULL
        WHERE t.agent_id = room.agent_id AND t.status = 'queued' AND t.run_after <= now()
          AND (t.concurrency_key IS NULL OR k.active < t.concurrency_limit)
          AND (NOT room.pooled OR t.session IS NULL
               OR (t.session ->> 'runtime_id')::uuid = $1
               OR t.run_after < now() - interval '60 seconds'
               OR NOT EXISTS (SELECT 1 FROM runtimes s
                              WHERE s.id = (t.session ->> 'runtime_id')::uuid
                                AND s.status = 'online' AND NOT s.draining))
        ORDER BY t.claim_key, t.seq
        LIMIT least(greatest(room.free, 0), $3)
        FOR UPDATE OF t SKIP LOCKED
    ) c
),
ordered AS (
    SELECT cd.*,
           row_number() OVER (PARTITION BY cd.agent_id ORDER BY cd.claim_key, cd.seq) AS turn,
           row_number() OVER (PARTITION BY cd.concurrency_key
                              ORDER BY cd.effective DESC, cd.claim_key, cd.seq) AS key_turn
    FROM candidates cd
),
picked AS (
    SELECT o.id, o.concurrency_key, row_number() OVER (ORDER BY o.effective DESC, o.turn, o.last_claimed_at NULLS FIRST,
                                             o.claim_key, o.seq) AS pick
    FROM ordered o
    WHERE o.concurrency_key IS NULL OR o.key_turn <= o.concurrency_limit - o.key_active
    ORDER BY o.effective DESC, o.turn, o.last_claimed_at NULLS FIRST, o.claim_key, o.seq
    LIMIT least($3, coalesce((SELECT greatest(free, 0) FROM runtime), 0))
),
-- The picked tasks' keys, locked before any row is updated and in one order for every claimer, so
-- that the gate trigger finds them held (its own lock is then a no-op) and two claims sharing keys
-- wait for each other instead of deadlocking.
key_locks AS (
    SELECT pg_advisory_xact_lock(7001, hashtext($2::text || '/' || k.concurrency_key))
    FROM (SELECT DISTINCT concurrency_key FROM picked WHERE concurrency_key IS NOT NULL
          ORDER BY concurrency_key) k
),
dispatched AS (
    UPDATE tasks t
    SET status = 'dispatched',
        runtime_id = $1,
        attempt = t.attempt + 1,
        attempt_id = gen_random_uuid(),
        dispatched_at = now(),
        started_at = NULL,
        progress = NULL,
        cancel_pending = false,
        usage = NULL,
        unlisted_since = NULL,
        deadline = CASE WHEN t.dispatch_timeout_ms > 0 THEN now() + t.dispatch_timeout_ms * interval '1 ms' END
    FROM picked
    WHERE t.id = picked.id AND (SELECT count(*) FROM key_locks) >= 0
    RETURNING t.id, t.workspace_id, t.agent_id, t.runtime_id, t.attempt_id, t.attempt, t.priority,
              t.payload, t.enqueued_at, t.seq, t.session, picked.pick
),
working AS (
    UPDATE agents a
    SET status = 'working',
        updated_at = CASE WHEN o.was <> 'working' THEN now() ELSE a.updated_at END,
        last_claimed_at = now()
    FROM (SELECT id, status AS was FROM agents
          WHERE id IN (SELECT agent_id FROM dispatched)
          ORDER BY id
          FOR NO KEY UPDATE) o
    WHERE a.id = o.id
    RETURNING a.id, a.definition_version, o.was
)
SELECT d.id AS "id!: TaskId", d.workspace_id AS "workspace_id!: WorkspaceId",
       d.agent_id AS "agent_id!: AgentId", d.runtime_id AS "runtime_id!: RuntimeId",
       d.attempt_id AS "attempt_id!: AttemptId", d.attempt AS "attempt!", d.priority AS "priority!",
       d.payload AS "payload!", d.enqueued_at AS "enqueued_at!", d.seq AS "seq!",
       w.definition_version AS "definition_version!", w.was AS "agent_was!: AgentStatus",
       d.session AS "session: Json<StoredSession>", d.pick AS "pick!"
FROM dispatched d
JOIN working w ON w.id = d.agent_id
