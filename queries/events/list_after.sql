-- A workspace's events after a position, in log order (xact_id, id), and only below the horizon:
-- rows whose writing transaction precedes the oldest transaction still running. Sequence ids are taken
-- at insert, not at commit, so a reader taking "id > last" could pass a row that commits a moment
-- later; every transaction that can still commit has xact_id >= pg_snapshot_xmin(...), so it sorts
-- after everything delivered here. Uses events_workspace_pos (workspace_id, xact_id, id).
-- $2/$3: the position (xact_id as text, id) to resume after; $4: also require id > $4 (resume after
-- an id whose row is gone).
SELECT id, workspace_id AS "workspace_id: WorkspaceId", type AS "kind: EventType", subject_id, payload AS "payload: Json<Box<RawValue>>", occurred_at,
       xact_id::text AS "xact_id!"
FROM events
WHERE workspace_id = $1
  AND (xact_id, id) > ($2::text::xid8, $3::bigint)
  AND id > $4
  AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xact_id, id
LIMIT $5
