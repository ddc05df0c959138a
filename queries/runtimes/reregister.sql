-- Re-registers an existing runtime: brings it online and updates what the daemon says of itself
-- (its labels are replaced by the ones sent).
-- The row is locked first, so concurrent re-registrations go one after another and each reads the
-- status the previous one committed (`was_status`): exactly one of them sees it offline and writes
-- `runtime.online`. No row: the runtime was deleted since register.sql saw it (the caller inserts
-- again).
WITH old AS (
    SELECT id, status FROM runtimes
    WHERE workspace_id = $1 AND daemon_id = $2 AND provider = $3
    FOR UPDATE
)
UPDATE runtimes AS r
SET name = coalesce($4, r.name),
    version = coalesce($5, r.version),
    max_concurrency = coalesce($6, r.max_concurrency),
    labels = $7,
    status = 'online',
    offline_at = NULL,
    last_seen_at = now()
FROM old
WHERE r.id = old.id
RETURNING r.id AS "id!: RuntimeId", r.status AS "status!: RuntimeStatus",
          old.status AS "was_status?: RuntimeStatus"
