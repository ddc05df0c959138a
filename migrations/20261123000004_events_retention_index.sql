-- Event retention deletes the oldest events by time; this index bounds each batch's cost by the rows
-- it deletes (an id-ordered scan filtered on occurred_at would walk the whole log when nothing is old).
CREATE INDEX events_occurred_at ON events (occurred_at);
