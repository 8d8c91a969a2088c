-- The payment object and refunds (DESIGN §9).

-- A session has at most one payment, so its amounts live on the session's row:
-- the row every change to the payment already locks, which is also what keeps
-- concurrent refunds of one payment in line.
ALTER TABLE payment_sessions
    ADD COLUMN payment_created_at TIMESTAMPTZ,
    ADD COLUMN authorised_amount  BIGINT NOT NULL DEFAULT 0 CHECK (authorised_amount >= 0),
    ADD COLUMN paid_amount        BIGINT NOT NULL DEFAULT 0 CHECK (paid_amount >= 0),
    ADD COLUMN voided_amount      BIGINT NOT NULL DEFAULT 0 CHECK (voided_amount >= 0),
    ADD COLUMN refunded_amount    BIGINT NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    -- The last line of the rule that refunds never pass what was paid.
    ADD CONSTRAINT payment_sessions_refunds_within_paid CHECK (refunded_amount <= paid_amount);

-- Sessions that were paying before this migration: their payment from what is known.
UPDATE payment_sessions s SET
    payment_created_at = coalesce(a.started, s.created_at),
    authorised_amount  = coalesce(a.authorised, 0),
    paid_amount        = coalesce(a.paid, 0),
    voided_amount      = CASE WHEN a.settlement = 'voided' THEN coalesce(a.authorised, 0)
                              WHEN a.settlement = 'captured' THEN coalesce(a.authorised, 0) - coalesce(a.paid, 0)
                              ELSE 0 END
FROM (SELECT DISTINCT ON (session_id) session_id, min(created_at) OVER (PARTITION BY session_id) AS started,
             CASE WHEN status = 'succeeded' THEN amount END AS authorised, captured_amount AS paid, settlement
      FROM payment_attempts ORDER BY session_id, (status = 'succeeded') DESC, created_at DESC) a
WHERE a.session_id = s.id AND s.payment_outcome <> 'not_started';

CREATE TABLE refunds (
    id                        TEXT        PRIMARY KEY,
    merchant_id               TEXT        NOT NULL,
    session_id                TEXT        NOT NULL REFERENCES payment_sessions (id),
    -- The attempt whose payment is refunded: the processor refunds that charge.
    attempt_id                TEXT        NOT NULL REFERENCES payment_attempts (id),
    amount                    BIGINT      NOT NULL CHECK (amount > 0),
    currency                  TEXT        NOT NULL,
    status                    TEXT        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason                    TEXT        CHECK (reason IN ('duplicate', 'fraudulent', 'requested_by_customer')),
    failure_reason            TEXT,
    metadata                  JSONB       NOT NULL DEFAULT '{}',
    processor_idempotency_key TEXT        NOT NULL UNIQUE,
    processor_reference       TEXT,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refunds_session ON refunds (session_id);
-- The sweep asks again about refunds with no answer: only those are read.
CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'pending';

-- The sandbox refunds against the authorisation a refund names, and records
-- what the card does with refunds when it is authorised (its number may be
-- forgotten by the time a refund comes).
ALTER TABLE sandbox_ledger DROP CONSTRAINT sandbox_ledger_operation_check;
ALTER TABLE sandbox_ledger ADD CONSTRAINT sandbox_ledger_operation_check CHECK (operation IN ('authorize', 'capture', 'void', 'refund'));
ALTER TABLE sandbox_ledger
    ADD COLUMN authorization_key TEXT,
    ADD COLUMN refunds_fail      BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX sandbox_ledger_refunds ON sandbox_ledger (authorization_key) WHERE operation = 'refund';

-- Reads (payment_session.list, mandate.list) page a merchant's rows newest
-- first by id (time-ordered): an index in that order reads one page, where
-- the (merchant_id, created_at) index made every page sort all of them.
CREATE INDEX payment_sessions_merchant_page ON payment_sessions (merchant_id, id);
CREATE INDEX mandates_merchant_page ON mandates (merchant_id, id);
