-- Webhook dispatch (DESIGN §6).

CREATE TABLE webhook_endpoints (
    id                         TEXT        PRIMARY KEY,
    merchant_id                TEXT        NOT NULL,
    url                        TEXT        NOT NULL,
    enabled_events             TEXT[]      NOT NULL,
    -- Needed in the clear to sign; readable by the dispatcher's role only.
    secret                     TEXT        NOT NULL,
    previous_secret            TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    status                     TEXT        NOT NULL CHECK (status IN ('enabled', 'disabled', 'deleted')),
    disabled_reason            TEXT,
    -- Start of the current unbroken run of failures; any success clears it.
    failing_since              TIMESTAMPTZ,
    created_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id) WHERE status = 'enabled';

-- Every event, byte for byte as published: what is signed is what is sent.
CREATE TABLE webhook_events (
    id          TEXT        PRIMARY KEY,
    merchant_id TEXT        NOT NULL,
    type        TEXT        NOT NULL,
    payload     BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_merchant ON webhook_events (merchant_id, created_at);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL   PRIMARY KEY,
    event_id        TEXT        NOT NULL REFERENCES webhook_events (id),
    endpoint_id     TEXT        NOT NULL REFERENCES webhook_endpoints (id),
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INT         NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A worker holds the delivery until then; a crashed worker's lease runs out.
    lease_until     TIMESTAMPTZ,
    last_status     INT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id            BIGSERIAL   PRIMARY KEY,
    delivery_id   BIGINT      NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    status_code   INT,
    latency_ms    INT         NOT NULL,
    -- The first 1 KiB of the receiver's answer.
    response_body TEXT,
    error         TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

-- Deliveries that exhausted their retries (or whose endpoint went away): what an operator looks at.
CREATE VIEW webhook_dead_letters AS
SELECT d.id AS delivery_id, e.merchant_id, d.event_id, e.type AS event_type, d.endpoint_id, p.url,
       d.attempts, d.last_status, d.last_error, d.finished_at
FROM webhook_deliveries d
JOIN webhook_events e ON e.id = d.event_id
JOIN webhook_endpoints p ON p.id = d.endpoint_id
WHERE d.status = 'failed';
