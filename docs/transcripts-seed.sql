-- Seed for the transcript and attempt-liveness sections of docs/sweeps.md, on top of
-- docs/sweeps-seed.sql: 20,000 attempt transcripts of 250 messages (5M messages, ~1 GB), their first
-- messages spread over the last 14 days (so half are past the 7-day retention), and revocations.
\timing on
TRUNCATE task_messages, task_transcripts, revoked_attempts;
CREATE TEMP TABLE seed_tasks AS
SELECT id, row_number() OVER () AS n FROM (SELECT id FROM tasks WHERE status = 'completed' LIMIT 20000) t;
INSERT INTO task_transcripts (task_id, attempt, bytes, first_at)
SELECT id, 1, 250 * 200, now() - (n % 14) * interval '1 day' - (n % 86400) * interval '1 second'
FROM seed_tasks;
INSERT INTO task_messages (task_id, attempt, seq, kind, content, at)
SELECT s.id, 1, g, CASE WHEN g % 5 = 0 THEN 'tool_use' ELSE 'text' END, repeat('m', 200),
       now() - (s.n % 14) * interval '1 day'
FROM seed_tasks s, generate_series(0, 249) g;
INSERT INTO revoked_attempts (attempt_id, task_id, workspace_id, runtime_id, revoked_at)
SELECT gen_random_uuid(), id, '00000000-0000-0000-0000-000000000001',
       '00000000-0000-0000-0001-000000000001', now() - (n % 48) * interval '1 hour'
FROM seed_tasks;
VACUUM ANALYZE task_messages;
VACUUM ANALYZE task_transcripts;
VACUUM ANALYZE revoked_attempts;
