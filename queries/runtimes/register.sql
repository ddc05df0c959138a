-- Registers (or re-registers) the runtime of one daemon for one provider: idempotent on
-- (workspace_id, daemon_id, provider) via runtimes_workspace_id_daemon_id_provider_key.
-- Re-registering an offline runtime brings it online; `was_status` (read from the statement's snapshot,
-- before the upsert — no FOR UPDATE here, which would see the row the upsert itself just changed and
-- find nothing) tells the caller which events to write.
WITH old AS (
    SELECT id, status FROM runtimes
    WHERE workspace_id = $2 AND daemon_id = $3 AND provider = $4
)
INSERT INTO runtimes AS r (id, workspace_id, daemon_id, provider, name, version, max_concurrency)
VALUES ($1, $2, $3, $4, coalesce($5, $4 || '@' || $3), $6, $7)
ON CONFLICT (workspace_id, daemon_id, provider) DO UPDATE
SET name = coalesce($5, r.name),
    version = coalesce($6, r.version),
    max_concurrency = coalesce($7, r.max_concurrency),
    status = 'online',
    offline_at = NULL,
    last_seen_at = now()
RETURNING r.id AS "id!: RuntimeId", r.status AS "status!: RuntimeStatus",
          (SELECT old.status FROM old) AS "was_status?: RuntimeStatus"
