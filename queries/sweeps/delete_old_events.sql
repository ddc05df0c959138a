-- Event retention: the oldest events first along the primary key (old rows sit at its start, so the
-- scan stops at the first young one), at most $2 per statement.
DELETE FROM events
WHERE id IN (
    SELECT id FROM events
    WHERE occurred_at < now() - make_interval(secs => $1)
    ORDER BY id
    LIMIT $2
)
