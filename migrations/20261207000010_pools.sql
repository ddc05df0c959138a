-- Pools (DESIGN §12): an agent bound to one runtime (runtime_id) or to a pool (runtime_selector:
-- {"provider": p, "labels": {k: v}}): any online runtime of the workspace with that provider whose
-- labels include these. Runtimes register with labels. A pool agent's queued tasks have no runtime
-- (runtime_id NULL) until a claim dispatches them; a retry goes back to NULL.
ALTER TABLE runtimes
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object');
ALTER TABLE agents
    ALTER COLUMN runtime_id DROP NOT NULL,
    ADD COLUMN runtime_selector jsonb
        CHECK (jsonb_typeof(runtime_selector -> 'labels') = 'object' AND runtime_selector ? 'provider'),
    ADD CONSTRAINT agents_bound_or_pooled CHECK ((runtime_id IS NULL) <> (runtime_selector IS NULL));
-- The live pool agents a runtime's claim serves: by workspace and provider.
CREATE INDEX agents_pool ON agents (workspace_id, (runtime_selector ->> 'provider'))
    WHERE runtime_selector IS NOT NULL AND archived_at IS NULL;
-- A pool's online runtimes (the admission gate, blocked), by workspace and provider.
CREATE INDEX runtimes_online_provider ON runtimes (workspace_id, provider) WHERE status = 'online';
ALTER TABLE tasks ALTER COLUMN runtime_id DROP NOT NULL;
