-- The task list's indexes in ascending order. Declared `seq DESC`, every new task's entry went to the
-- left edge of its workspace's (and agent's) range, where a B-tree split leaves both halves half
-- full and the rightmost-leaf fast path never applies; ascending, a new task appends at the right
-- edge. The list reads them backwards for "newest first" (an Index Scan Backward: the same pages,
-- the same keyset `seq < $5`).
DROP INDEX tasks_list;
CREATE INDEX tasks_list ON tasks (workspace_id, seq);
DROP INDEX tasks_list_agent;
CREATE INDEX tasks_list_agent ON tasks (agent_id, seq);

-- The enqueue's agent check reads each (agent, workspace) pair of the statement once, not once per
-- task: a batch of 1000 tasks over 8 agents makes 8 index probes instead of 1000.
CREATE OR REPLACE FUNCTION tasks_check_agents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM 1 FROM agents a
    WHERE a.id IN (SELECT DISTINCT n.agent_id FROM new_tasks n)
    ORDER BY a.id
    FOR KEY SHARE;
    SELECT n.agent_id INTO missing
    FROM (SELECT DISTINCT agent_id, workspace_id FROM new_tasks) n
    WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = n.agent_id AND a.workspace_id = n.workspace_id)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE foreign_key_violation USING MESSAGE = format('tasks: agent %s is not an agent of the task''s workspace', missing);
    END IF;
    RETURN NULL;
END
$$;
