-- The mark has one home: `topic_offsets.marked`.
--
-- Every publish now commits synchronously and moves `marked` to its reservation in the very
-- update that reserves its offsets, so a topic's mark is always its last durable, visible
-- offset, and readers read `marked` alone (a topic without a `topic_offsets` row has none:
-- 0). Nothing of this version writes `topics.last_offset` any more; it stays, with the view
-- `topic_marks`, only for nodes of the previous version during a rolling upgrade, and goes in
-- the release after (docs/decisions.md, "Publishing", upgrade path).
--
-- During the upgrade, a node of the previous version still commits batches of 100 events or
-- more without waiting for the flush and marks them later in `topics.last_offset` (its lane's
-- mark, and its sweep once a second). The trigger below carries every raise of
-- `topics.last_offset` into `marked` (and `reserved`, for bulk loads that move only
-- `topics.last_offset`), in the same transaction, so what such a node acknowledges is
-- visible to the new readers at once, and what a dead one left behind after its peers'
-- sweep. Statement-level, taking the `topic_offsets` rows in name order ("C" collation, the
-- byte order in which the writer locks them), so a sweep that raises many topics at once and
-- a new node's transaction over several topics never wait for each other in a cycle.

-- Topics published to before migration 0005, or only by a bulk load, get their row now.
INSERT INTO topic_offsets AS o (name, reserved, marked)
SELECT name, last_offset, last_offset FROM topics ORDER BY name COLLATE "C"
ON CONFLICT (name) DO UPDATE
    SET reserved = GREATEST(o.reserved, EXCLUDED.reserved),
        marked = GREATEST(o.marked, EXCLUDED.marked);

CREATE FUNCTION topics_last_offset_to_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO topic_offsets AS o (name, reserved, marked)
    SELECT n.name, n.last_offset, n.last_offset
    FROM new_rows n JOIN old_rows p ON p.name = n.name
    WHERE n.last_offset > p.last_offset
    ORDER BY n.name COLLATE "C"
    ON CONFLICT (name) DO UPDATE
        SET reserved = GREATEST(o.reserved, EXCLUDED.reserved),
            marked = GREATEST(o.marked, EXCLUDED.marked);
    RETURN NULL;
END
$$;

CREATE TRIGGER topics_last_offset_to_mark AFTER UPDATE ON topics
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION topics_last_offset_to_mark();
