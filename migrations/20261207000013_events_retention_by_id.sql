-- Event retention reads the log from its old end by id (queries/sweeps/delete_old_events.sql)
-- instead of through a btree on occurred_at. That index cost every event an entry (a quarter of
-- the index writes of each event, and every task writes three) to serve one sweep.
DROP INDEX IF EXISTS events_occurred_at;
