-- Producers that retry safely: idempotency keys with a dedupe window, and producer epochs.
--
-- `idempotency_keys` holds, per topic, each key stored inside its window with the event it
-- stored (id and offset), so a retry is answered with the original instead of a copy. The
-- writer inserts a batch's keys in the statement that reserves the batch's offsets, holding
-- the topic's `topic_offsets` row lock; the primary key makes a second copy impossible even
-- when two nodes race with the same key (see src/events/keyed.rs). Rows carry their own
-- expiry (the topic's window when stored), so the housekeeping pruner deletes them through
-- `idempotency_keys_expiry` without looking at topics, and a changed window applies to keys
-- stored from then on. No foreign key: a per-row check would cost every keyed insert a
-- lookup and a row lock on `topics`; the trigger below removes a dropped topic's keys.
CREATE TABLE idempotency_keys (
    topic      text NOT NULL,
    key        text NOT NULL,
    event_id   uuid NOT NULL,
    "offset"   bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (topic, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- A topic's dedupe window in seconds; NULL takes the node's default
-- (ER_DEDUPE_WINDOW_SECONDS). A nullable column without a default: a catalog change only. No
-- CHECK constraint (Postgres would evaluate it on every update of `topics`, see 0006): the
-- node parses the window before storing it.
ALTER TABLE topics ADD COLUMN dedupe_window_seconds bigint;

CREATE FUNCTION idempotency_keys_of_dropped_topic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM idempotency_keys k USING old_rows o WHERE k.topic = o.name;
    RETURN NULL;
END
$$;
CREATE TRIGGER idempotency_keys_of_dropped_topic AFTER DELETE ON topics
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION idempotency_keys_of_dropped_topic();

-- Raised by a keyed publish whose key another transaction stored after the statement's
-- snapshot was taken (the same key at the same moment through two nodes): the statement,
-- and with it the offsets it reserved, is undone, and the writer runs it again, now seeing
-- the key as stored. SQLSTATE ER409 is how the writer recognises it.
CREATE FUNCTION eventrelay_key_raced() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'ER409',
        MESSAGE = 'an idempotency key was stored by a concurrent publish';
END
$$;

-- Producer fencing: the highest epoch each producer id has published with, per topic. A
-- publish with a lower epoch is refused ("fenced"). Kept for the topic's life (one row per
-- producer id).
CREATE TABLE producer_epochs (
    topic       text NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    producer_id text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, producer_id)
);
