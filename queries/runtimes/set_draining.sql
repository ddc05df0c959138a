-- Drains (true) or undrains (false) a runtime; `changed` says whether it was the other way before
-- (only then is an event written). The row lock orders this with the runtime's claims' reads.
WITH old AS (
    SELECT id, draining FROM runtimes WHERE id = $1 AND workspace_id = $2 FOR NO KEY UPDATE
)
UPDATE runtimes r
SET draining = $3
FROM old
WHERE r.id = old.id
RETURNING r.id AS "id: RuntimeId", r.workspace_id AS "workspace_id: WorkspaceId", r.daemon_id, r.provider, r.name,
          r.version, r.max_concurrency, r.status AS "status: RuntimeStatus", r.draining, r.labels AS "labels: Json<Labels>", r.last_seen_at, r.offline_at,
          r.created_at, old.draining <> $3 AS "changed!"
