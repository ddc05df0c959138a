-- Which of these runtimes of the workspace are online: a heartbeat that the liveness store could not
-- vouch for (the store is down) needs no write for them — the heard map and the flusher keep their
-- last_seen_at — so it takes no row lock and its transaction commits without a WAL flush.
SELECT id AS "id: RuntimeId"
FROM runtimes
WHERE workspace_id = $1 AND id = ANY($2) AND status = 'online'
