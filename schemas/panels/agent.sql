-- Baton dashboard panels of the agent in the call: its media stream
-- (agent_streams, from AgentDisconnected; migration 0005) and the metrics
-- the agent reports through the agent API (agent_metrics, AgentMetric).
--
-- Same format, placeholders and rules as panels.sql; All() reads this file
-- after it, so the analytics page and the Grafana dashboard show these
-- panels below the handoff panels. Every query reads FINAL rows, so a
-- replayed batch changes no figure, and runs with the same rows on
-- ClickHouse 18.16 and current releases (TestAgentPanelsOnBothEngines).
-- Times are the stream's end (ended_at) or the metric's time; the window
-- is exact ([from, to)).

-- name: agent_streams_by_reason
-- title: Agent streams per hour by end reason
SELECT toStartOfHour(ended_at) AS hour, reason, count() AS streams
FROM agent_streams FINAL
WHERE ended_at >= {from} AND ended_at < {to}
GROUP BY hour, reason
ORDER BY hour, reason;

-- A failure is a stream that ended for any reason but the call's own end
-- (call_ended) or its handoff (handoff): the agent could not be reached,
-- dropped, stopped reading, sent too much, or ingress shut down under it.
-- action is what on_agent_failure did about it.
-- name: agent_failures
-- title: Agent failures by reason and on_agent_failure action
SELECT reason, action, count() AS streams, uniqExact(call_id) AS calls
FROM agent_streams FINAL
WHERE ended_at >= {from} AND ended_at < {to} AND reason NOT IN ('call_ended', 'handoff')
GROUP BY reason, action
ORDER BY streams DESC, reason, action;

-- Frames are 20 ms of the agent's audio: played as RTP, late (playout
-- ticks behind schedule), dropped (beyond the playout bound, or cut by a
-- clear) and cleared. The queue figures are over each stream's deepest
-- playout queue; quantileExact is the value at position floor(n * 0.95)
-- of the sorted depths, the same on both engines.
-- name: agent_playout
-- title: Agent playout health per hour (frames late, dropped, cleared; deepest queue)
SELECT
    toStartOfHour(ended_at) AS hour,
    count() AS streams,
    sum(frames_played) AS frames_played,
    sum(late) AS late_frames,
    sum(dropped) AS dropped_frames,
    sum(cleared) AS cleared_frames,
    quantileExact(0.95)(max_queue_ms) AS p95_max_queue_ms,
    max(max_queue_ms) AS deepest_queue_ms
FROM agent_streams FINAL
WHERE ended_at >= {from} AND ended_at < {to}
GROUP BY hour
ORDER BY hour;

-- The agent's own metrics (POST .../metrics): one row per name, over the
-- samples in the window. avg is rounded to 3 decimals, so both engines
-- print the same text whatever order they summed in.
-- name: agent_metrics_by_name
-- title: Agent metrics by name
SELECT
    name,
    count() AS samples,
    uniqExact(call_id) AS calls,
    round(avg(value), 3) AS avg_value,
    min(value) AS min_value,
    quantileExact(0.5)(value) AS p50_value,
    quantileExact(0.95)(value) AS p95_value,
    max(value) AS max_value
FROM agent_metrics FINAL
WHERE time >= {from} AND time < {to}
GROUP BY name
ORDER BY name
LIMIT {limit};
