-- The next batch of a bulk cancel: non-terminal tasks of the workspace with a status in $2 that
-- match every filter given ($3 agent, $4 runtime, $5 concurrency key), enqueued up to seq $6 (so
-- tasks enqueued while the cancel runs are left alone), oldest first, at most $7.
-- Queued tasks through the workspace's agents (tasks_claim; with a runtime, the agents bound to it:
-- a pool's queued tasks are on no runtime yet); active ones through tasks_active_agent, by the
-- runtime they were dispatched to; neither part reads terminal history.
SELECT id AS "id!: TaskId" FROM (
    SELECT t.id, t.seq
    FROM agents a
    JOIN tasks t ON t.agent_id = a.id AND t.status = 'queued'
    WHERE 'queued' = ANY($2::text[]) AND a.workspace_id = $1
      AND ($3::uuid IS NULL OR a.id = $3) AND ($4::uuid IS NULL OR a.runtime_id = $4)
      AND ($5::text IS NULL OR t.concurrency_key = $5) AND t.seq <= $6
    UNION ALL
    SELECT t.id, t.seq
    FROM agents a
    JOIN tasks t ON t.agent_id = a.id AND t.status IN ('dispatched', 'running')
    WHERE t.status = ANY($2::text[]) AND a.workspace_id = $1
      AND ($3::uuid IS NULL OR a.id = $3) AND ($4::uuid IS NULL OR t.runtime_id = $4)
      AND ($5::text IS NULL OR t.concurrency_key = $5) AND t.seq <= $6
) x
ORDER BY seq
LIMIT $7
