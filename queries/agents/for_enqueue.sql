-- The agents a batch of tasks is enqueued for, with the status of where their tasks would run
-- (admission gate): the runtime of a bound agent; for a pool agent, online when any runtime of its
-- pool is (runtimes_online_provider). FOR KEY SHARE keeps the agents from being archived
-- (agents/archive.sql takes FOR UPDATE) while the tasks are inserted, without waiting on claims and
-- completions (they take FOR NO KEY UPDATE). Locked in id order, so two batches naming the same
-- agents cannot deadlock.
SELECT a.id AS "id: AgentId", a.runtime_id AS "runtime_id: RuntimeId", a.archived_at,
       CASE
           WHEN a.runtime_id IS NOT NULL THEN r.status
           WHEN EXISTS (SELECT 1 FROM runtimes p
                        WHERE p.workspace_id = a.workspace_id AND p.status = 'online'
                          AND runtime_in_pool(a.runtime_selector, p.provider, p.labels)) THEN 'online'
           ELSE 'offline'
       END AS "runtime_status!: RuntimeStatus"
FROM agents a
LEFT JOIN runtimes r ON r.id = a.runtime_id
WHERE a.id = ANY($1) AND a.workspace_id = $2
ORDER BY a.id
FOR KEY SHARE OF a
