-- The scratch tables of loadtest/keys/wal.sh: an events table like a topic's (columns and indexes
-- trimmed to the ones that cost), and one keys table per layout measured.
DROP TABLE IF EXISTS ev, k_old, k_new, k_newb, k_textc CASCADE;
DROP SEQUENCE IF EXISTS offs, kseq;
CREATE SEQUENCE offs; CREATE SEQUENCE kseq;
CREATE TABLE ev ("offset" bigint PRIMARY KEY, id uuid NOT NULL, name text NOT NULL,
  topic_identifier text NOT NULL DEFAULT '', data jsonb NOT NULL, source text NOT NULL DEFAULT '',
  occurred_at timestamptz NOT NULL, context jsonb NOT NULL DEFAULT '{}', inserted_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON ev (topic_identifier, "offset"); CREATE INDEX ON ev (name, "offset");
CREATE TABLE k_old (topic text NOT NULL, key text NOT NULL, event_id uuid NOT NULL, "offset" bigint NOT NULL,
  expires_at timestamptz NOT NULL, PRIMARY KEY (topic, key));
CREATE INDEX ON k_old (expires_at);
CREATE TABLE k_new (topic_id uuid NOT NULL, hash uuid NOT NULL, event_id uuid NOT NULL, "offset" bigint NOT NULL,
  expires_at timestamptz NOT NULL, PRIMARY KEY (topic_id, hash));
CREATE INDEX ON k_new USING brin (expires_at);
CREATE TABLE k_newb (topic_id uuid NOT NULL, hash uuid NOT NULL, event_id uuid NOT NULL, "offset" bigint NOT NULL,
  expires_at timestamptz NOT NULL, PRIMARY KEY (topic_id, hash));
CREATE INDEX ON k_newb (expires_at);
CREATE TABLE k_textc (topic_id uuid NOT NULL, key text COLLATE "C" NOT NULL, event_id uuid NOT NULL, "offset" bigint NOT NULL,
  expires_at timestamptz NOT NULL, PRIMARY KEY (topic_id, key));
CREATE INDEX ON k_textc USING brin (expires_at);
DROP TABLE IF EXISTS k_one, k_textcb CASCADE;
CREATE TABLE k_one (digest uuid PRIMARY KEY, event_id uuid NOT NULL, "offset" bigint NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX ON k_one USING brin (expires_at);
CREATE TABLE k_textcb (topic_id uuid NOT NULL, key text COLLATE "C" NOT NULL, event_id uuid NOT NULL, "offset" bigint NOT NULL,
  expires_at timestamptz NOT NULL, PRIMARY KEY (topic_id, key));
CREATE INDEX ON k_textcb (expires_at);
