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
    /// DESIGN §13: how the merchant's checkout looks.
    pub const CHECKOUT_SETTINGS_UPDATE: &str = "checkout_settings.update";
    pub const CHECKOUT_SETTINGS_RETRIEVE: &str = "checkout_settings.retrieve";
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

    /// Commands that only read (DESIGN §9): answered each time they arrive,
    /// never deduplicated or replayed, since they change nothing (DESIGN §5).
    pub const READS: &[&str] =
        &[SESSION_RETRIEVE, SESSION_LIST, MANDATE_RETRIEVE, MANDATE_LIST, REFUND_RETRIEVE, SCHEDULE_RETRIEVE, SCHEDULE_LIST];

    pub fn is_read(routing_key: &str) -> bool {
        READS.contains(&routing_key)
    }
}

/// The fleet's services, as publishers: each registers the broker user it runs
/// as, and consumers of internal messages, events and replies accept them only
/// from the service that sends them (DESIGN §10).
pub mod service {
    pub const INTAKE: &str = "session-intake";
    pub const CHECKOUT: &str = "checkout";
    pub const GATEWAY: &str = "payment-gateway";
    pub const LIFECYCLE: &str = "session-lifecycle";
    pub const SCHEDULER: &str = "charge-scheduler";
    pub const WEBHOOKS: &str = "webhook-dispatch";
    pub const ALL: &[&str] = &[INTAKE, CHECKOUT, GATEWAY, LIFECYCLE, SCHEDULER, WEBHOOKS];
}

/// Routing keys on `payment_sessions.internal`.
pub mod internal {
    pub const GATEWAY_AUTHORIZE: &str = "gateway.authorize";
    pub const GATEWAY_CAPTURE: &str = "gateway.capture";
    pub const GATEWAY_VOID: &str = "gateway.void";
    pub const GATEWAY_RESULT: &str = "gateway.result";
    pub const GATEWAY_RESOLVE: &str = "gateway.resolve";
    pub const GATEWAY_REFUND: &str = "gateway.refund";
    /// The customer's challenge is done (or given up): the checkout, or lifecycle at expiry.
    pub const GATEWAY_AUTHENTICATE: &str = "gateway.authenticate";
    /// A processor's dispute, told to lifecycle.
    pub const GATEWAY_DISPUTE: &str = "gateway.dispute";
    /// The customer cancelled at the checkout (issue 21): lifecycle cancels
    /// the session as any cancel is, and announces it.
    pub const CHECKOUT_CANCEL: &str = "checkout.cancel";
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
    /// Names the fleet's record of a dead letter (who published it, where, its
    /// body's digest): what `psctl dlq replay` trusts, never the headers above.
    pub const DEAD_LETTER_ID: &str = "x-dead-letter-id";
    /// The size of a body the fleet refused as too large and did not keep.
    pub const ORIGINAL_SIZE: &str = "x-original-size";
    /// What a replay was replayed from.
    pub const REPLAYED_FROM: &str = "x-replayed-from";

    /// Headers only the fleet or the broker writes (dead-letter reasons and
    /// origins, replay marks): a publisher's own are stripped on arrival, so
    /// none can pose as the fleet's (DESIGN §10).
    pub fn set_by_fleet(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        n.starts_with("x-original-")
            || n.starts_with("x-dead-letter-")
            || n.starts_with("x-death")
            || n.starts_with("x-first-death-")
            || n.starts_with("x-last-death-")
            || n == REPLAYED_FROM
            || n == IDEMPOTENT_REPLAYED
    }
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}
