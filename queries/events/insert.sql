-- Appends events in the caller's transaction; ids follow the input order. xact_id defaults to the
-- writing transaction (pg_current_xact_id()). Payloads come as the JSON text the server serialised
-- and are stored as that text (`json`: validated, not re-encoded). Only what the caller does not
-- already have comes back.
INSERT INTO events (workspace_id, type, subject_id, payload)
SELECT w, t, s, p::json
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) AS u (w, t, s, p)
RETURNING id, occurred_at
