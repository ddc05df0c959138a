-- How a finished attempt ended (primary key lookup).
SELECT outcome FROM task_attempts WHERE attempt_id = $1
