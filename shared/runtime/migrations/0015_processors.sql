-- Processors and customer authentication (DESIGN §11).

-- An attempt may wait for the customer to authenticate (3-D Secure): what the
-- checkout shows meanwhile is kept with it (the kind of challenge, and for
-- Stripe the intent's client secret, which lets its holder finish this one
-- payment and nothing else).
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_status_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_status_check
    CHECK (status IN ('pending', 'requires_action', 'succeeded', 'failed', 'abandoned'));
ALTER TABLE payment_attempts ADD COLUMN next_action JSONB;
-- A card entered at checkout and kept: for what later use (the gateway holds
-- an authorize to it, and tells the processor).
ALTER TABLE payment_attempts ADD COLUMN save_for TEXT CHECK (save_for IN ('off_session', 'on_session'));
-- Lifecycle's expiry sweep gives up on challenges of expired sessions.
CREATE INDEX payment_attempts_requiring_action ON payment_attempts (session_id) WHERE status = 'requires_action';

-- The checkout's own record of a challenge the customer has answered: the page
-- then waits for the processor's word instead of asking again.
CREATE TABLE checkout_challenges (
    attempt_id  TEXT        PRIMARY KEY,
    completed   BOOLEAN     NOT NULL,
    answered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The sandbox's challenge: what its issuer decides once the customer has
-- authenticated (the card's own answer), kept with the call that asked.
ALTER TABLE sandbox_ledger DROP CONSTRAINT sandbox_ledger_outcome_check;
ALTER TABLE sandbox_ledger ADD CONSTRAINT sandbox_ledger_outcome_check CHECK (outcome IN ('succeeded', 'failed', 'requires_action'));
ALTER TABLE sandbox_ledger
    ADD COLUMN after_auth_outcome      TEXT CHECK (after_auth_outcome IN ('succeeded', 'failed')),
    ADD COLUMN after_auth_error_code   TEXT,
    ADD COLUMN after_auth_decline_code TEXT;

-- A processor's own references for a vaulted card: Stripe's PaymentMethod
-- (made from the card when it is vaulted) and the Customer it is attached to
-- once saved for later use.
ALTER TABLE vault_cards
    ADD COLUMN processor_method   TEXT,
    ADD COLUMN processor_customer TEXT;

-- The processor's object behind each of our keys (a PaymentIntent, a
-- SetupIntent, a refund), recorded the moment it exists: how an unknown outcome
-- is resolved from the processor's record, and how its events find their attempt.
CREATE TABLE processor_objects (
    idempotency_key TEXT        PRIMARY KEY,
    object_id       TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX processor_objects_object ON processor_objects (object_id);

-- The processor's events (webhooks), each applied once by its id.
CREATE TABLE processor_events (
    event_id    TEXT        PRIMARY KEY,
    type        TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE processor_calls DROP CONSTRAINT processor_calls_result_check;
ALTER TABLE processor_calls ADD CONSTRAINT processor_calls_result_check
    CHECK (result IN ('succeeded', 'failed', 'requires_action', 'timeout', 'resolved_by_lookup', 'resolved_no_record', 'pending', 'error'));
