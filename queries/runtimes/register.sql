-- Creates the runtime of one daemon for one provider, unless it exists: (workspace_id, daemon_id,
-- provider) is unique (runtimes_workspace_id_daemon_id_provider_key). A concurrent registration that
-- inserted first makes this one wait for its commit and then insert nothing, so exactly one caller
-- gets a row back (and writes `runtime.registered`); the others re-register (reregister.sql).
INSERT INTO runtimes (id, workspace_id, daemon_id, provider, name, version, max_concurrency, labels)
VALUES ($1, $2, $3, $4, coalesce($5, $4 || '@' || $3), $6, $7, $8)
ON CONFLICT (workspace_id, daemon_id, provider) DO NOTHING
RETURNING id AS "id!: RuntimeId", status AS "status!: RuntimeStatus"
