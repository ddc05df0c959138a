-- Transcripts, usage, sessions and attempt liveness (DESIGN §9, §10).

-- A task's current (latest) attempt keeps its cumulative usage and its liveness bookkeeping on the
-- task row, as it keeps its other fields; an attempt that sends the task back to the queue takes
-- its usage to task_attempts, and `usage_prior` sums those, so a task's total is one addition.
--   usage          the latest attempt's cumulative usage, as its daemon last reported it
--   usage_prior    the sum of the earlier attempts' usage
--   session        the latest session any attempt reported: {id, work_dir, runtime_id}
--   unlisted_since when a heartbeat of an opted-in daemon first left this active attempt out
ALTER TABLE tasks
    ADD COLUMN usage jsonb,
    ADD COLUMN usage_prior jsonb,
    ADD COLUMN session jsonb,
    ADD COLUMN unlisted_since timestamptz;

ALTER TABLE task_attempts
    ADD COLUMN usage jsonb,
    ADD COLUMN session jsonb;

-- The new failure reason. NOT VALID then VALIDATE: the check is added without blocking writes.
ALTER TABLE tasks DROP CONSTRAINT tasks_failure_reason_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_failure_reason_check
    CHECK (failure_reason IN ('agent_error', 'runtime_offline', 'dispatch_timeout', 'running_timeout',
                              'queued_expired', 'cancelled', 'attempt_lost')) NOT VALID;
ALTER TABLE tasks VALIDATE CONSTRAINT tasks_failure_reason_check;

-- Transcript messages, keyed by (task, attempt, seq): a seq posted twice is stored once. No foreign
-- key to tasks: its check would take a key-share lock on the task row for every message (a
-- multixact per batch while reports update the row); a trigger deletes a task's transcript with
-- it instead (below), whichever statement deletes the task. `data` is json: stored and read back as the text sent.
-- `xact_id` orders the live feed as the event log's does: a reader delivers only rows of
-- transactions below the commit horizon, so a batch that commits late is not passed over.
CREATE TABLE task_messages (
    task_id  uuid NOT NULL,
    attempt  integer NOT NULL CHECK (attempt >= 1),
    seq      bigint NOT NULL CHECK (seq >= 0),
    kind     text NOT NULL CHECK (kind IN ('text', 'thinking', 'tool_use', 'tool_result', 'stdout',
                                           'stderr', 'error', 'system')),
    content  text NOT NULL,
    data     json,
    at       timestamptz NOT NULL DEFAULT now(),
    xact_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (task_id, attempt, seq)
);
-- The live feed: new rows in commit-horizon order (queries/transcripts/feed_after.sql).
CREATE INDEX task_messages_feed ON task_messages (xact_id, task_id, attempt, seq);

-- One row per attempt with a transcript: its size against transcript_max_bytes, whether it was
-- cut, and when its first message came (the retention sweep deletes a transcript whole once that
-- is older than transcript_retention, in first-message order: task_transcripts_first_at).
CREATE TABLE task_transcripts (
    task_id    uuid NOT NULL,
    attempt    integer NOT NULL,
    bytes      bigint NOT NULL DEFAULT 0,
    truncated  boolean NOT NULL DEFAULT false,
    first_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX task_transcripts_first_at ON task_transcripts (first_at);

-- Messages are deleted with their task: one statement per deleting statement, by the transcript
-- primary keys (a prefix of task id), so it costs what it deletes.
CREATE FUNCTION paddock_delete_transcripts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_messages WHERE task_id = ANY (ARRAY(SELECT id FROM gone));
    DELETE FROM task_transcripts WHERE task_id = ANY (ARRAY(SELECT id FROM gone));
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_delete_transcripts
    AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION paddock_delete_transcripts();

-- Attempts the server ended while their daemon may still run them (cancelled, timed out, runtime
-- offline, attempt lost): a reconciling daemon that still lists one is told to stop it in every
-- heartbeat reply whose request lists it (DESIGN §10). Looked up by attempt id (primary key);
-- rows older than a day are deleted by the attempt-liveness sweep (revoked_attempts_at).
CREATE TABLE revoked_attempts (
    attempt_id    uuid PRIMARY KEY,
    task_id       uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    runtime_id    uuid NOT NULL,
    revoked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_attempts_at ON revoked_attempts (revoked_at);

-- ops.attempts gains each attempt's usage and session (columns appended: the view stays
-- compatible with existing readers).
CREATE OR REPLACE VIEW ops.attempts AS
SELECT a.workspace_id,
       a.task_id,
       a.attempt,
       a.attempt_id,
       a.runtime_id,
       a.dispatched_at,
       a.started_at,
       a.finished_at,
       a.outcome,
       a.failure_reason,
       a.error,
       a.usage,
       a.session
FROM task_attempts a
UNION ALL
SELECT t.workspace_id,
       t.id,
       t.attempt,
       t.attempt_id,
       t.runtime_id,
       t.dispatched_at,
       t.started_at,
       t.finished_at,
       t.status,
       CASE WHEN t.status = 'completed' THEN NULL ELSE t.failure_reason END,
       CASE WHEN t.status = 'completed' THEN NULL ELSE t.error END,
       t.usage,
       t.session
FROM tasks t
WHERE t.status IN ('completed', 'failed', 'cancelled')
  AND t.dispatched_at IS NOT NULL
  AND t.attempt_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM task_attempts a WHERE a.attempt_id = t.attempt_id);

-- Usage per day (of the attempt's end), workspace, agent, runtime, provider and model, over
-- finished attempts: tasks counts distinct tasks; tokens is input + output.
CREATE VIEW ops.usage_daily AS
SELECT date_trunc('day', a.finished_at) AS day,
       a.workspace_id,
       t.agent_id,
       ag.name AS agent_name,
       a.runtime_id,
       r.provider,
       a.usage ->> 'model' AS model,
       count(DISTINCT a.task_id) AS tasks,
       count(*) AS attempts,
       sum((a.usage ->> 'input_tokens')::bigint) AS input_tokens,
       sum((a.usage ->> 'output_tokens')::bigint) AS output_tokens,
       sum((a.usage ->> 'cache_read_tokens')::bigint) AS cache_read_tokens,
       sum((a.usage ->> 'cache_write_tokens')::bigint) AS cache_write_tokens,
       sum((a.usage ->> 'input_tokens')::bigint + (a.usage ->> 'output_tokens')::bigint) AS tokens,
       sum((a.usage ->> 'cost_usd')::numeric) AS cost_usd
FROM ops.attempts a
JOIN tasks t ON t.id = a.task_id
JOIN agents ag ON ag.id = t.agent_id
LEFT JOIN runtimes r ON r.id = a.runtime_id
WHERE a.usage IS NOT NULL AND a.finished_at IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paddock_readonly') THEN
        GRANT SELECT ON ops.attempts, ops.usage_daily TO paddock_readonly;
    END IF;
END
$$;
