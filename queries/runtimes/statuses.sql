-- Status of the given runtimes of one workspace (primary key lookups); unknown ids are absent.
SELECT id AS "id: RuntimeId", status
FROM runtimes
WHERE workspace_id = $1 AND id = ANY($2)
