-- Baton dashboard panels of handoffs and calls; agent.sql has the agent's.
--
-- The analytics page (internal/dashboard), `baton report` and the Grafana
-- dashboard (deploy/grafana/baton-handoffs.json) all run these queries.
-- Placeholders: {from} and {to} are the window's ends as DateTime
-- expressions (toDateTime(<unix seconds>) in Go, $__fromTime and
-- $__toTime in Grafana); {limit} is a row count. Every query runs on
-- ClickHouse 18.16 and 24+; tables and views are in the connection's
-- database. Time-series panels take every hour that overlaps the window;
-- totals read the deduplicated rows within it.
--
-- Filters: {trunk}, {destination}, {method} and {outcome} are string
-- literals, '' for "any" (panels.Filter in Go, the ${trunk:sqlstring}
-- text-box variables in Grafana). A handoff panel keeps the handoffs that
-- match all four (trunk: its call's); calls_by_dialed_number keeps the
-- calls of that trunk that had such a handoff.

-- name: handoffs_by_reason
-- title: Handoffs by reason per hour
SELECT toStartOfHour(requested_at) AS hour, reason, count() AS handoffs
FROM handoff_facts
WHERE requested_at >= toStartOfHour({from}) AND toStartOfHour(requested_at) < {to}
  AND ({destination} = '' OR destination = {destination})
  AND ({method} = '' OR method = {method})
  AND ({outcome} = '' OR outcome = {outcome})
  AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
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
  AND ({destination} = '' OR destination = {destination})
  AND ({method} = '' OR method = {method})
  AND ({outcome} = '' OR outcome = {outcome})
  AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
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
      AND ({destination} = '' OR destination = {destination})
      AND ({method} = '' OR method = {method})
      AND ({outcome} = '' OR outcome = {outcome})
      AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
)
GROUP BY method
ORDER BY method;

-- name: calls_by_dialed_number
-- title: Calls per dialed number
SELECT callee_number, count() AS calls
FROM calls FINAL
WHERE started_at >= {from} AND started_at < {to}
  AND ({trunk} = '' OR trunk = {trunk})
  AND (({destination} = '' AND {method} = '' AND {outcome} = '') OR call_id IN (
      SELECT call_id FROM handoff_facts
      WHERE ({destination} = '' OR destination = {destination})
        AND ({method} = '' OR method = {method})
        AND ({outcome} = '' OR outcome = {outcome})))
GROUP BY callee_number
ORDER BY calls DESC, callee_number
LIMIT {limit};

-- name: recent_handoffs
-- title: Recent handoffs
SELECT requested_at, call_id, command_id, reason, destination, method, outcome, sip_code, time_to_bridge_ms
FROM handoff_facts
WHERE requested_at >= {from} AND requested_at < {to}
  AND ({destination} = '' OR destination = {destination})
  AND ({method} = '' OR method = {method})
  AND ({outcome} = '' OR outcome = {outcome})
  AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
ORDER BY requested_ms DESC, command_id
LIMIT {limit};

-- Failed handoffs by the SIP status that decided them (0: no SIP answer,
-- e.g. refused by transfer or timed out), its reason and the destination.
-- name: failures_by_sip_code
-- title: Failures by SIP code and reason
SELECT sip_code, sip_reason, destination, count() AS failures, uniqExact(call_id) AS calls
FROM handoff_facts
WHERE requested_at >= {from} AND requested_at < {to} AND outcome = 'failed'
  AND ({destination} = '' OR destination = {destination})
  AND ({method} = '' OR method = {method})
  AND ({outcome} = '' OR outcome = {outcome})
  AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
GROUP BY sip_code, sip_reason, destination
ORDER BY failures DESC, sip_code, sip_reason, destination
LIMIT {limit};

-- The trunk is the call's (calls.trunk); a handoff whose call is not in
-- the calls table (yet) counts under ''.
-- name: handoffs_by_trunk
-- title: Handoffs per trunk
SELECT
    ifNull(c.trunk, '') AS trunk,
    count() AS handoffs,
    countIf(h.outcome = 'succeeded') AS succeeded,
    countIf(h.outcome = 'failed') AS failed,
    countIf(h.outcome = 'pending') AS pending
FROM
(
    SELECT call_id, outcome
    FROM handoff_facts
    WHERE requested_at >= {from} AND requested_at < {to}
      AND ({destination} = '' OR destination = {destination})
      AND ({method} = '' OR method = {method})
      AND ({outcome} = '' OR outcome = {outcome})
      AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
) AS h
ANY LEFT JOIN
(
    SELECT call_id, trunk FROM calls FINAL
) AS c USING call_id
GROUP BY trunk
ORDER BY handoffs DESC, trunk
LIMIT {limit};

-- time_to_transfer per destination: ms from the command to the caller
-- connected (time_to_bridge_ms), over the handoffs that got there.
-- name: time_to_transfer_by_destination
-- title: Time to transfer by destination (ms)
SELECT
    destination,
    method,
    count() AS transfers,
    quantileExact(0.5)(ms) AS p50_ms,
    quantileExact(0.9)(ms) AS p90_ms,
    max(ms) AS max_ms
FROM
(
    SELECT destination, method, assumeNotNull(time_to_bridge_ms) AS ms
    FROM handoff_facts
    WHERE requested_at >= {from} AND requested_at < {to} AND isNotNull(time_to_bridge_ms)
      AND ({destination} = '' OR destination = {destination})
      AND ({method} = '' OR method = {method})
      AND ({outcome} = '' OR outcome = {outcome})
      AND ({trunk} = '' OR call_id IN (SELECT call_id FROM calls FINAL WHERE trunk = {trunk}))
)
GROUP BY destination, method
ORDER BY destination, method
LIMIT {limit};
