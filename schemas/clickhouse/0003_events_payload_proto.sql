-- events.payload_proto: the event's payload as the Kafka record carried it,
-- the Protobuf message that `type` names (schemas/baton/v1), byte for byte.
-- The writer fills it instead of the protojson `payload` column of 0001,
-- which new rows leave empty: encoding every event as JSON cost half of
-- the writer's CPU (docs/decisions/0008-events-payload-protobuf.md).
--
-- 18.16 has no ADD COLUMN IF NOT EXISTS; the migrator counts "column
-- already exists" from an ADD COLUMN as done, so a run that stopped
-- before recording this file can run it again.
ALTER TABLE events ADD COLUMN payload_proto String;
