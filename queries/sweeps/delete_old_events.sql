-- Event retention: of the $2 oldest events by id, those older than $1 seconds, deleted by primary
-- key (ANY(ARRAY(...)) keeps the planner from hashing the whole table). The head is read through
-- events_pkey from its old end and cut at $2 rows before it is filtered, so a tick reads at most
-- $2 rows however long the log is; and when even the oldest event is not old, nothing past it.
-- Ids follow time closely but not exactly: occurred_at is the writing transaction's start, so an
-- event can be younger than one written after it, by at most that later transaction's length.
-- Such an event at the head holds the sweep back until it is old itself (seconds); in the head,
-- it only keeps its own row. No index on occurred_at: every event would pay its entry.
DELETE FROM events
WHERE id = ANY (ARRAY(
    SELECT head.id
    FROM (SELECT id, occurred_at FROM events ORDER BY id LIMIT $2) AS head
    WHERE head.occurred_at < now() - make_interval(secs => $1)
      AND (SELECT occurred_at FROM events ORDER BY id LIMIT 1) < now() - make_interval(secs => $1)
))
