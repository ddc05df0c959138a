-- Event payloads are stored as `json`, the text the server wrote, not `jsonb`. Nothing queries inside
-- them: they are written once and read back whole for sockets and catch-up, so `jsonb` only cost a
-- parse into its binary form on every insert and a conversion back to text on every read. Events are
-- about half of the rows the task hot path writes (three per task); `json` input is validated by the
-- same lexer without building a tree.
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json,
                   ALTER COLUMN payload SET DEFAULT '{}'::json;
