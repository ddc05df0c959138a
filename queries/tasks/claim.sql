-- The claim: for each live agent of the runtime, its queued tasks that may run now (tasks_claim:
-- agent_id, priority DESC, seq WHERE status = 'queued'), at most as many as the agent has free slots
-- (tasks_active_agent), locked with SKIP LOCKED so concurrent claimers never take the same row; then
-- the best $2 of those by priority and FIFO. The caller holds the runtime's advisory lock, so the
-- slot counts cannot change under it. Each picked task opens a new attempt with a fresh fencing token.
WITH room AS (
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
    LIMIT $2
)
UPDATE tasks t
SET status = 'dispatched',
    attempt = t.attempt + 1,
    attempt_id = gen_random_uuid(),
    dispatched_at = now(),
    started_at = NULL,
    progress = NULL,
    cancel_pending = false
FROM picked
WHERE t.id = picked.id
RETURNING t.id AS "id: TaskId", t.workspace_id AS "workspace_id: WorkspaceId",
          t.agent_id AS "agent_id: AgentId", t.runtime_id AS "runtime_id: RuntimeId",
          t.attempt_id AS "attempt_id!: AttemptId", t.attempt, t.priority, t.payload, t.enqueued_at, t.seq,
          (SELECT a.definition_version FROM agents a WHERE a.id = t.agent_id) AS "definition_version!"
