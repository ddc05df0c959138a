-- The current commit horizon: every transaction that can still write events has xact_id >= this.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS "xmin!"
