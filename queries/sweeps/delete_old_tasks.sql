-- Task retention (sweep 6): at most $2 terminal tasks finished more than $1 seconds ago, oldest
-- first (tasks_finished_at: a range scan that stops after $2 rows, so the cost follows the rows
-- deleted, not the history kept), deleted by primary key with their finished attempts (foreign key
-- cascade) and their transcripts (trigger task_messages_of_deleted_task).
DELETE FROM tasks
WHERE id = ANY (ARRAY(
    SELECT id FROM tasks
    WHERE finished_at < now() - make_interval(secs => $1)
      AND status IN ('completed', 'failed', 'cancelled')
    ORDER BY finished_at
    LIMIT $2
))
