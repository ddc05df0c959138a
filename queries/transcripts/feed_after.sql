-- The live feed of one replica: new messages of the tasks its sockets watch, in commit-horizon
-- order after a position, of transactions below the horizon $5 (read just before, so each of them
-- has committed or aborted: a batch that commits late is never passed over). Index
-- task_messages_feed (xact_id, task_id, attempt, seq).
SELECT task_id AS "task_id: TaskId", attempt, seq, kind AS "kind: MessageKind", content,
       data AS "data: Json<serde_json::Value>", at, xact_id::text AS "xact_id!"
FROM task_messages
WHERE (xact_id, task_id, attempt, seq) > ($1::text::xid8, $2::uuid, $3::integer, $4::bigint)
  AND xact_id < $5::text::xid8
  AND task_id = ANY($6)
ORDER BY xact_id, task_id, attempt, seq
LIMIT $7
