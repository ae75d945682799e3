-- Non-durable events too large for a NOTIFY payload (8000 bytes), announced while Redis is
-- absent or down: the announcing node writes them here and NOTIFYs the row's id, and the
-- other nodes read the row. UNLOGGED: these events are best effort and live only, so they
-- need no WAL; rows older than a minute are deleted by the next node that spills.
CREATE UNLOGGED TABLE live_spill (
    id         bigserial PRIMARY KEY,
    payload    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON live_spill (created_at);
