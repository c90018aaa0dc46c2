-- Baton analytics: the views the dashboards read. Runs, with the same
-- results, on ClickHouse 18.16 and current releases (26.x through chDB in
-- the tests: services/analytics/internal/writer, TestEnginesAgree).
--
-- Same rules as 0001: one statement per chunk, each idempotent. A view is
-- dropped and created again, so this file also replaces the views of the
-- first 0002, whose unaliased join current servers refuse (ALIAS_REQUIRED).
-- DROP TABLE, not DROP VIEW: 18.16 has no DROP VIEW. Dependents first.
--
-- Dashboards read plain VIEWs, never materialized views. A materialized
-- view aggregates each inserted block as it arrives, so a batch that is
-- inserted again after a crash (at-least-once from Kafka) would be summed
-- twice. A VIEW is a stored SELECT over the FINAL tables: it runs at read
-- time on deduplicated rows, so every count stays exact under replay.
-- docs/decisions/0006-analytics-aggregates.md explains the choice.
--
-- Rules every query here keeps, so that both engines give the same rows:
--   * every joined subquery has an alias (current servers require it);
--   * a join's right side has one row per key, so ANY picks nothing
--     arbitrary;
--   * a column from a join's right side goes through ifNull, so a profile
--     with join_use_nulls = 1 gets the same values, not NULLs;
--   * argMax breaks ties on time_ms with event_id: (time_ms, event_id).
DROP TABLE IF EXISTS handoffs_hourly;

DROP TABLE IF EXISTS calls_hourly;

DROP TABLE IF EXISTS handoff_facts;

-- handoff_facts: one row per handoff command with what became of it.
--   outcome:           'succeeded' or 'failed' (the last final outcome), or
--                      'pending' while transfer has reported no final one.
--   sip_code/sip_reason: of that final outcome (0/'' while pending).
--   time_to_*_ms:      milliseconds from the command to the first outcome
--                      that shows the step, NULL when none did:
--     ringing  a progress outcome with a 180-189 SIP code;
--     answer   an outcome with a 2xx code from the target (status
--              progress or succeeded: the REFER's own 202 is status
--              accepted and does not count);
--     bridge   the succeeded outcome: the caller is connected. For REFER
--              and BYE this is the same event as the answer; a warm
--              transfer reports progress 200 first and succeeded once
--              media is bridged.
-- Built only from what the events carry: HandoffCommand and the
-- TransferOutcome.elapsed that transfer measures from the command.
CREATE VIEW IF NOT EXISTS handoff_facts AS
SELECT
    command_id,
    call_id,
    requested_at,
    requested_ms,
    reason,
    utterance,
    destination,
    method,
    route,
    attempt,
    if(ifNull(o.final_count, 0) = 0, 'pending', ifNull(o.final_status, '')) AS outcome,
    ifNull(o.final_sip_code, 0) AS sip_code,
    ifNull(o.final_sip_reason, '') AS sip_reason,
    if(ifNull(o.ringing_count, 0) = 0, NULL, o.ringing_ms) AS time_to_ringing_ms,
    if(ifNull(o.answer_count, 0) = 0, NULL, o.answer_ms) AS time_to_answer_ms,
    if(ifNull(o.bridge_count, 0) = 0, NULL, o.bridge_ms) AS time_to_bridge_ms
FROM
(
    SELECT command_id, call_id, requested_at, requested_ms, reason, utterance, destination, method, route, attempt
    FROM handoffs FINAL
) AS h
ANY LEFT JOIN
(
    SELECT
        command_id,
        countIf(status IN ('succeeded', 'failed')) AS final_count,
        argMaxIf(status, (time_ms, event_id), status IN ('succeeded', 'failed')) AS final_status,
        argMaxIf(sip_code, (time_ms, event_id), status IN ('succeeded', 'failed')) AS final_sip_code,
        argMaxIf(sip_reason, (time_ms, event_id), status IN ('succeeded', 'failed')) AS final_sip_reason,
        countIf(status = 'progress' AND sip_code >= 180 AND sip_code < 190) AS ringing_count,
        minIf(elapsed_ms, status = 'progress' AND sip_code >= 180 AND sip_code < 190) AS ringing_ms,
        countIf(status IN ('progress', 'succeeded') AND sip_code >= 200 AND sip_code < 300) AS answer_count,
        minIf(elapsed_ms, status IN ('progress', 'succeeded') AND sip_code >= 200 AND sip_code < 300) AS answer_ms,
        countIf(status = 'succeeded') AS bridge_count,
        minIf(elapsed_ms, status = 'succeeded') AS bridge_ms
    FROM transfer_outcomes FINAL
    GROUP BY command_id
) AS o USING command_id;

-- handoffs_hourly: handoffs per hour, reason, destination and method, with
-- how they ended. Dashboards sum it over a window.
CREATE VIEW IF NOT EXISTS handoffs_hourly AS
SELECT
    toStartOfHour(requested_at) AS hour,
    reason,
    destination,
    method,
    count() AS handoffs,
    countIf(outcome = 'succeeded') AS succeeded,
    countIf(outcome = 'failed') AS failed,
    countIf(outcome = 'pending') AS pending
FROM handoff_facts
GROUP BY hour, reason, destination, method;

-- calls_hourly: calls per hour, dialed number (callee_number) and trunk.
CREATE VIEW IF NOT EXISTS calls_hourly AS
SELECT
    toStartOfHour(started_at) AS hour,
    callee_number,
    trunk,
    count() AS calls
FROM calls FINAL
GROUP BY hour, callee_number, trunk;
