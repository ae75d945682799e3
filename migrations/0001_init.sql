-- EventRelay core schema. Per-topic tables (<name>_events, <name>_deliveries) are created at
-- run time by the topics service; nothing here may end in _events or _deliveries, so a topic
-- name can never collide with a system table.

CREATE TABLE topics (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_]{1,50}$'),
    -- Highest offset handed out. Publishers lock this row (UPDATE ... RETURNING) for the rest of
    -- their transaction, so offsets are contiguous and become visible in commit order.
    last_offset bigint NOT NULL DEFAULT 0,
    inserted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
    id                uuid PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    topic_name        text NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    topic_identifier  text NOT NULL DEFAULT '',
    push              boolean NOT NULL DEFAULT false,
    paused            boolean NOT NULL DEFAULT false,
    subscription_type text NOT NULL,
    config            jsonb NOT NULL DEFAULT '{}',
    signing_secret    text NOT NULL,
    inserted_at       timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_topic_idx ON subscriptions (topic_name);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    key         text NOT NULL UNIQUE,
    -- SHA-256 of the secret: secrets are 64 random characters, so a fast hash is enough and
    -- the plain secret is never stored.
    secret_hash bytea NOT NULL,
    key_type    text NOT NULL CHECK (key_type IN ('admin', 'producer', 'consumer')),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    name        text NOT NULL DEFAULT '',
    inserted_at timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE api_key_topics (
    api_key_id       uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    topic_name       text NOT NULL,
    topic_identifier text NOT NULL DEFAULT '',
    PRIMARY KEY (api_key_id, topic_name, topic_identifier)
);

CREATE TABLE api_key_subscriptions (
    api_key_id      uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    PRIMARY KEY (api_key_id, subscription_id)
);

CREATE TABLE dead_letters (
    id          uuid PRIMARY KEY,
    topic       text NOT NULL,
    topic_name  text NOT NULL,
    event       jsonb NOT NULL,
    errors      text[] NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_topic_idx ON dead_letters (topic_name, inserted_at DESC);
CREATE INDEX dead_letters_time_idx ON dead_letters (inserted_at DESC);
