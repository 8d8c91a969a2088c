-- Paying: checkout attempts, the gateway's vault and sandbox processor, settlement.

ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_status_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'abandoned'));
ALTER TABLE payment_attempts
    ADD COLUMN source              TEXT    NOT NULL DEFAULT 'merchant' CHECK (source IN ('checkout', 'merchant')),
    -- The vault's token for a card entered at checkout. Never a card number.
    ADD COLUMN card_token          TEXT,
    -- The customer ticked "save this card" (one_time with save_payment_method = prompt).
    ADD COLUMN save_card           BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN capture_method      TEXT    NOT NULL DEFAULT 'automatic' CHECK (capture_method IN ('automatic', 'manual')),
    ADD COLUMN captured_amount     BIGINT,
    ADD COLUMN settlement          TEXT    CHECK (settlement IN ('capture_requested', 'captured', 'void_requested', 'voided')),
    ADD COLUMN processor_reference TEXT;
CREATE UNIQUE INDEX payment_attempts_one_pending ON payment_attempts (session_id) WHERE status = 'pending';

-- The sandbox vault: the only table that holds a card number. Only the gateway reads it.
CREATE TABLE vault_cards (
    token      TEXT        PRIMARY KEY,
    pan        TEXT        NOT NULL,
    brand      TEXT        NOT NULL,
    last4      TEXT        NOT NULL,
    exp_month  INT         NOT NULL,
    exp_year   INT         NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The sandbox processor's own ledger: one row per idempotency key, as a real
-- processor keeps. Counting it is how tests prove money moved once.
CREATE TABLE sandbox_ledger (
    idempotency_key TEXT        PRIMARY KEY,
    operation       TEXT        NOT NULL CHECK (operation IN ('authorize', 'capture', 'void')),
    card_token      TEXT,
    amount          BIGINT      NOT NULL,
    currency        TEXT        NOT NULL,
    outcome         TEXT        NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    error_code      TEXT,
    decline_code    TEXT,
    reference       TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every call the gateway made to its processor, for support and reconciliation.
CREATE TABLE processor_calls (
    id              BIGSERIAL   PRIMARY KEY,
    attempt_id      TEXT        NOT NULL,
    operation       TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    result          TEXT        NOT NULL CHECK (result IN ('succeeded', 'failed', 'timeout', 'resolved_by_lookup', 'error')),
    latency_ms      INT         NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX processor_calls_attempt ON processor_calls (attempt_id);
