-- Serialises the claims of one runtime (a transaction lock on the runtime), then those of every
-- pool agent the runtime serves (a lock per agent, in id order; agents_pool), so that the claim's
-- next statement sees every claim committed before it: the slot counts cannot change under it.
-- Bound agents need no lock of their own: only their runtime claims for them.
--
-- It also turns bitmap scans off for the rest of the claim's transaction (`set_config(…, true)` is
-- SET LOCAL). The claim counts a runtime's and its agents' active tasks through the partial indexes
-- tasks_active_runtime and tasks_active_agent, whose entries of finished tasks stay until a vacuum.
-- A bitmap scan visits the heap for every such entry on every claim and never marks one dead: in a
-- drain without a vacuum between, 7,100 entries and 1,600 buffers (4.8 ms) to count 0 tasks, half
-- the claim, growing with history. An index scan marks each entry of a dead row as it passes it
-- (kill_prior_tuple), so a claim visits only the tasks that finished since the claim before.
-- The claim's plan (generic: begin_hot forces generic plans) is made under this setting, as is
-- any replan after an ANALYZE, since the claim runs only after this statement. A plan is not made
-- again when the setting changes: other statements first planned in a claim's transaction on a
-- connection (take_cancels, the events' insert) keep that plan elsewhere; they are key lookups,
-- which no bitmap scan serves better.
SELECT pg_advisory_xact_lock($1) AS "runtime!",
       (SELECT count(*) FROM (
            SELECT pg_advisory_xact_lock(7002, hashtext(a.id::text))
            FROM runtimes r
            JOIN agents a ON a.workspace_id = r.workspace_id AND a.runtime_selector IS NOT NULL
                         AND a.archived_at IS NULL
                         AND runtime_in_pool(a.runtime_selector, r.provider, r.labels)
            WHERE r.id = $2
            ORDER BY a.id
        ) l) AS "pool_agents!",
       set_config('enable_bitmapscan', 'off', true) AS "plans!"
