-- Baton analytics: the agent's media stream (issue 15), one row per stream
-- that ended, with its statistics. Runs, with the same results, on
-- ClickHouse 18.16 and current releases (26.x through chDB in the tests).
--
-- Same rules as 0001 and 0004: one statement per chunk, each idempotent;
-- every joined subquery aliased, one right-side row per key, right-side
-- columns through ifNull, argMax ties broken by (time_ms, event_id).
--
-- Two tables and a view, because the connected-time fields (url, format,
-- connect_ms, source) come in AgentConnected and the end and statistics in
-- AgentDisconnected, seconds to hours apart and usually in different
-- batches. The alternatives, and why not:
--   * a view that joins AgentConnected from the events table: the payload
--     there is Protobuf (payload_proto, decision 0008), which no SQL
--     function of 18.16 can read, and the protojson column is empty;
--   * the writer filling the connected fields into the disconnect row: it
--     would need to look up an earlier batch's event (a read per batch, and
--     a row that depends on what was written before it, so a replay could
--     write a different row);
--   * a materialized view: it runs per inserted block, so a replayed batch
--     would be joined and stored twice (decision 0006).
-- So each event is a plain row keyed by its event id, as in every other
-- table, and agent_stream_facts joins them at read time. Both tables have
-- call_id first in their sorting key for per-call lookups, and shard by
-- call_id on a cluster (migrate.ForCluster), so a stream's two rows meet on
-- one shard.

-- agent_streams: one row per AgentDisconnected. reason is ingress's
-- machine code (call_ended, handoff, connect_failed, agent_closed,
-- read_error, write_timeout, message_too_large, ...); action is what
-- on_agent_failure did (none, hangup, play_then_hangup, handoff).
-- stream_sid is empty when the stream could not be opened. The counters
-- are AgentStreamStats: frames are 20 ms.
CREATE TABLE IF NOT EXISTS agent_streams
(
    event_id      String,
    call_id       String,
    stream_sid    String,
    ended_at      DateTime('UTC'),
    ended_ms      UInt64,
    reason        String,
    action        String,
    detail        String,
    frames_out    UInt64,
    frames_in     UInt64,
    frames_played UInt64,
    late          UInt64,
    dropped       UInt64,
    cleared       UInt64,
    max_queue_ms  UInt64,
    marks         UInt64,
    bad_messages  UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ended_at)
ORDER BY (call_id, stream_sid, event_id);

-- agent_connects: one row per AgentConnected. url has no query string or
-- user info; format is audio/x-mulaw or audio/l16; connect_ms is from
-- dialling to the start message sent; source is where the endpoint came
-- from (trunk, number, default, ...).
CREATE TABLE IF NOT EXISTS agent_connects
(
    event_id     String,
    call_id      String,
    stream_sid   String,
    connected_at DateTime('UTC'),
    connected_ms UInt64,
    url          String,
    format       String,
    connect_ms   UInt64,
    source       String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(connected_at)
ORDER BY (call_id, stream_sid, event_id);

-- agent_stream_facts: one row per ended stream (per agent_streams row),
-- with the fields of its AgentConnected (same call_id and stream_sid):
-- connected_ms, url, format, connect_ms and source, or 0 and '' when the
-- stream never connected (connect_failed) or its AgentConnected is not
-- written yet; duration_ms is from connected to ended (0 without a
-- connect). A stream that is still open has no row here.
CREATE VIEW IF NOT EXISTS agent_stream_facts AS
SELECT
    call_id,
    stream_sid,
    ended_at,
    ended_ms,
    reason,
    action,
    detail,
    frames_out,
    frames_in,
    frames_played,
    late,
    dropped,
    cleared,
    max_queue_ms,
    marks,
    bad_messages,
    ifNull(c.c_connected_ms, 0) AS connected_ms,
    ifNull(c.c_url, '') AS url,
    ifNull(c.c_format, '') AS format,
    ifNull(c.c_connect_ms, 0) AS connect_ms,
    ifNull(c.c_source, '') AS source,
    if(ifNull(c.c_connected_ms, 0) = 0 OR ifNull(c.c_connected_ms, 0) > ended_ms, toUInt64(0),
       toUInt64(ended_ms - ifNull(c.c_connected_ms, 0))) AS duration_ms
FROM
(
    SELECT call_id, stream_sid, ended_at, ended_ms, reason, action, detail, frames_out, frames_in, frames_played,
           late, dropped, cleared, max_queue_ms, marks, bad_messages
    FROM agent_streams FINAL
) AS s
ANY LEFT JOIN
(
    SELECT
        call_id,
        stream_sid,
        argMax(connected_ms, (connected_ms, event_id)) AS c_connected_ms,
        argMax(url, (connected_ms, event_id)) AS c_url,
        argMax(format, (connected_ms, event_id)) AS c_format,
        argMax(connect_ms, (connected_ms, event_id)) AS c_connect_ms,
        argMax(source, (connected_ms, event_id)) AS c_source
    FROM agent_connects FINAL
    GROUP BY call_id, stream_sid
) AS c USING (call_id, stream_sid);
