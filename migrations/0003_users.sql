-- Admin UI sign-in: users with Argon2id password hashes, and server-side sessions.
-- A session row is the only proof of sign-in: the cookie carries a random token whose SHA-256
-- is the key here, so a leaked table cannot be replayed as cookies. Each session has its own
-- CSRF token, which every form posts back.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Stored lowercased and trimmed, so sign-in is case-insensitive.
    email         text NOT NULL UNIQUE CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    expires_at  timestamptz NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expiry_idx ON sessions (expires_at);
