-- The live feed of one replica, in one round trip: the commit horizon of this statement's own
-- snapshot (every transaction below it has committed or aborted, and this snapshot sees the
-- outcome, so a batch that commits late is never passed over), and the messages after a position
-- in commit-horizon order, of transactions below that horizon. The LIMIT applies to an ordered
-- scan of task_messages_feed (xact_id, task_id, attempt, seq) with no other filter, so the plan
-- stays that scan however far behind the reader is; only then are the rows of the tasks this
-- replica watches ($5) given their content, and the reader moves past every row scanned. With no
-- new message the answer is one row with the horizon alone. The rows come in the scan's order (a
-- nested loop over the one horizon row); the reader checks that rather than paying for a sort.
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)
SELECT h.horizon::text AS "horizon!",
       s.task_id AS "task_id?: TaskId", s.attempt AS "attempt?", s.seq AS "seq?",
       s.kind AS "kind?: MessageKind",
       CASE WHEN s.watched THEN s.content ELSE '' END AS "content?",
       CASE WHEN s.watched THEN s.data END AS "data: Json<serde_json::Value>",
       s.at AS "at?", s.xact_id::text AS "xact_id?", s.watched AS "watched?"
FROM h
LEFT JOIN LATERAL (
    SELECT m.task_id, m.attempt, m.seq, m.kind, m.content, m.data, m.at, m.xact_id,
           m.task_id = ANY($5) AS watched
    FROM task_messages m
    WHERE (m.xact_id, m.task_id, m.attempt, m.seq) > ($1::text::xid8, $2::uuid, $3::integer, $4::bigint)
      AND m.xact_id < h.horizon
    ORDER BY m.xact_id, m.task_id, m.attempt, m.seq
    LIMIT $6
) s ON true
