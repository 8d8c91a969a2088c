-- The charge-scheduler (DESIGN §3, §5).

-- A command the fleet sends itself (the scheduler's payment_session.create) names where to answer.
ALTER TABLE outbox ADD COLUMN reply_to TEXT;

CREATE TABLE schedules (
    id                TEXT        PRIMARY KEY,
    merchant_id       TEXT        NOT NULL,
    mandate_id        TEXT        NOT NULL REFERENCES mandates (id),
    customer_id       TEXT        NOT NULL,
    payment_method_id TEXT        NOT NULL,
    -- The first_in_series that set it up: one schedule per session, however often its event comes.
    source_session_id TEXT        NOT NULL UNIQUE,
    status            TEXT        NOT NULL CHECK (status IN ('active', 'paused', 'completed', 'cancelled', 'stopped')),
    amount            BIGINT      NOT NULL CHECK (amount > 0),
    currency          TEXT        NOT NULL,
    recurrence        JSONB       NOT NULL,
    -- Cycle n falls on due_date(recurrence, anchor, n) at the configured time of day.
    anchor            DATE        NOT NULL,
    next_cycle        INT         NOT NULL,
    next_charge_at    TIMESTAMPTZ,
    -- A charge of it is being made: nothing more until its outcome is known.
    in_flight         BOOLEAN     NOT NULL DEFAULT false,
    occurrences       INT         NOT NULL DEFAULT 0,
    amount_charged    BIGINT      NOT NULL DEFAULT 0,
    max_occurrences   INT,
    retries           INT         NOT NULL DEFAULT 0,
    retries_total     INT         NOT NULL DEFAULT 0,
    stop_reason       TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_charge_at) WHERE status = 'active' AND NOT in_flight;
CREATE INDEX schedules_mandate ON schedules (mandate_id);

-- Each charge asked for: (schedule, cycle, retry) is its identity, and its
-- idempotency key at intake derives from it, so no cycle is charged twice.
CREATE TABLE schedule_runs (
    schedule_id        TEXT        NOT NULL REFERENCES schedules (id),
    cycle              INT         NOT NULL,
    retry              INT         NOT NULL,
    payment_session_id TEXT        UNIQUE,
    outcome            TEXT        CHECK (outcome IN ('paid', 'unpaid', 'refused')),
    error_code         TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at        TIMESTAMPTZ,
    PRIMARY KEY (schedule_id, cycle, retry)
);

CREATE TABLE schedule_triggers (
    id             TEXT        PRIMARY KEY,
    merchant_id    TEXT        NOT NULL,
    idempotency_key TEXT,
    reply_to       TEXT,
    correlation_id TEXT,
    items          INT         NOT NULL,
    replied_at     TIMESTAMPTZ,
    completed_at   TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE schedule_trigger_items (
    trigger_id         TEXT        NOT NULL REFERENCES schedule_triggers (id),
    idx                INT         NOT NULL,
    merchant_id        TEXT        NOT NULL,
    -- The mandate or saved method charged, and the merchant's reference: what a duplicate is.
    target             TEXT,
    external_reference TEXT,
    request            JSONB,
    status             TEXT        NOT NULL CHECK (status IN ('refused', 'queued', 'sent', 'created', 'ended')),
    payment_session_id TEXT        UNIQUE,
    error              JSONB,
    outcome            TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (trigger_id, idx)
);
CREATE INDEX schedule_trigger_items_queued ON schedule_trigger_items (created_at) WHERE status = 'queued';
CREATE INDEX schedule_trigger_items_duplicates ON schedule_trigger_items (merchant_id, target, external_reference, created_at);
