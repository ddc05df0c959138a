-- Transcript retention: the oldest attempt transcripts whose first message is older than the
-- retention ($1 seconds), deleted whole with their messages. Bounded: at most $2 transcripts, and
-- no more than $3 bytes of content beyond the first (task_transcripts_first_at, then the rows by
-- ctid), so that one statement deletes a bounded number of messages (task_messages primary key, by
-- (task, attempt) prefix). Returns the messages deleted.
WITH picked AS (
    SELECT ctid
    FROM (SELECT ctid, bytes, (sum(bytes) OVER (ORDER BY first_at))::bigint AS upto
          FROM (SELECT ctid, bytes, first_at FROM task_transcripts
                WHERE first_at < now() - make_interval(secs => $1)
                ORDER BY first_at
                LIMIT $2) oldest) running
    WHERE upto - bytes < $3::bigint
),
old AS (
    DELETE FROM task_transcripts
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM picked))
    RETURNING task_id, attempt
),
gone AS (
    DELETE FROM task_messages m
    USING old
    WHERE m.task_id = old.task_id AND m.attempt = old.attempt
    RETURNING 1
)
SELECT count(*) AS "deleted!" FROM gone
