-- Stores a daemon's batch of transcript messages in one statement (no transaction around it):
-- * fenced on the attempt: the task's current one, in any state but cancelled (tasks primary key);
-- * idempotent on (task, attempt, seq): a seq stored before is not stored again, whatever its
--   content (ON CONFLICT on the task_messages primary key);
-- * capped at $8 bytes of content per attempt (task_transcripts, upserted in the same statement):
--   messages are taken in seq order, and the first that would pass the cap, and every one after
--   it, is dropped and the attempt marked truncated. Two posts for one attempt at the same moment
--   may both read the size before the other adds to it: the cap can be passed by one body.
-- Answers whether the attempt was current, how many rows were stored, how many fit (stored now or
-- before), the highest seq that fits, and whether the transcript is truncated.
WITH task AS (
    SELECT t.id, t.attempt
    FROM tasks t
    WHERE t.id = $1 AND t.workspace_id = $2 AND t.attempt_id = $3 AND t.status <> 'cancelled'
),
size AS (
    SELECT coalesce(tt.bytes, 0) AS bytes, coalesce(tt.truncated, false) AS truncated
    FROM task
    LEFT JOIN task_transcripts tt ON tt.task_id = task.id AND tt.attempt = task.attempt
),
batch AS (
    SELECT m.seq, m.kind, m.content, m.data,
           sum(octet_length(m.content)) OVER (ORDER BY m.seq ROWS UNBOUNDED PRECEDING) AS upto
    FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[]) AS m (seq, kind, content, data)
),
fits AS (
    SELECT b.seq, b.kind, b.content, b.data
    FROM batch b, size
    WHERE NOT size.truncated AND size.bytes + b.upto <= $8
),
stored AS (
    INSERT INTO task_messages (task_id, attempt, seq, kind, content, data)
    SELECT task.id, task.attempt, f.seq, f.kind, f.content, f.data::json
    FROM task, fits f
    ON CONFLICT (task_id, attempt, seq) DO NOTHING
    RETURNING seq, octet_length(content) AS bytes
),
counted AS (
    INSERT INTO task_transcripts AS tt (task_id, attempt, bytes, truncated)
    SELECT task.id, task.attempt, coalesce((SELECT sum(s.bytes) FROM stored s), 0),
           (SELECT count(*) FROM fits) < (SELECT count(*) FROM batch)
    FROM task
    ON CONFLICT (task_id, attempt) DO UPDATE
    SET bytes = tt.bytes + excluded.bytes, truncated = tt.truncated OR excluded.truncated
    RETURNING tt.truncated
)
SELECT EXISTS (SELECT 1 FROM task) AS "current!",
       (SELECT count(*) FROM stored) AS "accepted!",
       (SELECT count(*) FROM fits) AS "fitting!",
       (SELECT max(f.seq) FROM fits f) AS last_seq,
       coalesce((SELECT c.truncated FROM counted c), false) AS "truncated!"
