-- Trust boundaries, second pass (DESIGN §10).

-- Which broker user each fleet service publishes as, registered by each service
-- at start: consumers take internal messages, events and replies only from the
-- service that sends them.
CREATE TABLE fleet_members (
    service       TEXT        PRIMARY KEY,
    broker_user   TEXT        NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The fleet's own record of each message it dead-lettered: `psctl dlq replay`
-- sends a dead letter again as the publisher recorded here, to the exchange
-- recorded here, and only if its body is the one recorded here; never as the
-- message's headers say. Kept until the dead letter is replayed or discarded.
CREATE TABLE dead_letters (
    id          TEXT        PRIMARY KEY,
    queue       TEXT        NOT NULL,
    exchange    TEXT        NOT NULL,
    routing_key TEXT        NOT NULL,
    publisher   TEXT,
    message_id  TEXT,
    body_sha256 BYTEA       NOT NULL,
    code        TEXT        NOT NULL,
    replayed_at TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Shared plumbing tables, one row per service's work: under the deploy roles
-- each service reads and writes only its own rows (policies per role in
-- deploy/postgres/roles.sql). The schema owner (migrations, psctl) is not bound.
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE processed_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
-- Rows of no producer (before 0005) would be published by no relay now.
UPDATE outbox SET failed_at = now(), last_error = 'written before producers were recorded'
WHERE producer = '' AND published_at IS NULL AND failed_at IS NULL;

-- What an attempt was started with, so the gateway holds a request to all of it
-- (the saved method it charges, whether the card outlives the attempt).
ALTER TABLE payment_attempts
    ADD COLUMN payment_method_id TEXT,
    ADD COLUMN keep_card         BOOLEAN NOT NULL DEFAULT false;
UPDATE payment_attempts a SET payment_method_id = s.payment_method_id, keep_card = true
FROM payment_sessions s WHERE s.id = a.session_id AND a.source = 'merchant';

-- Queued trigger charges are sent merchant by merchant in turns (scheduler): each
-- merchant's oldest first, the merchant served longest ago first.
ALTER TABLE schedule_trigger_items ADD COLUMN sent_at TIMESTAMPTZ;
CREATE INDEX schedule_trigger_items_turns ON schedule_trigger_items (merchant_id, created_at, trigger_id, idx) WHERE status = 'queued';
CREATE INDEX schedule_trigger_items_served ON schedule_trigger_items (merchant_id, sent_at) WHERE sent_at IS NOT NULL;
