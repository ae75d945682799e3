-- Retention: per-topic policies, the low-water mark readers honour, and the partitioned layout
-- that lets retention drop whole partitions instead of deleting rows.
--
-- Partitions of `<topic>_events` (by offset range) and `<topic>_deliveries` (by expiry day)
-- live in their own schema, so their names (`<topic>_e<n>`, `<topic>_d<yyyymmdd>`) can never
-- meet a system table or another topic's tables. Existing topics keep their plain tables until
-- their pruner converts them online (src/topics/layout.rs): nothing here rewrites or scans a
-- topic's table, so this migration is quick however much data there is.
CREATE SCHEMA IF NOT EXISTS eventrelay_partitions;

-- One row per topic: its policy (0 = no limit by that measure), the first retained offset
-- (`first_offset`, the low-water mark every reader starts at; offsets below it are gone even
-- where their partition has not been dropped yet), its partition layout, the pruner's fencing
-- epoch, and the statistics the pruner keeps for /metrics and the UI.
CREATE TABLE topic_retention (
    name              text PRIMARY KEY REFERENCES topics (name) ON DELETE CASCADE,
    max_age_seconds   bigint NOT NULL DEFAULT 0 CHECK (max_age_seconds >= 0),
    max_events        bigint NOT NULL DEFAULT 0 CHECK (max_events >= 0),
    max_bytes         bigint NOT NULL DEFAULT 0 CHECK (max_bytes >= 0),
    drop_undelivered  boolean NOT NULL DEFAULT false,
    first_offset      bigint NOT NULL DEFAULT 1,
    -- Offsets per events partition; fixed for the topic's life (names encode the range).
    partition_span    bigint NOT NULL CHECK (partition_span > 0),
    -- First offset of partition 1; NULL while `<topic>_events` is still a plain table. The
    -- converted legacy table is partition 0, covering every offset below it.
    partition_base    bigint,
    -- Upper bound (exclusive) checked on a plain events table while it is being converted.
    convert_bound     bigint,
    -- Expiry below which attempts live in the converted legacy deliveries table (partition
    -- `<topic>_d0`); 'epoch' (1970) for topics made partitioned; NULL while not converted.
    deliveries_base   timestamptz,
    deliveries_bound  timestamptz,
    epoch             bigint NOT NULL DEFAULT 0,
    owner_node        uuid,
    -- Size accounting (only for topics with max_bytes): retention_chunks sums the rows of
    -- offsets sized_from..=sized_to.
    sized_from        bigint NOT NULL DEFAULT 1,
    sized_to          bigint NOT NULL DEFAULT 0,
    pruned_events     bigint NOT NULL DEFAULT 0,
    pruned_attempts   bigint NOT NULL DEFAULT 0,
    bytes_on_disk     bigint NOT NULL DEFAULT 0,
    oldest_at         timestamptz,
    pruned_at         timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- Topics made before this migration (or by nodes of an earlier version during a rolling
-- upgrade) get their row from the pruners (`retention::Pruner::candidates`), with the node's
-- partition size; until then readers treat them as keeping everything from offset 1.

-- Stored bytes of a topic's events per chunk of offsets (`(offset - 1) / chunk size`), summed
-- once as events arrive, so retention by size walks chunks instead of rows.
CREATE TABLE retention_chunks (
    name  text NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    chunk bigint NOT NULL,
    bytes bigint NOT NULL,
    PRIMARY KEY (name, chunk)
);

-- Cluster-wide counters of the housekeeping pruner (dead letters, live spill).
CREATE TABLE retention_totals (
    what text PRIMARY KEY,
    rows bigint NOT NULL DEFAULT 0
);
INSERT INTO retention_totals (what) VALUES ('dead_letters'), ('live_spill');

-- Attempt records carry their own expiry, so their retention can drop whole days. Adding a
-- column with a stable default is a catalog change (no rewrite); existing rows expire 30 days
-- from now, new rows written by nodes of an earlier version 30 days after they are written.
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT name FROM topics LOOP
        IF to_regclass(format('%I', t || '_deliveries')) IS NOT NULL THEN
            EXECUTE format(
                'ALTER TABLE %I ADD COLUMN IF NOT EXISTS expires_at timestamptz NOT NULL
                 DEFAULT now() + interval ''30 days''', t || '_deliveries');
        END IF;
    END LOOP;
END
$$;
