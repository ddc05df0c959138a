-- The log position (writing transaction) of an event of this workspace, to resume after it.
SELECT xact_id::text AS "xact_id!" FROM events WHERE id = $1 AND workspace_id = $2
