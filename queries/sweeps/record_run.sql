-- Records one sweep run for operators.
INSERT INTO sweeper_runs (sweep, replica, started_at, duration_ms, rows_changed, error)
VALUES ($1, $2, $3, $4, $5, $6)
