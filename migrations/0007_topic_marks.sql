-- A small publish marks itself in the row it already locks.
--
-- A publish transaction of a few events commits synchronously, so it is durable when it is
-- visible and may move the topic's mark itself. Until now it did so with a second row update,
-- of `topics.last_offset`, beside the reservation's update of `topic_offsets`: measured in a
-- single-connection loop of the 12-event publish statement, dropping that second update makes
-- the statement 7.6% faster, and small publishes are the topic's critical path (one at a time,
-- in offset order). So the mark now has two homes:
--
-- * `topic_offsets.marked`: set to the new reservation by a synchronously committed publish,
--   in the same update that reserves its offsets (no second row, no second lock);
-- * `topics.last_offset`: raised by the marks of large batches, which commit without waiting
--   for the flush and are marked by a separate synchronous statement that must not wait for
--   the reservation's row lock, and by every node's sweep once a second.
--
-- Both only ever cover committed, durable offsets, so the visible end of a topic is the larger
-- of the two: `topic_marks.last_offset`. Every reader reads that view. The sweep still raises
-- `topics.last_offset` to the reservation, so a node of an earlier version, which reads only
-- `topics`, sees small publishes at most a sweep (a second) late during a rolling upgrade.
ALTER TABLE topic_offsets ADD COLUMN marked bigint NOT NULL DEFAULT 0;

CREATE VIEW topic_marks AS
SELECT t.name, GREATEST(t.last_offset, o.marked) AS last_offset
FROM topics t LEFT JOIN topic_offsets o ON o.name = t.name;
