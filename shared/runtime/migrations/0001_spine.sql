-- Messaging plumbing (DESIGN §5).

-- One row per message a consumer has applied; a redelivery finds its row and changes nothing.
CREATE TABLE processed_messages (
    consumer     TEXT        NOT NULL,
    message_key  TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The reply sent, so a republished message is answered again rather than ignored.
    reply        JSONB,
    PRIMARY KEY (consumer, message_key)
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);

-- Messages written in the same transaction as the change they announce; the relay publishes them.
CREATE TABLE outbox (
    id              BIGSERIAL   PRIMARY KEY,
    exchange        TEXT        NOT NULL,
    routing_key     TEXT        NOT NULL,
    message_id      TEXT,
    correlation_id  TEXT,
    headers         JSONB       NOT NULL DEFAULT '{}',
    body            BYTEA       NOT NULL,
    kind            TEXT        NOT NULL CHECK (kind IN ('durable', 'reply')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INT         NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    published_at    TIMESTAMPTZ,
    failed_at       TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE published_at IS NULL AND failed_at IS NULL;

-- Idempotency keys per merchant, kept 24 h, holding the reply a replay returns.
CREATE TABLE idempotency_keys (
    merchant_id  TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    command      TEXT        NOT NULL,
    request_hash TEXT        NOT NULL,
    reply        JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- Payment domain. Every row carries its merchant; every lookup filters on it.

CREATE TABLE customers (
    id          TEXT        PRIMARY KEY,
    merchant_id TEXT        NOT NULL,
    name        TEXT,
    email       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX customers_merchant ON customers (merchant_id);

CREATE TABLE payment_methods (
    id          TEXT        PRIMARY KEY,
    merchant_id TEXT        NOT NULL,
    customer_id TEXT        NOT NULL REFERENCES customers (id),
    usage       TEXT        NOT NULL CHECK (usage IN ('on_session', 'off_session')),
    card_brand  TEXT        NOT NULL,
    card_last4  TEXT        NOT NULL CHECK (card_last4 ~ '^[0-9]{4}$'),
    exp_month   INT         NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year    INT         NOT NULL,
    -- The sandbox vault's token: never a card number.
    vault_token TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payment_methods_customer ON payment_methods (merchant_id, customer_id);

CREATE TABLE mandates (
    id                TEXT        PRIMARY KEY,
    merchant_id       TEXT        NOT NULL,
    customer_id       TEXT        NOT NULL REFERENCES customers (id),
    payment_method_id TEXT        NOT NULL REFERENCES payment_methods (id),
    status            TEXT        NOT NULL CHECK (status IN ('active', 'revoked', 'expired')),
    terms             JSONB       NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX mandates_payment_method ON mandates (merchant_id, payment_method_id);

CREATE TABLE payment_sessions (
    id                   TEXT        PRIMARY KEY,
    merchant_id          TEXT        NOT NULL,
    type                 TEXT        NOT NULL CHECK (type IN ('one_time', 'first_in_series', 'next_in_series')),
    status               TEXT        NOT NULL CHECK (status IN ('active', 'completed', 'expired', 'cancelled')),
    payment_outcome      TEXT        NOT NULL CHECK (payment_outcome IN
                             ('not_started', 'pending', 'paid', 'unpaid', 'reserved', 'payment_method_verified')),
    amount               BIGINT      NOT NULL CHECK (amount >= 0),
    currency             TEXT        NOT NULL,
    capture_method       TEXT        NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    save_payment_method  TEXT        NOT NULL CHECK (save_payment_method IN ('always', 'never', 'prompt')),
    customer_id          TEXT        REFERENCES customers (id),
    payment_method_id    TEXT        REFERENCES payment_methods (id),
    mandate_id           TEXT        REFERENCES mandates (id),
    -- Bearer capability for the hosted checkout; cleared when the session ends.
    checkout_token       TEXT        UNIQUE,
    session_url          TEXT,
    return_url           TEXT,
    expires_at           TIMESTAMPTZ,
    last_payment_error   JSONB,
    metadata             JSONB       NOT NULL DEFAULT '{}',
    external_reference   TEXT,
    mode                 TEXT        NOT NULL CHECK (mode IN ('test', 'live')),
    mandate_terms        JSONB,
    subscription_options JSONB,
    version              INT         NOT NULL DEFAULT 1,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payment_sessions_merchant ON payment_sessions (merchant_id, created_at);
CREATE INDEX payment_sessions_mandate ON payment_sessions (mandate_id) WHERE mandate_id IS NOT NULL;
CREATE INDEX payment_sessions_expiry ON payment_sessions (expires_at) WHERE status = 'active';

-- One try at paying a session. Its id derives the processor's idempotency key.
CREATE TABLE payment_attempts (
    id                        TEXT        PRIMARY KEY,
    session_id                TEXT        NOT NULL REFERENCES payment_sessions (id),
    merchant_id               TEXT        NOT NULL,
    amount                    BIGINT      NOT NULL,
    currency                  TEXT        NOT NULL,
    status                    TEXT        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'unknown')),
    processor_idempotency_key TEXT        NOT NULL UNIQUE,
    error_code                TEXT,
    decline_code              TEXT,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payment_attempts_session ON payment_attempts (session_id);
