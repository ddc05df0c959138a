-- Revocations older than $1 seconds, at most $2 of them, oldest first (revoked_attempts_at).
DELETE FROM revoked_attempts
WHERE attempt_id = ANY (ARRAY(
    SELECT attempt_id FROM revoked_attempts
    WHERE revoked_at < now() - make_interval(secs => $1)
    ORDER BY revoked_at
    LIMIT $2
))
