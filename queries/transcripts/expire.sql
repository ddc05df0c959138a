-- Transcript retention: the oldest attempt transcripts whose first message is older than the
-- retention, at most $2 of them (task_transcripts_first_at), deleted whole with their messages
-- (task_messages primary key, by (task, attempt) prefix). Returns the messages deleted.
WITH old AS (
    DELETE FROM task_transcripts
    WHERE (task_id, attempt) IN (
        SELECT task_id, attempt FROM task_transcripts
        WHERE first_at < now() - make_interval(secs => $1)
        ORDER BY first_at
        LIMIT $2
    )
    RETURNING task_id, attempt
),
gone AS (
    DELETE FROM task_messages m
    USING old
    WHERE m.task_id = old.task_id AND m.attempt = old.attempt
    RETURNING 1
)
SELECT count(*) AS "deleted!" FROM gone
