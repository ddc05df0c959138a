-- The agents bound to some runtimes (agents_runtime).
SELECT id AS "id: AgentId" FROM agents WHERE runtime_id = ANY($1)
