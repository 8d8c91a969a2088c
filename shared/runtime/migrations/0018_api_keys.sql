-- Keys the HTTP API takes as `Authorization: Bearer sk_test_…|sk_…` (DESIGN §12),
-- made and revoked with `psctl keys`. The key itself is never stored: its id (the
-- public part, for lookups, lists and logs) and a SHA-256 of the whole key, compared
-- in constant time.
CREATE TABLE api_keys (
    id          TEXT        PRIMARY KEY,
    merchant_id TEXT        NOT NULL,
    mode        TEXT        NOT NULL CHECK (mode IN ('test', 'live')),
    key_sha256  BYTEA       NOT NULL CHECK (octet_length(key_sha256) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id, created_at);
