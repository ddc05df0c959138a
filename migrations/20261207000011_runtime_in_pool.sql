-- Whether a runtime (its provider and labels) is in the pool an agent's runtime_selector names: the
-- one definition the claim, its locks, the admission gate and `blocked` use. A single-expression SQL
-- function: the planner inlines it, so the queries plan as if it were written out.
CREATE FUNCTION runtime_in_pool(selector jsonb, provider text, labels jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT $2 = ($1 ->> 'provider') AND $3 @> ($1 -> 'labels') $$;
