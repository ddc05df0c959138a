-- The claim, in one statement: the runtime's free slots (tasks_active_runtime; none unless it is
-- online and in the workspace), then for each live agent of the runtime its queued tasks that may
-- run now (tasks_claim: agent_id, priority DESC, seq WHERE status = 'queued'), at most as many as the
-- agent has free slots (tasks_active_agent), locked with SKIP LOCKED so concurrent claimers never take
-- the same row; the best of those by priority and FIFO, at most $3 and the runtime's free slots. Each
-- picked task opens a new attempt with a fresh fencing token, and the agents that got tasks are set
-- `working`; `agent_was` tells which of them changed, for their agent.status events.
--
-- The caller holds the runtime's advisory lock, taken by an earlier statement so that this one's
-- snapshot sees every claim committed before it: the slot counts cannot change under it. The agents
-- are updated even when already working so that their row lock orders this claim with a concurrent
-- status recomputation (agents/lock.sql).
WITH runtime AS (
    SELECT coalesce(r.max_concurrency, 2147483647)::bigint
             - (SELECT count(*) FROM tasks t
                WHERE t.runtime_id = r.id AND t.status IN ('dispatched', 'running')) AS free
    FROM runtimes r
    WHERE r.id = $1 AND r.workspace_id = $2 AND r.status = 'online'
),
room AS (
    SELECT a.id AS agent_id,
           a.max_concurrent_tasks - (SELECT count(*) FROM tasks t
                                     WHERE t.agent_id = a.id
                                       AND t.status IN ('dispatched', 'running')) AS free
    FROM agents a
    WHERE a.runtime_id = $1 AND a.archived_at IS NULL
),
picked AS (
    SELECT c.id, c.priority, c.seq
    FROM room
    CROSS JOIN LATERAL (
        SELECT t.id, t.priority, t.seq
        FROM tasks t
        WHERE t.agent_id = room.agent_id AND t.status = 'queued' AND t.run_after <= now()
        ORDER BY t.priority DESC, t.seq
        LIMIT greatest(room.free, 0)
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.seq
    LIMIT least($3, coalesce((SELECT greatest(free, 0) FROM runtime), 0))
),
dispatched AS (
    UPDATE tasks t
    SET status = 'dispatched',
        attempt = t.attempt + 1,
        attempt_id = gen_random_uuid(),
        dispatched_at = now(),
        started_at = NULL,
        progress = NULL,
        cancel_pending = false,
        usage = NULL,
        unlisted_since = NULL
    FROM picked
    WHERE t.id = picked.id
    RETURNING t.id, t.workspace_id, t.agent_id, t.runtime_id, t.attempt_id, t.attempt, t.priority,
              t.payload, t.enqueued_at, t.seq, t.session
),
working AS (
    UPDATE agents a
    SET status = 'working', updated_at = CASE WHEN o.was <> 'working' THEN now() ELSE a.updated_at END
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
       d.session AS "session: Json<StoredSession>"
FROM dispatched d
JOIN working w ON w.id = d.agent_id
