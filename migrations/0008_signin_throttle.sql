-- Sign-in throttling of the admin UI, shared by every node: wrong passwords counted per
-- source address, per email, and per (email, address) pair, each in a fixed window that starts
-- at its first failure. See src/users/throttle.rs for the policy.
CREATE TABLE signin_failures (
    scope        text NOT NULL CHECK (scope IN ('addr', 'email', 'pair')),
    key          text NOT NULL,
    window_start timestamptz NOT NULL DEFAULT now(),
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key)
);
CREATE INDEX signin_failures_window_idx ON signin_failures (window_start);
