-- The heartbeat flusher: one statement for every runtime heard since the last flush. Touches only
-- last_seen_at (not indexed except by the partial runtimes_online_seen) and never moves it backwards.
UPDATE runtimes r
SET last_seen_at = v.seen
FROM unnest($1::uuid[], $2::timestamptz[]) AS v (id, seen)
WHERE r.id = v.id AND r.last_seen_at < v.seen
