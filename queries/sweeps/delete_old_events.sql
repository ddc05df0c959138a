-- Event retention: at most $2 events older than $1 seconds, oldest first (events_occurred_at: a range
-- scan that stops after $2 rows, so the cost follows the rows deleted, not the log's size), deleted by
-- primary key (ANY(ARRAY(...)) keeps the planner from hashing the whole table).
DELETE FROM events
WHERE id = ANY (ARRAY(
    SELECT id FROM events
    WHERE occurred_at < now() - make_interval(secs => $1)
    ORDER BY occurred_at
    LIMIT $2
))
