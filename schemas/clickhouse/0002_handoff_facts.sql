-- Baton analytics, second schema: agent metrics. Runs on ClickHouse 18.16
-- and current releases (26.x in the tests).
--
-- This file once created the dashboard views too. Their join had no
-- subquery aliases, which ClickHouse rejects since 20.3 (ALIAS_REQUIRED), so
-- the views moved to 0004_views.sql, which also replaces the old ones on a
-- database that ran the first version of this file.
--
-- Same rules as 0001: one statement per chunk, each idempotent.

-- agent_metrics: one row per AgentMetric event (the agent API's conv
-- metrics), keyed by event id.
CREATE TABLE IF NOT EXISTS agent_metrics
(
    event_id   String,
    call_id    String,
    time       DateTime('UTC'),
    time_ms    UInt64,
    name       String,
    value      Float64,
    tags Nested
    (
        key   String,
        value String
    ),
    request_id String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (name, call_id, event_id);
