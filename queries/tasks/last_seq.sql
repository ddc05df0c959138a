-- The newest task's seq in the workspace (tasks_list), 0 without tasks.
SELECT coalesce(max(seq), 0) AS "seq!" FROM tasks WHERE workspace_id = $1
