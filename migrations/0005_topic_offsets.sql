-- Offset reservation, apart from the visible high-water mark.
--
-- `topic_offsets.reserved` is the last offset handed out to a publish transaction; the writer
-- row-locks it to number a batch, so batches of a topic still commit one after another in
-- offset order. Those transactions commit without waiting for the WAL flush, which lets the
-- next batch take the lock at once instead of after the flush. `topics.last_offset` is the
-- durable, visible mark: it is raised to `reserved` by a separate, synchronously committed
-- statement, whose flush makes every earlier commit durable too. Readers read only offsets up
-- to `topics.last_offset`, so nobody sees an event that a crash could still take back.
-- A separate table, not a column of `topics`: the raise must not wait for the row lock a
-- publish transaction holds, and a publish must not wait for a raise's flush.
-- A topic's row is made by its first publish (an upsert that starts from the larger of the
-- two counters), so topics made before this migration, or by a node of an earlier version
-- during a rolling upgrade, need no backfill.
CREATE TABLE topic_offsets (
    name     text PRIMARY KEY REFERENCES topics (name) ON DELETE CASCADE,
    reserved bigint NOT NULL DEFAULT 0
);
