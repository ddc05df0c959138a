-- A page of a task's transcript in (attempt, seq) order, after ($3, $4), optionally of one attempt
-- (task_messages primary key: a range of one task).
SELECT attempt, seq, kind AS "kind: MessageKind", content, data AS "data: Json<serde_json::Value>", at
FROM task_messages
WHERE task_id = $1
  AND ($2::integer IS NULL OR attempt = $2)
  AND (attempt, seq) > ($3::integer, $4::bigint)
ORDER BY attempt, seq
LIMIT $5
