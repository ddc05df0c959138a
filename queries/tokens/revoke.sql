-- Revokes a token; $2 restricts it to one workspace (a member revoking its own workspace's token),
-- NULL for the admin. Revoking twice is harmless.
UPDATE tokens
SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1 AND ($2::uuid IS NULL OR workspace_id = $2)
RETURNING id AS "id: TokenId"
