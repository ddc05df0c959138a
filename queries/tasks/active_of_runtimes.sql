-- Dispatched and running tasks of some runtimes (tasks_active_runtime), locked for failing them.
SELECT id AS "id: TaskId" FROM tasks
WHERE runtime_id = ANY($1) AND status IN ('dispatched', 'running')
ORDER BY id
FOR UPDATE
