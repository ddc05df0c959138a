-- A claim's first look, in one statement outside any transaction: the runtime's status, and
-- whether the claim could find anything — a cancellation waiting for its daemon, or a queued task
-- of one of its agents (bound to it, or pool agents whose pool it is in) that may run now. When it
-- finds neither, the claim answers at once without its transaction, locks and statements: an idle
-- daemon's long polls cost one statement each. The look is conservative: a task it sees may still
-- be held back (its agent or key at capacity, a retry held for another runtime), and the claim
-- then finds it so. A task that becomes claimable after the look wakes the long poll, whose
-- notification is enabled before it looks. The runtime is found by its key, and judged online
-- and not draining in the select list (see claim.sql).
SELECT r.status AS "status: RuntimeStatus",
       EXISTS (SELECT 1 FROM tasks c WHERE c.runtime_id = r.id AND c.cancel_pending) AS "cancels!",
       (r.status = 'online' AND NOT r.draining AND EXISTS (
            SELECT 1
            FROM (
                SELECT a.id FROM agents a
                WHERE a.runtime_id = r.id AND a.archived_at IS NULL AND NOT a.paused
                UNION ALL
                SELECT a.id FROM agents a
                WHERE a.workspace_id = r.workspace_id AND a.runtime_selector IS NOT NULL
                  AND a.archived_at IS NULL AND NOT a.paused
                  AND runtime_in_pool(a.runtime_selector, r.provider, r.labels)
            ) served
            WHERE EXISTS (SELECT 1 FROM tasks t
                          WHERE t.agent_id = served.id AND t.status = 'queued'
                            AND t.run_after <= now())
        )) AS "work!"
FROM runtimes r
WHERE r.id = $1 AND r.workspace_id = $2
