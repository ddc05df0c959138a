-- The next transaction id: every transaction that has committed so far has a smaller one.
SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS "xmax!"
