-- Seed for docs/sweeps.md: 2M finished tasks, 1M old events, 2,000 runtimes and agents, 600 active tasks.
-- Run against a migrated, disposable database: it TRUNCATEs every Paddock table first.
\timing on
TRUNCATE events, task_attempts, tasks, agents, runtimes, tokens, workspaces CASCADE;
INSERT INTO workspaces (id, name, slug) VALUES ('00000000-0000-0000-0000-000000000001', 'bench', 'bench');
INSERT INTO runtimes (id, workspace_id, daemon_id, provider, name, status, last_seen_at, offline_at)
SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(g), 12, '0'))::uuid, '00000000-0000-0000-0000-000000000001',
       'd' || g, 'claude-code', 'rt' || g,
       CASE WHEN g % 4 = 0 THEN 'offline' ELSE 'online' END,
       now() - (g % 300) * interval '1 second',
       CASE WHEN g % 4 = 0 THEN now() - interval '1 day' END
FROM generate_series(1, 2000) g;
INSERT INTO agents (id, workspace_id, runtime_id, name, definition)
SELECT ('00000000-0000-0000-0002-' || lpad(to_hex(g), 12, '0'))::uuid, '00000000-0000-0000-0000-000000000001',
       ('00000000-0000-0000-0001-' || lpad(to_hex(g), 12, '0'))::uuid, 'agent' || g, '{}'
FROM generate_series(1, 2000) g;
-- 2M terminal tasks (history)
INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, status, payload, attempt, attempt_id, enqueued_at, dispatched_at, started_at, finished_at, failure_reason)
SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001',
       ('00000000-0000-0000-0002-' || lpad(to_hex(1 + g % 2000), 12, '0'))::uuid,
       ('00000000-0000-0000-0001-' || lpad(to_hex(1 + g % 2000), 12, '0'))::uuid,
       CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, '{}', 1, gen_random_uuid(),
       now() - interval '3 days' + g * interval '100 ms', now() - interval '3 days' + g * interval '100 ms',
       now() - interval '3 days' + g * interval '100 ms', now() - interval '3 days' + g * interval '100 ms',
       CASE WHEN g % 10 = 0 THEN 'agent_error' END
FROM generate_series(1, 2000000) g;
-- a fixed active set
INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, status, payload, attempt, attempt_id, enqueued_at, dispatched_at, started_at)
SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001',
       ('00000000-0000-0000-0002-' || lpad(to_hex(1 + g % 2000), 12, '0'))::uuid,
       ('00000000-0000-0000-0001-' || lpad(to_hex(1 + g % 2000), 12, '0'))::uuid,
       (ARRAY['queued','dispatched','running'])[1 + g % 3], '{}',
       CASE WHEN g % 3 = 0 THEN 0 ELSE 1 END, CASE WHEN g % 3 = 0 THEN NULL ELSE gen_random_uuid() END,
       now() - g * interval '1 second', CASE WHEN g % 3 <> 0 THEN now() - g * interval '1 second' END,
       CASE WHEN g % 3 = 2 THEN now() - g * interval '1 second' END
FROM generate_series(1, 600) g;
INSERT INTO events (workspace_id, type, subject_id, payload, occurred_at)
SELECT '00000000-0000-0000-0000-000000000001', 'task.completed', gen_random_uuid(), '{}', now() - interval '2 days' + g * interval '50 ms'
FROM generate_series(1, 1000000) g;
VACUUM ANALYZE;
