-- Primary key lookup.
SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1) AS "exists!"
