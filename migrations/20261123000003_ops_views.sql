-- Schema `ops`: stable views for operators' dashboards (Grafana, Metabase, psql), documented in
-- docs/operators.md, and the role `paddock_readonly`, which may read `ops` and nothing that holds
-- secrets (the views run with their owner's rights; the role gets no grant on the tables themselves).

-- Finished tasks by time, for ops.task_throughput (only rows that have finished).
CREATE INDEX tasks_finished_at ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE SCHEMA ops;

COMMENT ON SCHEMA ops IS 'Paddock operator views: stable, documented in docs/operators.md';

-- One row per runtime: liveness and load.
CREATE VIEW ops.runtime_health AS
SELECT r.workspace_id,
       r.id AS runtime_id,
       r.name,
       r.provider,
       r.daemon_id,
       r.status,
       r.last_seen_at,
       extract(epoch FROM now() - r.last_seen_at)::bigint AS seconds_since_seen,
       r.offline_at,
       r.max_concurrency,
       (SELECT count(*) FROM tasks t
        WHERE t.runtime_id = r.id AND t.status IN ('dispatched', 'running')) AS active_tasks,
       (SELECT count(*) FROM agents a WHERE a.runtime_id = r.id AND a.archived_at IS NULL) AS agents
FROM runtimes r;

-- Open tasks per workspace, agent and status, with the age of the oldest.
CREATE VIEW ops.queue_depth AS
SELECT t.workspace_id,
       t.agent_id,
       a.name AS agent_name,
       t.status,
       count(*) AS tasks,
       extract(epoch FROM now() - min(t.enqueued_at))::bigint AS oldest_age_seconds
FROM tasks t
JOIN agents a ON a.id = t.agent_id
WHERE t.status IN ('queued', 'dispatched', 'running')
GROUP BY t.workspace_id, t.agent_id, a.name, t.status;

-- Tasks finished per minute over the last 24 hours, by outcome (completed, failed, cancelled) and
-- failure reason.
CREATE VIEW ops.task_throughput AS
SELECT date_trunc('minute', t.finished_at) AS minute,
       t.workspace_id,
       t.status AS outcome,
       t.failure_reason,
       count(*) AS tasks
FROM tasks t
WHERE t.finished_at IS NOT NULL AND t.finished_at > now() - interval '24 hours'
GROUP BY 1, 2, 3, 4;

-- Open tasks that look stuck by the default thresholds of DESIGN §5 (the sweepers act on the
-- configured ones): dispatched but not started for 5 minutes, running for 150 minutes, or queued and
-- runnable for 2 hours.
CREATE VIEW ops.stuck_tasks AS
SELECT t.workspace_id,
       t.id AS task_id,
       t.agent_id,
       t.runtime_id,
       t.status,
       t.attempt,
       t.enqueued_at,
       t.dispatched_at,
       t.started_at,
       CASE t.status
           WHEN 'dispatched' THEN now() - t.dispatched_at
           WHEN 'running' THEN now() - t.started_at
           ELSE now() - t.enqueued_at
       END AS stuck_for,
       CASE t.status
           WHEN 'dispatched' THEN 'not started after dispatch'
           WHEN 'running' THEN 'running long'
           ELSE 'waiting in queue'
       END AS reason
FROM tasks t
WHERE (t.status = 'dispatched' AND t.dispatched_at < now() - interval '5 minutes')
   OR (t.status = 'running' AND t.started_at < now() - interval '150 minutes')
   OR (t.status = 'queued' AND t.run_after <= now() AND t.enqueued_at < now() - interval '2 hours');

-- Each sweep of each tick, newest first.
CREATE VIEW ops.sweeper_runs AS
SELECT id, sweep, replica, started_at, duration_ms, rows_changed, error
FROM sweeper_runs
ORDER BY id DESC;

-- The read-only role (cluster-wide: created once, tolerated if it exists or if we may not create roles).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paddock_readonly') THEN
        CREATE ROLE paddock_readonly NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'cannot create role paddock_readonly; create it and grant USAGE on schema ops and SELECT on its views';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paddock_readonly') THEN
        GRANT USAGE ON SCHEMA ops TO paddock_readonly;
        GRANT SELECT ON ALL TABLES IN SCHEMA ops TO paddock_readonly;
    END IF;
END
$$;
