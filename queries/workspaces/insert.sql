-- Creates a workspace. The slug is unique (workspaces_slug_key): a duplicate is a 409.
INSERT INTO workspaces (id, name, slug)
VALUES ($1, $2, $3)
RETURNING id AS "id: WorkspaceId", name, slug, created_at
