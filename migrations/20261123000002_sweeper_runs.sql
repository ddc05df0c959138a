-- One row per sweep per tick, for operators (ops.sweeper_runs). Bounded: the leader keeps the
-- newest few thousand rows.
CREATE TABLE sweeper_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sweep        text NOT NULL,
    replica      text NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  double precision NOT NULL,
    rows_changed integer NOT NULL,
    error        text
);
