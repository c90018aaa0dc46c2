-- Baton dashboard panels of handoffs and calls; agent.sql has the agent's.
--
-- The analytics page (internal/dashboard), `baton report` and the Grafana
-- dashboard (deploy/grafana/baton-handoffs.json) all run these queries.
-- Placeholders: {from} and {to} are the window's ends as DateTime
-- expressions (toDateTime(<unix seconds>) in Go, $__fromTime and
-- $__toTime in Grafana); {limit} is a row count. Every query runs on
-- ClickHouse 18.16 and 24+; tables and views are in the connection's
-- database. Time-series panels read the hourly views and take every hour
-- that overlaps the window; totals read the deduplicated rows within it.

-- name: handoffs_by_reason
-- title: Handoffs by reason per hour
SELECT hour, reason, sum(handoffs) AS handoffs
FROM handoffs_hourly
WHERE hour >= toStartOfHour({from}) AND hour < {to}
GROUP BY hour, reason
ORDER BY hour, reason;

-- name: success_by_destination
-- title: Success rate by destination and method
SELECT
    destination,
    method,
    count() AS handoffs,
    countIf(outcome = 'succeeded') AS succeeded,
    countIf(outcome = 'failed') AS failed,
    countIf(outcome = 'pending') AS pending,
    if(succeeded + failed = 0, toFloat64(0), succeeded / (succeeded + failed)) AS success_rate
FROM handoff_facts
WHERE requested_at >= {from} AND requested_at < {to}
GROUP BY destination, method
ORDER BY destination, method;

-- name: time_to_transfer
-- title: Time to transfer (ms from command to caller connected)
SELECT
    method,
    count() AS transfers,
    quantileExact(0.5)(ms) AS p50_ms,
    quantileExact(0.9)(ms) AS p90_ms,
    quantileExact(0.99)(ms) AS p99_ms,
    max(ms) AS max_ms
FROM
(
    SELECT method, assumeNotNull(time_to_bridge_ms) AS ms
    FROM handoff_facts
    WHERE requested_at >= {from} AND requested_at < {to} AND isNotNull(time_to_bridge_ms)
)
GROUP BY method
ORDER BY method;

-- name: calls_by_dialed_number
-- title: Calls per dialed number
SELECT callee_number, count() AS calls
FROM calls FINAL
WHERE started_at >= {from} AND started_at < {to}
GROUP BY callee_number
ORDER BY calls DESC, callee_number
LIMIT {limit};

-- name: recent_handoffs
-- title: Recent handoffs
SELECT requested_at, call_id, command_id, reason, destination, method, outcome, sip_code, time_to_bridge_ms
FROM handoff_facts
WHERE requested_at >= {from} AND requested_at < {to}
ORDER BY requested_ms DESC, command_id
LIMIT {limit};
