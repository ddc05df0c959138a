-- The agents a batch of tasks is enqueued for, with their runtime's status (admission gate); as
-- for_enqueue.sql, FOR KEY SHARE keeps them from being archived while the tasks are inserted. Locked in
-- id order, so two batches naming the same agents cannot deadlock.
SELECT a.id AS "id: AgentId", a.runtime_id AS "runtime_id: RuntimeId", a.archived_at,
       r.status AS "runtime_status: RuntimeStatus"
FROM agents a
JOIN runtimes r ON r.id = a.runtime_id
WHERE a.id = ANY($1) AND a.workspace_id = $2
ORDER BY a.id
FOR KEY SHARE OF a
