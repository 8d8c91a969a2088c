-- Which broker users may act for which merchants (DESIGN §10). A command's
-- merchant-id counts only if its AMQP user_id (checked by RabbitMQ against the
-- connection's user) has a grant for that merchant, or for '*' (every merchant:
-- local mode's guest).
CREATE TABLE merchant_grants (
    broker_user TEXT        NOT NULL,
    merchant_id TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (broker_user, merchant_id)
);
