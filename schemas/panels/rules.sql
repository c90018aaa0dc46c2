-- Baton dashboard panel of the routing rules: which rule chose the
-- destination of each handoff (handoffs.rule, migration 0007).
--
-- Same format, placeholders and rules as panels.sql; All() reads this file
-- after agent.sql. A handoff counts once, at its first command (attempt
-- 1): its fallbacks and the end policy's BYE are not hits. "(none)" is
-- the handoffs no rule chose (the agent named the destination, or the
-- default), the same label as the router's baton_router_rule_hits_total.
-- Refusals are not in ClickHouse's tables; the router's metric counts them
-- (decision="refused").

-- name: rules_by_hits
-- title: Rules by hits
SELECT if(rule = '', '(none)', rule) AS rule_name, count() AS hits, uniqExact(destination) AS destinations
FROM handoffs FINAL
WHERE requested_at >= {from} AND requested_at < {to} AND attempt = 1
GROUP BY rule_name
ORDER BY hits DESC, rule_name
LIMIT {limit};
