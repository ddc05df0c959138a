-- The runtime a claim is for: its status and how many more tasks it may hold
-- (tasks_active_runtime counts dispatched + running rows only).
SELECT status,
       coalesce(max_concurrency, 2147483647)::bigint
         - (SELECT count(*) FROM tasks t
            WHERE t.runtime_id = r.id AND t.status IN ('dispatched', 'running')) AS "free!"
FROM runtimes r
WHERE id = $1 AND workspace_id = $2
