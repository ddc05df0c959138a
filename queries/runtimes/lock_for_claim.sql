-- Serialises the claims of one runtime (a transaction lock on the runtime), then those of every
-- pool agent the runtime serves (a lock per agent, in id order; agents_pool), so that the claim's
-- next statement sees every claim committed before it: the slot counts cannot change under it.
-- Bound agents need no lock of their own: only their runtime claims for them.
SELECT pg_advisory_xact_lock($1) AS "runtime!",
       (SELECT count(*) FROM (
            SELECT pg_advisory_xact_lock(7002, hashtext(a.id::text))
            FROM runtimes r
            JOIN agents a ON a.workspace_id = r.workspace_id AND a.runtime_selector IS NOT NULL
                         AND a.archived_at IS NULL
                         AND runtime_in_pool(a.runtime_selector, r.provider, r.labels)
            WHERE r.id = $2
            ORDER BY a.id
        ) l) AS "pool_agents!"
