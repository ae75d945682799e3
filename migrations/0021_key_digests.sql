-- Idempotency keys by fixed-width identity: `idempotency_digests` replaces `idempotency_keys`
-- (0020) for this version's writer (src/events/keyed.rs).
--
-- A key is stored as a 16-byte digest of its topic's id and the key, two `bigint`s: the first
-- 16 bytes of the SHA-256 of the key's UTF-8 bytes (computed by the writer), XORed with the
-- topic's id (once per statement, in SQL). The primary key compares two integers where
-- (topic, key) text compared through the database's collation (strcoll, for C.UTF-8 and
-- en_US.UTF-8 alike), and its entries and rows are 16 bytes smaller than with a separate topic
-- id column (docs/decisions.md has the measurements). The topic's id, not its name: a topic
-- dropped and created again under its name has a new id, so the old topic's keys never match
-- the new one's; they stay until their window ends and the pruner deletes them. Two distinct
-- (topic, key) pairs share a digest with probability about n^2 / 2^129 for n keys inside the
-- window (one in 10^21 for a billion keys), and finding such a pair on purpose takes about
-- 2^64 SHA-256 evaluations.
--
-- Expiry is pruned through a BRIN index: keys are inserted in the order of their expiry
-- (roughly: windows differ per topic), and a BRIN index costs an insert nothing while its
-- page range is not summarized. The btree on `expires_at` was a second index insert per key.
CREATE FUNCTION idempotency_key_digest(topic_id uuid, key text,
                                       OUT digest_hi bigint, OUT digest_lo bigint)
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || encode(substring(h FROM 1 FOR 8), 'hex'))::bit(64)::bigint
               # ('x' || encode(substring(t FROM 1 FOR 8), 'hex'))::bit(64)::bigint,
           ('x' || encode(substring(h FROM 9 FOR 8), 'hex'))::bit(64)::bigint
               # ('x' || encode(substring(t FROM 9 FOR 8), 'hex'))::bit(64)::bigint
    FROM (SELECT sha256(convert_to(key, 'UTF8')) AS h, uuid_send(topic_id) AS t) s
$$;

CREATE TABLE idempotency_digests (
    digest_hi  bigint NOT NULL,
    digest_lo  bigint NOT NULL,
    event_id   uuid NOT NULL,
    "offset"   bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT idempotency_digests_pkey PRIMARY KEY (digest_hi, digest_lo)
);
CREATE INDEX idempotency_digests_expiry ON idempotency_digests USING brin (expires_at);

-- The keys stored so far, inside their window.
INSERT INTO idempotency_digests (digest_hi, digest_lo, event_id, "offset", expires_at)
SELECT d.digest_hi, d.digest_lo, k.event_id, k."offset", k.expires_at
FROM idempotency_keys k JOIN topics t ON t.name = k.topic,
     idempotency_key_digest(t.id, k.key) d
WHERE k.expires_at > now()
ON CONFLICT DO NOTHING;

-- The rolling upgrade: nodes of the previous version still write `idempotency_keys`. Each of
-- their inserts and take-overs is carried into `idempotency_digests` in the same statement,
-- so new nodes dedupe what old nodes stored. A key an old node stores while a new node's
-- digest of it is live (the old node cannot see it) raises ER409 instead: the old node's
-- writer undoes the statement and runs it again, and after its retries answers UNAVAILABLE,
-- so the producer retries, on a new node sooner or later, and is answered with the original.
-- One copy per key either way. The release after this one, when no node of the previous
-- version can be running, drops these triggers and `idempotency_keys`.
CREATE FUNCTION idempotency_keys_to_digests() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    carried bigint;
BEGIN
    SELECT count(*) INTO wanted FROM new_rows n JOIN topics t ON t.name = n.topic;
    WITH c AS (
        INSERT INTO idempotency_digests AS x (digest_hi, digest_lo, event_id, "offset",
                                             expires_at)
        SELECT d.digest_hi, d.digest_lo, n.event_id, n."offset", n.expires_at
        FROM new_rows n JOIN topics t ON t.name = n.topic,
             idempotency_key_digest(t.id, n.key) d
        ON CONFLICT (digest_hi, digest_lo) DO UPDATE
            SET event_id = EXCLUDED.event_id, "offset" = EXCLUDED."offset",
                expires_at = EXCLUDED.expires_at
            WHERE x.expires_at <= now() OR x.event_id = EXCLUDED.event_id
        RETURNING 1
    )
    SELECT count(*) INTO carried FROM c;
    IF carried < wanted THEN
        PERFORM eventrelay_key_raced();
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER idempotency_keys_inserted_to_digests AFTER INSERT ON idempotency_keys
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION idempotency_keys_to_digests();
CREATE TRIGGER idempotency_keys_updated_to_digests AFTER UPDATE ON idempotency_keys
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION idempotency_keys_to_digests();
