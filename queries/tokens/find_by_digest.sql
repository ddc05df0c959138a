-- Authenticates a request: unique index tokens_digest_key. Revoked tokens never match, so a revocation
-- takes effect on every replica at once (there is no token cache).
SELECT id AS "id: TokenId", workspace_id AS "workspace_id: WorkspaceId", kind AS "kind: TokenKind"
FROM tokens
WHERE digest = $1 AND revoked_at IS NULL
