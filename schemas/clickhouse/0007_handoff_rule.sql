-- handoffs.rule: the routing rule whose match chose the handoff's
-- destination (HandoffCommand.rule, carried by its fallbacks too); empty
-- when no rule did (the agent named the destination, or the default was
-- used). The "rules by hits" panel (schemas/panels/rules.sql) counts
-- handoffs by it. Rows written before this column read ''.
--
-- 18.16 has no ADD COLUMN IF NOT EXISTS; the migrator counts "column
-- already exists" from an ADD COLUMN as done (as for 0003). On a cluster
-- migrate.ForCluster runs it on handoffs_local, then on handoffs.
ALTER TABLE handoffs ADD COLUMN rule String;
