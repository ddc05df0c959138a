-- The cross-replica feed: every workspace's events after a log position, below the commit horizon,
-- in log order (events_pos: xact_id, id). Each replica reads this once per wake-up, not per socket.
SELECT id, workspace_id AS "workspace_id: WorkspaceId", type AS "kind: EventType", subject_id, payload AS "payload: Json<Box<RawValue>>", occurred_at,
       xact_id::text AS "xact_id!"
FROM events
WHERE (xact_id, id) > ($1::text::xid8, $2::bigint)
  AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xact_id, id
LIMIT $3
