-- Seed for docs/claims.md, on top of docs/sweeps-seed.sql (2,000,000 finished tasks over 2,000
-- runtimes with an agent each, and 600 active tasks): 100,000 queued tasks more over the same
-- agents, a fifth of them with one of 500 concurrency keys, and the active rows' deadlines (the
-- sweeps seed predates them).
INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, payload, priority, claim_key, concurrency_key)
SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001',
       ('00000000-0000-0000-0002-' || lpad(to_hex(1 + g % 2000), 12, '0'))::uuid,
       ('00000000-0000-0000-0001-' || lpad(to_hex(1 + g % 2000), 12, '0'))::uuid,
       '{}', g % 5, (extract(epoch FROM now()) * 1000)::bigint - (g % 5) * 60000 + g,
       CASE WHEN g % 5 = 0 THEN 'repo-' || (g % 500) END
FROM generate_series(1, 100000) g;
UPDATE tasks SET deadline = CASE status
        WHEN 'queued' THEN enqueued_at + interval '2 hours'
        WHEN 'dispatched' THEN dispatched_at + interval '5 minutes'
        WHEN 'running' THEN started_at + interval '150 minutes' END
WHERE status IN ('queued', 'dispatched', 'running');
VACUUM ANALYZE tasks;
