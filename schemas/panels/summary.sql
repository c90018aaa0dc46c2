-- The `baton dev` summary: every call that started at or after
-- {since_ms} (epoch milliseconds) with its handoff and how it ended.
--
-- A call with several handoffs (a fallback after a busy destination) shows
-- its latest command: the highest requested_ms, then command_id, picked by
-- LIMIT 1 BY over a total order, never by ANY. Its status is the deciding
-- outcome: the last succeeded or failed one, where a warm transfer that
-- reached bridged counts as succeeded (its later ended outcome does not
-- change that); without one, the latest outcome so far. Ties on time_ms
-- break on event_id. Right-side columns go through ifNull, so a profile
-- with join_use_nulls = 1 reads '' and 0 as the default profile does.
-- Runs, with the same rows, on ClickHouse 18.16 and current releases.

-- name: dev_summary
-- title: Calls and their handoffs
SELECT
    c.call_id AS call_id,
    caller_number,
    callee_number,
    customer_id,
    intent,
    ifNull(d.destination, '') AS destination,
    ifNull(d.method, '') AS method,
    ifNull(d.o_status, '') AS status,
    ifNull(d.o_code, 0) AS sip_code
FROM
(
    SELECT call_id, caller_number, callee_number, started_ms,
           variables.value[indexOf(variables.key, 'Customer-Id')] AS customer_id,
           variables.value[indexOf(variables.key, 'Intent')] AS intent
    FROM calls FINAL
    WHERE started_ms >= {since_ms}
) AS c
ANY LEFT JOIN
(
    SELECT call_id, destination, method,
           ifNull(o.o_status, '') AS o_status,
           toInt32(ifNull(o.o_code, 0)) AS o_code
    FROM
    (
        SELECT command_id, call_id, destination, method, requested_ms FROM handoffs FINAL
    ) AS h
    ANY LEFT JOIN
    (
        SELECT command_id,
               argMaxIf(status, (time_ms, event_id), status IN ('succeeded', 'failed', 'bridged')) AS decided,
               if(decided = 'bridged', 'succeeded', if(decided = '', argMax(status, (time_ms, event_id)), decided)) AS o_status,
               if(decided = '', argMax(sip_code, (time_ms, event_id)), argMaxIf(sip_code, (time_ms, event_id), status IN ('succeeded', 'failed', 'bridged'))) AS o_code
        FROM transfer_outcomes FINAL
        GROUP BY command_id
    ) AS o USING command_id
    ORDER BY call_id, requested_ms DESC, command_id DESC
    LIMIT 1 BY call_id
) AS d USING call_id
ORDER BY started_ms, call_id;
