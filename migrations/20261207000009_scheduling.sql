-- Scheduling controls (DESIGN §12): pause and drain, priority aging, concurrency keys, per-task
-- timeouts driven by per-task deadlines.

-- A paused agent's tasks stay queued; a draining runtime gets no new claims. `last_claimed_at`:
-- when a claim last handed the agent a task (fairness: with equal effective priority, the agent
-- served least recently goes first).
ALTER TABLE agents
    ADD COLUMN paused boolean NOT NULL DEFAULT false,
    ADD COLUMN last_claimed_at timestamptz;
ALTER TABLE runtimes
    ADD COLUMN draining boolean NOT NULL DEFAULT false;

-- Per task:
--   claim_key            the claim's order within an agent: enqueued_at in ms minus priority times
--                        the priority_aging the task was enqueued under (aging off: 10^13 ms, so
--                        priority dominates). Ascending claim_key is descending effective priority,
--                        priority + floor(waited / priority_aging), at every instant.
--   concurrency_key/limit at most `limit` dispatched+running tasks with the key in the workspace
--   *_ms                 the task's timeouts (its own, or the settings' when it was enqueued); 0: none
--   deadline             when the task's current status times out (queued: enqueued_at + queued_ttl;
--                        dispatched: dispatched_at + dispatch_timeout; running: started_at +
--                        running_timeout); NULL when terminal or without a timeout. The sweeps
--                        read it through one partial index per status.
ALTER TABLE tasks
    ADD COLUMN claim_key bigint,
    ADD COLUMN concurrency_key text CHECK (length(concurrency_key) BETWEEN 1 AND 200),
    ADD COLUMN concurrency_limit integer NOT NULL DEFAULT 1 CHECK (concurrency_limit BETWEEN 1 AND 10000),
    ADD COLUMN dispatch_timeout_ms bigint NOT NULL DEFAULT 300000 CHECK (dispatch_timeout_ms >= 0),
    ADD COLUMN running_timeout_ms bigint NOT NULL DEFAULT 9000000 CHECK (running_timeout_ms >= 0),
    ADD COLUMN queued_ttl_ms bigint NOT NULL DEFAULT 7200000 CHECK (queued_ttl_ms >= 0),
    ADD COLUMN deadline timestamptz;

-- Rows written before this migration: the shipped defaults (5m, 150m, 2h; aging 60 s).
UPDATE tasks
SET claim_key = (extract(epoch FROM enqueued_at) * 1000)::bigint - priority::bigint * 60000,
    deadline = CASE status
        WHEN 'queued' THEN enqueued_at + interval '2 hours'
        WHEN 'dispatched' THEN dispatched_at + interval '5 minutes'
        WHEN 'running' THEN started_at + interval '150 minutes'
    END;
ALTER TABLE tasks
    ALTER COLUMN claim_key SET DEFAULT ((extract(epoch FROM now()) * 1000)::bigint),
    ALTER COLUMN claim_key SET NOT NULL;

-- The claim reads an agent's queued tasks in claim order.
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (agent_id, claim_key, seq) WHERE status = 'queued';
-- Dispatched+running tasks of a key (the claim's and the gate's count).
CREATE INDEX tasks_active_key ON tasks (workspace_id, concurrency_key)
    WHERE status IN ('dispatched', 'running') AND concurrency_key IS NOT NULL;
-- The timeout sweeps, by deadline.
DROP INDEX tasks_dispatched_at;
DROP INDEX tasks_started_at;
DROP INDEX tasks_queued_enqueued;
CREATE INDEX tasks_queued_deadline ON tasks (deadline) WHERE status = 'queued' AND deadline IS NOT NULL;
CREATE INDEX tasks_dispatched_deadline ON tasks (deadline) WHERE status = 'dispatched' AND deadline IS NOT NULL;
CREATE INDEX tasks_running_deadline ON tasks (deadline) WHERE status = 'running' AND deadline IS NOT NULL;

-- The concurrency gate: a task with a key becomes dispatched only while fewer than its limit of
-- that key's tasks are dispatched or running. Claims on different runtimes may pick tasks of one
-- key at once; the gate takes a transaction lock per key and counts with a fresh snapshot (a
-- volatile function in READ COMMITTED sees what committed before its statement), so the second
-- claimer waits for the first to commit and then sees its task. A row the gate refuses is left
-- queued (the trigger returns NULL: the claim's UPDATE skips it). The WHEN clause keeps every
-- other update (and every task without a key) free of the call.
CREATE FUNCTION tasks_concurrency_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7001, hashtext(NEW.workspace_id::text || '/' || NEW.concurrency_key));
    IF (SELECT count(*) FROM tasks
        WHERE workspace_id = NEW.workspace_id AND concurrency_key = NEW.concurrency_key
          AND status IN ('dispatched', 'running') AND id <> NEW.id) >= NEW.concurrency_limit THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_concurrency_gate
    BEFORE UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'dispatched' AND OLD.status = 'queued' AND NEW.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION tasks_concurrency_gate();

-- tasks → agents without a per-row foreign key. The key's check ran once per inserted row (an
-- index probe and a key-share lock on the agent each time): about a third of the cost of a batch
-- enqueue's insert. The same two guarantees, once per statement:
--   * an inserted task names an agent of its workspace (the enqueue path has locked the agents
--     FOR KEY SHARE already; the check here locks them too, so no path can skip it);
--   * deleting an agent deletes its tasks (the runtime collector deletes archived agents).
ALTER TABLE tasks DROP CONSTRAINT tasks_workspace_id_agent_id_fkey;
CREATE FUNCTION tasks_check_agents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM 1 FROM agents a
    WHERE a.id IN (SELECT DISTINCT n.agent_id FROM new_tasks n)
    ORDER BY a.id
    FOR KEY SHARE;
    SELECT n.agent_id INTO missing FROM new_tasks n
    WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = n.agent_id AND a.workspace_id = n.workspace_id)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE foreign_key_violation USING MESSAGE = format('tasks: agent %s is not an agent of the task''s workspace', missing);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_check_agents
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_check_agents();
CREATE FUNCTION agents_delete_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks t USING old_agents o WHERE t.agent_id = o.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER agents_delete_tasks
    AFTER DELETE ON agents
    REFERENCING OLD TABLE AS old_agents
    FOR EACH STATEMENT
    EXECUTE FUNCTION agents_delete_tasks();
-- An agent's tasks (the delete above): tasks_list_agent (agent_id, seq DESC) serves it.
