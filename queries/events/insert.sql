-- Appends events in the caller's transaction; ids follow the input order. xact_id defaults to the
-- writing transaction (pg_current_xact_id()). Only what the caller does not already have comes back.
INSERT INTO events (workspace_id, type, subject_id, payload)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::jsonb[])
RETURNING id, occurred_at
