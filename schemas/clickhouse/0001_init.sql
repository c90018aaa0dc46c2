-- Baton analytics, first schema. Runs on ClickHouse 18.16 and 24.x.
--
-- One statement per chunk: the migrator splits this file on a ';' that ends
-- a line and runs each chunk in the target database (names are unqualified).
-- Every statement is idempotent (IF NOT EXISTS), since ClickHouse has no
-- transactional DDL and a file that failed half-way is run again whole.
--
-- Exactly-once in ClickHouse: Kafka delivers at least once, and a replayed
-- batch inserts rows again under the same sorting key. ReplacingMergeTree
-- folds such rows; queries read with FINAL (or argMax) to count each key once.
-- Times are DateTime (seconds, UTC) plus a UInt64 epoch-millisecond column:
-- 18.16 has no DateTime64.

-- events: every event of every topic, its payload as protojson.
CREATE TABLE IF NOT EXISTS events
(
    event_id  String,
    type      String,
    call_id   String,
    source    String,
    time      DateTime('UTC'),
    time_ms   UInt64,
    topic     String,
    partition Int32,
    offset    Int64,
    payload   String
)
ENGINE = ReplacingMergeTree()
ORDER BY (call_id, event_id);

-- calls: one row per call, from CallStarted. version = started_ms, so a
-- later CallStarted of the same call id wins.
CREATE TABLE IF NOT EXISTS calls
(
    call_id           String,
    started_at        DateTime('UTC'),
    started_ms        UInt64,
    trunk             String,
    source_address    String,
    caller_number     String,
    caller_number_raw String,
    callee_number     String,
    callee_number_raw String,
    request_uri       String,
    variables Nested
    (
        key   String,
        value String
    ),
    header_count      UInt32,
    oversized_headers UInt32,
    event_id          String,
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY call_id;

-- call_ends: one row per call, from CallEnded. ended_by is 'remote' or
-- 'baton'; method is BYE or CANCEL.
CREATE TABLE IF NOT EXISTS call_ends
(
    call_id     String,
    ended_at    DateTime('UTC'),
    ended_ms    UInt64,
    ended_by    String,
    method      String,
    reason      String,
    duration_ms UInt64,
    event_id    String
)
ENGINE = ReplacingMergeTree()
ORDER BY call_id;

-- handoffs: one row per router command, from HandoffCommand. method is
-- 'REFER', 'INVITE' or 'BYE'.
CREATE TABLE IF NOT EXISTS handoffs
(
    command_id   String,
    call_id      String,
    requested_at DateTime('UTC'),
    requested_ms UInt64,
    destination  String,
    method       String,
    route        String,
    reason       String,
    utterance    String,
    attempt      UInt32,
    headers Nested
    (
        name  String,
        value String
    ),
    event_id     String
)
ENGINE = ReplacingMergeTree()
ORDER BY command_id;

-- transfer_outcomes: every outcome of a command, from TransferOutcome.
-- status is 'accepted', 'progress', 'succeeded' or 'failed'.
CREATE TABLE IF NOT EXISTS transfer_outcomes
(
    event_id    String,
    command_id  String,
    call_id     String,
    time        DateTime('UTC'),
    time_ms     UInt64,
    status      String,
    method      String,
    destination String,
    reason      String,
    sip_code    Int32,
    sip_reason  String,
    detail      String,
    elapsed_ms  UInt64
)
ENGINE = ReplacingMergeTree()
ORDER BY (command_id, event_id);
