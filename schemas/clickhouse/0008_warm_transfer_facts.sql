-- Baton analytics: handoff_facts (and handoffs_hourly, built on it) with
-- the warm transfer's own outcomes. Since transfer reports a warm transfer
-- as ringing, answered, bridged and ended (OUTCOME_STATUS_RINGING ..
-- ENDED), the 0004 view saw none of them as final: every warm transfer
-- read as pending, with no time to answer or to bridge. Here bridged is
-- the warm transfer's success, answered its answer and ringing its
-- ringing; REFER and BYE rows read as before.
--
-- Same rules as 0004 (one statement per chunk, idempotent, the rules for
-- both engines); DROP TABLE, dependents first, as there.
DROP TABLE IF EXISTS handoffs_hourly;

DROP TABLE IF EXISTS handoff_facts;

-- handoff_facts: one row per handoff command with what became of it.
--   outcome:           'succeeded' or 'failed' (the last final outcome; a warm
--                      transfer's bridged counts as succeeded, its later ended
--                      changes nothing), or 'pending' while transfer has
--                      reported no final one.
--   sip_code/sip_reason: of that final outcome (0/'' while pending).
--   time_to_*_ms:      milliseconds from the command to the first outcome
--                      that shows the step, NULL when none did:
--     ringing  a progress outcome with a 180-189 SIP code;
--     answer   an outcome with a 2xx code from the target (status
--              progress or succeeded: the REFER's own 202 is status
--              accepted and does not count);
--     bridge   the succeeded or bridged outcome: the caller is connected.
--              For REFER and BYE this is the same event as the answer; a
--              warm transfer reports ringing, answered 200, then bridged
--              once media flows (and ended when the call does).
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
        countIf(status IN ('succeeded', 'failed', 'bridged')) AS final_count,
        if(argMaxIf(status, (time_ms, event_id), status IN ('succeeded', 'failed', 'bridged')) = 'bridged', 'succeeded',
           argMaxIf(status, (time_ms, event_id), status IN ('succeeded', 'failed', 'bridged'))) AS final_status,
        argMaxIf(sip_code, (time_ms, event_id), status IN ('succeeded', 'failed', 'bridged')) AS final_sip_code,
        argMaxIf(sip_reason, (time_ms, event_id), status IN ('succeeded', 'failed', 'bridged')) AS final_sip_reason,
        countIf(status IN ('progress', 'ringing') AND sip_code >= 180 AND sip_code < 190) AS ringing_count,
        minIf(elapsed_ms, status IN ('progress', 'ringing') AND sip_code >= 180 AND sip_code < 190) AS ringing_ms,
        countIf(status IN ('progress', 'succeeded', 'answered', 'bridged') AND sip_code >= 200 AND sip_code < 300) AS answer_count,
        minIf(elapsed_ms, status IN ('progress', 'succeeded', 'answered', 'bridged') AND sip_code >= 200 AND sip_code < 300) AS answer_ms,
        countIf(status IN ('succeeded', 'bridged')) AS bridge_count,
        minIf(elapsed_ms, status IN ('succeeded', 'bridged')) AS bridge_ms
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
