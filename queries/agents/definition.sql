-- The definition a daemon fetches (primary key lookup).
SELECT definition_version, definition
FROM agents
WHERE id = $1 AND workspace_id = $2
