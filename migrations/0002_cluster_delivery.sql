-- Cluster membership and webhook delivery state.

-- Live nodes. Each node upserts its row every second; a row whose heartbeat is older than the
-- node TTL is treated as gone (its process died), and a node deletes its own row on graceful
-- shutdown so its subscriptions move at once.
CREATE TABLE cluster_nodes (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Delivery position of each webhook subscription. `delivered_offset` is the last offset that
-- was acknowledged (or given up on); `epoch` is the fencing token: it is incremented every time
-- a node acquires the subscription (and by a cursor reset), and every write that advances the
-- cursor names the epoch it was acquired under, so a deposed owner can never move it.
CREATE TABLE subscription_cursors (
    subscription_id  uuid PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    delivered_offset bigint NOT NULL DEFAULT 0,
    epoch            bigint NOT NULL DEFAULT 0,
    owner_node       uuid,
    -- Failed attempts so far at the event after delivered_offset, and when to try it again.
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
