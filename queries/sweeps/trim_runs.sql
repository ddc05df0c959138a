-- Keeps sweeper_runs bounded: the newest $1 rows (primary key range delete).
DELETE FROM sweeper_runs
WHERE id <= (SELECT max(id) FROM sweeper_runs) - $1
