-- Records attempts the server ended while their daemons may still run them (primary key).
INSERT INTO revoked_attempts (attempt_id, task_id, workspace_id, runtime_id)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[])
ON CONFLICT (attempt_id) DO NOTHING
