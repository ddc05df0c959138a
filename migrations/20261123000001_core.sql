-- Paddock core schema: tenants, tokens, runtimes, agents, tasks, finished attempts, events.
--
-- Conventions:
-- * every row except a workspace carries workspace_id, and child rows reference their parent through
--   (workspace_id, id) so a row can never point into another tenant;
-- * statuses are text with CHECK constraints (readable in psql, cheap to extend with a new migration);
-- * hot paths (claim, sweeps) use partial indexes over active rows only, so their cost does not grow
--   with task history.

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tokens are stored as SHA-256 digests only; the secret is shown once at creation.
CREATE TABLE tokens (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('member', 'daemon')),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    digest        bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX tokens_workspace ON tokens (workspace_id);

CREATE TABLE runtimes (
    id               uuid PRIMARY KEY,
    workspace_id     uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    daemon_id        text NOT NULL CHECK (length(daemon_id) BETWEEN 1 AND 200),
    provider         text NOT NULL CHECK (length(provider) BETWEEN 1 AND 100),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version          text CHECK (length(version) <= 100),
    -- NULL: no runtime-wide cap beyond the agents' own limits.
    max_concurrency  integer CHECK (max_concurrency BETWEEN 1 AND 10000),
    status           text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline')),
    -- Written by the heartbeat flusher only (one column, so the update stays HOT).
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    offline_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, daemon_id, provider),
    UNIQUE (workspace_id, id),
    CHECK ((status = 'offline') = (offline_at IS NOT NULL))
);
-- Stale-runtime sweep: online runtimes by last_seen_at.
CREATE INDEX runtimes_online_seen ON runtimes (last_seen_at) WHERE status = 'online';
-- Collector: offline runtimes by offline_at.
CREATE INDEX runtimes_offline_since ON runtimes (offline_at) WHERE status = 'offline';

CREATE TABLE agents (
    id                    uuid PRIMARY KEY,
    workspace_id          uuid NOT NULL,
    runtime_id            uuid NOT NULL,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    max_concurrent_tasks  integer NOT NULL DEFAULT 1 CHECK (max_concurrent_tasks BETWEEN 1 AND 1000),
    definition            jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    definition_version    integer NOT NULL DEFAULT 1,
    status                text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'working', 'offline')),
    archived_at           timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, id),
    FOREIGN KEY (workspace_id, runtime_id) REFERENCES runtimes (workspace_id, id)
);
CREATE INDEX agents_runtime ON agents (runtime_id);
CREATE INDEX agents_workspace ON agents (workspace_id, id);

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    -- Monotonic insertion order: FIFO tie-break for the claim and the keyset for listing.
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    workspace_id     uuid NOT NULL,
    agent_id         uuid NOT NULL,
    -- The agent's runtime (agents never move between runtimes).
    runtime_id       uuid NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'dispatched', 'running', 'completed', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    progress         jsonb,
    result           jsonb,
    error            text,
    failure_reason   text CHECK (failure_reason IN ('agent_error', 'runtime_offline', 'dispatch_timeout',
                                                    'running_timeout', 'queued_expired', 'cancelled')),
    -- The latest attempt issued (0 before the first claim) and its fencing token.
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 100),
    attempt_id       uuid,
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    -- Set when a dispatched/running task is cancelled; cleared when the owning daemon was told.
    cancel_pending   boolean NOT NULL DEFAULT false,
    run_after        timestamptz NOT NULL DEFAULT now(),
    enqueued_at      timestamptz NOT NULL DEFAULT now(),
    dispatched_at    timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (workspace_id, idempotency_key),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents (workspace_id, id) ON DELETE CASCADE
);
-- Claim: per agent, highest priority first, then FIFO; queued rows only.
CREATE INDEX tasks_claim ON tasks (agent_id, priority DESC, seq) WHERE status = 'queued';
-- Concurrency limits, stale-task sweeps and runtime-offline fail-over: active rows only.
CREATE INDEX tasks_active_runtime ON tasks (runtime_id) WHERE status IN ('dispatched', 'running');
CREATE INDEX tasks_active_agent ON tasks (agent_id) WHERE status IN ('dispatched', 'running');
CREATE INDEX tasks_dispatched_at ON tasks (dispatched_at) WHERE status = 'dispatched';
CREATE INDEX tasks_started_at ON tasks (started_at) WHERE status = 'running';
-- Queued-backlog expiry: oldest queued first.
CREATE INDEX tasks_queued_enqueued ON tasks (enqueued_at) WHERE status = 'queued';
-- Cancellations the owning daemon has not been told yet.
CREATE INDEX tasks_cancel_pending ON tasks (runtime_id) WHERE cancel_pending;
-- Listing, newest first.
CREATE INDEX tasks_list ON tasks (workspace_id, seq DESC);
CREATE INDEX tasks_list_agent ON tasks (agent_id, seq DESC);

-- Finished attempts (the open attempt lives on the task row itself, so a task's happy path writes the
-- attempt once, when it ends).
CREATE TABLE task_attempts (
    attempt_id      uuid PRIMARY KEY,
    task_id         uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    workspace_id    uuid NOT NULL,
    attempt         integer NOT NULL,
    runtime_id      uuid NOT NULL,
    dispatched_at   timestamptz NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('completed', 'failed', 'cancelled')),
    failure_reason  text,
    error           text,
    UNIQUE (task_id, attempt)
);

-- The event log. `xact_id` is the writing transaction: readers deliver only rows whose transaction
-- precedes the oldest one still running, so a row that commits late is never skipped (see
-- queries/events/list_after.sql).
CREATE TABLE events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  uuid NOT NULL,
    type          text NOT NULL,
    subject_id    uuid NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    xact_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    occurred_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_workspace_pos ON events (workspace_id, xact_id, id);
CREATE INDEX events_pos ON events (xact_id, id);
