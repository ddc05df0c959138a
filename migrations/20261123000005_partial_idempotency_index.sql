-- Idempotency keys are unique per workspace, but most tasks have none: index only the rows that do.
-- The full unique constraint held one entry per row version, so every state change of every task
-- (none of which is HOT: status is in partial-index predicates) paid an insert into it.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE tasks DROP CONSTRAINT tasks_workspace_id_idempotency_key_key;
