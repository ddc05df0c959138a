-- Which of these runtimes of the workspace are online: a heartbeat that the liveness store could not
-- vouch for (the store is down) needs no write for them — the heard map and the flusher keep their
-- last_seen_at — so it takes no row lock and its transaction commits without a WAL flush.
-- The rows are found by their key, (workspace_id, id), and judged online after (the MATERIALIZED
-- fence): with `status = 'online'` beside the key, a planner without statistics on runtimes can
-- pick the partial index runtimes_online_provider and scan every online runtime of the workspace.
WITH named AS MATERIALIZED (
    SELECT id, status
    FROM runtimes
    WHERE workspace_id = $1 AND id = ANY($2)
)
SELECT id AS "id: RuntimeId"
FROM named
WHERE status = 'online'
