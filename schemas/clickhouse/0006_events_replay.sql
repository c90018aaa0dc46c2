-- events.ce_time and events.traceparent: the two CloudEvents headers of the
-- Kafka record that the other columns do not hold exactly. With them,
-- `baton replay --source clickhouse` rebuilds each record of a call byte
-- for byte (key = call_id, value = payload_proto, headers in the order
-- events.Encode writes them), so a call is replayed from ClickHouse long
-- after Kafka's retention deleted it, with the same timeline, ladder and
-- --rules diff. ce_time is the event time as sent (RFC 3339 with
-- nanoseconds; time_ms keeps milliseconds only, and the timeline prints
-- the time between steps rounded to the millisecond from the exact time).
-- Rows written before this migration leave both empty; replay then
-- rebuilds ce_time from time_ms and says so.
--
-- Lookups by call: events is ORDER BY (call_id, event_id) since 0001, so
-- `WHERE call_id = ?` reads only the granules of that call through the
-- primary key (bench/replay/run.sh measures it against a table ordered by
-- time). No skip index is needed, and 18.16 has none (README).
--
-- 18.16 has no ADD COLUMN IF NOT EXISTS; the migrator counts "column
-- already exists" as done (as for 0003).
ALTER TABLE events ADD COLUMN ce_time String;

ALTER TABLE events ADD COLUMN traceparent String;
