-- Serialises status recomputation with claims on the same agents: whoever locks second sees the
-- other's committed tasks (READ COMMITTED takes a new snapshot per statement). Ordered to avoid deadlocks.
SELECT id FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
