-- Sets (or, with NULL, clears) when a daemon's listing first left an active attempt out; fenced on
-- the attempt (primary key).
UPDATE tasks t
SET unlisted_since = v.since
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS v (id, attempt_id, since)
WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status IN ('dispatched', 'running')
  AND t.unlisted_since IS DISTINCT FROM v.since
