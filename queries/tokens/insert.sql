-- Stores a new token by its SHA-256 digest (tokens_digest_key keeps digests unique).
INSERT INTO tokens (id, workspace_id, kind, name, digest)
VALUES ($1, $2, $3, $4, $5)
RETURNING id AS "id: TokenId", workspace_id AS "workspace_id: WorkspaceId", kind AS "kind: TokenKind", name, created_at
