-- Why each queued task among $1 waits (DESIGN §12): the first that applies, in the order of
-- paddock_api::BlockedReason, from the predicates the claim (claim.sql) applies, in the same order:
-- run_after; the agent paused; where it could run — its agent's runtime, or the runtimes of its
-- pool (runtimes_online_provider) — all offline, all draining; the agent's free slots; the key's;
-- no runtime that could run it with a free slot; otherwise the task is claimable and `position`
-- is its place in its agent's queue (1 + the agent's queued tasks ahead of it in claim order,
-- tasks_claim; counted up to 10000).
SELECT t.id AS "id!: TaskId",
       CASE
           WHEN t.run_after > now() THEN 'run_after'
           WHEN a.paused THEN 'agent_paused'
           WHEN w.online = 0 THEN 'runtime_offline'
           WHEN w.serving = 0 THEN 'runtime_draining'
           WHEN ag.active >= a.max_concurrent_tasks THEN 'agent_at_capacity'
           WHEN t.concurrency_key IS NOT NULL AND k.active >= t.concurrency_limit THEN 'key_at_capacity'
           WHEN w.with_room = 0 THEN 'runtime_at_capacity'
           ELSE 'behind'
       END AS "reason!: BlockedReason",
       ag.active AS "agent_active!", a.max_concurrent_tasks AS "agent_max!",
       k.active AS "key_active?", ahead.n + 1 AS "position!"
FROM tasks t
JOIN agents a ON a.id = t.agent_id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE p.status = 'online') AS online,
           count(*) FILTER (WHERE p.status = 'online' AND NOT p.draining) AS serving,
           count(*) FILTER (WHERE p.status = 'online' AND NOT p.draining
                              AND (p.max_concurrency IS NULL
                                   OR (SELECT count(*) FROM tasks x
                                       WHERE x.runtime_id = p.id
                                         AND x.status IN ('dispatched', 'running')) < p.max_concurrency)) AS with_room
    FROM (
        SELECT p.* FROM runtimes p WHERE p.id = a.runtime_id
        UNION ALL
        SELECT p.* FROM runtimes p
        WHERE a.runtime_id IS NULL AND p.workspace_id = a.workspace_id AND p.status = 'online'
          AND runtime_in_pool(a.runtime_selector, p.provider, p.labels)
    ) p
) w
CROSS JOIN LATERAL (
    SELECT count(*) AS active FROM tasks x
    WHERE x.agent_id = a.id AND x.status IN ('dispatched', 'running')
) ag
LEFT JOIN LATERAL (
    SELECT count(*) AS active FROM tasks x
    WHERE x.workspace_id = t.workspace_id AND x.concurrency_key = t.concurrency_key
      AND x.status IN ('dispatched', 'running')
) k ON t.concurrency_key IS NOT NULL
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM tasks x
        WHERE x.agent_id = t.agent_id AND x.status = 'queued'
          AND (x.claim_key, x.seq) < (t.claim_key, t.seq)
        LIMIT 10000
    ) y
) ahead
WHERE t.id = ANY($1) AND t.workspace_id = $2 AND t.status = 'queued'
