//! Names on the broker that are part of the contract (DESIGN §4).

/// Exchanges, before the optional test-isolation prefix.
pub mod exchange {
    pub const COMMANDS: &str = "payment_sessions.commands";
    pub const EVENTS: &str = "payment_sessions.events";
    pub const INTERNAL: &str = "payment_sessions.internal";
    pub const DEAD_LETTER: &str = "payment_sessions.dlx";
}

/// Command routing keys on `payment_sessions.commands`.
pub mod command {
    pub const SESSION_CREATE: &str = "payment_session.create";
    pub const SESSION_CANCEL: &str = "payment_session.cancel";
    pub const PAYMENT_CAPTURE: &str = "payment.capture";
    pub const PAYMENT_VOID: &str = "payment.void";
    pub const MANDATE_REVOKE: &str = "mandate.revoke";
    /// Reads (DESIGN §9): answered by reply only, they change nothing.
    pub const SESSION_RETRIEVE: &str = "payment_session.retrieve";
    pub const SESSION_LIST: &str = "payment_session.list";
    pub const MANDATE_RETRIEVE: &str = "mandate.retrieve";
    pub const MANDATE_LIST: &str = "mandate.list";
    pub const REFUND_CREATE: &str = "refund.create";
    pub const REFUND_RETRIEVE: &str = "refund.retrieve";
    pub const SCHEDULE_TRIGGER: &str = "schedule.trigger";
    pub const SCHEDULE_RETRIEVE: &str = "schedule.retrieve";
    pub const SCHEDULE_LIST: &str = "schedule.list";
    pub const SCHEDULE_PAUSE: &str = "schedule.pause";
    pub const SCHEDULE_RESUME: &str = "schedule.resume";
    pub const SCHEDULE_CANCEL: &str = "schedule.cancel";
    pub const WEBHOOK_ENDPOINT_CREATE: &str = "webhook_endpoint.create";
    pub const WEBHOOK_ENDPOINT_DELETE: &str = "webhook_endpoint.delete";
    /// Not in DESIGN §4's list: new secret, old one still signs for 24 h.
    pub const WEBHOOK_ENDPOINT_ROTATE_SECRET: &str = "webhook_endpoint.rotate_secret";
    pub const WEBHOOK_EVENT_REDELIVER: &str = "webhook_event.redeliver";
    /// Not in DESIGN §4's list: an operator (or the merchant) turns an endpoint
    /// back on after the dispatcher disabled it, or off by hand.
    pub const WEBHOOK_ENDPOINT_ENABLE: &str = "webhook_endpoint.enable";
    pub const WEBHOOK_ENDPOINT_DISABLE: &str = "webhook_endpoint.disable";
}

/// Routing keys on `payment_sessions.internal`.
pub mod internal {
    pub const GATEWAY_AUTHORIZE: &str = "gateway.authorize";
    pub const GATEWAY_CAPTURE: &str = "gateway.capture";
    pub const GATEWAY_VOID: &str = "gateway.void";
    pub const GATEWAY_RESULT: &str = "gateway.result";
    pub const GATEWAY_RESOLVE: &str = "gateway.resolve";
    pub const GATEWAY_REFUND: &str = "gateway.refund";
}

/// AMQP header names.
pub mod header {
    pub const MERCHANT_ID: &str = "merchant-id";
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
    /// Why a message was dead-lettered by a service (RabbitMQ's own `x-death` says when and where).
    pub const DEAD_LETTER_REASON: &str = "x-dead-letter-reason";
    pub const DEAD_LETTER_CODE: &str = "x-dead-letter-code";
    pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
    /// The broker user that published a message a service dead-lettered: a
    /// replay is sent as that user again (DESIGN §10).
    pub const ORIGINAL_USER_ID: &str = "x-original-user-id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}
