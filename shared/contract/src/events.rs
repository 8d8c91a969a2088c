//! Events services publish on `payment_sessions.events` (DESIGN §3, §4).

use crate::ids::EventId;
use crate::lifecycle::wire_enum;
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

wire_enum!(
    /// Every event type; the routing key on the events exchange is the type.
    /// `payment.disputed`'s data is the `dispute`; the others', the object named.
    EventType {
        PaymentSessionCreated => "payment_session.created",
        PaymentSessionUpdated => "payment_session.updated",
        PaymentSessionCompleted => "payment_session.completed",
        PaymentSucceeded => "payment.succeeded",
        PaymentAttemptFailed => "payment.attempt_failed",
        PaymentFailed => "payment.failed",
        PaymentCaptured => "payment.captured",
        PaymentVoided => "payment.voided",
        PaymentDisputed => "payment.disputed",
        RefundCreated => "refund.created",
        RefundSucceeded => "refund.succeeded",
        RefundFailed => "refund.failed",
        MandateCreated => "mandate.created",
        MandateRevoked => "mandate.revoked",
        WebhookEndpointDisabled => "webhook_endpoint.disabled",
        ScheduleCreated => "schedule.created",
        SchedulePaused => "schedule.paused",
        ScheduleResumed => "schedule.resumed",
        ScheduleCompleted => "schedule.completed",
        ScheduleCancelled => "schedule.cancelled",
        ScheduleStopped => "schedule.stopped",
        ScheduleTriggerCompleted => "schedule_trigger.completed",
    }
);

/// `{"id": "evt_…", "type", "created_at", "data": {object}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(event_type: EventType, created_at: DateTime<Utc>, data: serde_json::Value) -> Event {
        Event { id: EventId::generate(), event_type, created_at, data }
    }
}
