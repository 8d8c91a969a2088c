//! The wire contract as JSON Schemas (feature `schema`), generated from these
//! types: the objects, events and internal messages from the very types that
//! serialise them; the command bodies, which are parsed field by field for
//! precise errors, from the shapes below. `shared/contract/schemas/` and
//! `docs/asyncapi.json` are written from here, and the integration suite fails
//! when they drift, when an example does not validate, or when a live reply
//! does not.

use crate::events::EventType;
use crate::ids::{CustomerId, EventId, MandateId, PaymentMethodId, RefundId, ScheduleId, SessionId, TriggerId, WebhookEndpointId};
use crate::lifecycle::Status;
use crate::mandate::{MandateStatus, MandateType, ValidityPeriod};
use crate::money::{Amount, Currency};
use crate::payment::RefundReason;
use crate::schedule::ScheduleStatus;
use crate::session::{CaptureMethod, SavePaymentMethod};
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A type that is only its schema: a unit struct named `$name` whose JSON Schema is `$schema`.
macro_rules! fixed_schema {
    ($(#[$doc:meta])* $name:ident, $($schema:tt)+) => {
        $(#[$doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($($schema)+)
            }
        }
    };
}

fixed_schema! {
    /// RFC 3339 UTC to the second, e.g. `2026-11-24T09:15:00Z`.
    Timestamp, {"type": "string", "format": "date-time", "pattern": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}Z$"}
}

fixed_schema! {
    /// A string map of at most 50 keys (≤ 40 characters) and values (≤ 500).
    Metadata, {
        "type": "object",
        "maxProperties": crate::create::MAX_METADATA_KEYS,
        "propertyNames": {"minLength": 1, "maxLength": crate::create::MAX_METADATA_KEY_LEN},
        "additionalProperties": {"type": "string", "maxLength": crate::create::MAX_METADATA_VALUE_LEN}
    }
}

fixed_schema! {
    /// A BCP 47 language tag (`en`, `fr`, `pt-BR`): the checkout's language.
    LocaleTag, {"type": "string", "minLength": 2, "maxLength": crate::branding::Locale::MAX_LEN, "pattern": "^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"}
}

fixed_schema! {
    /// An absolute http(s) URL without credentials.
    HttpUrl, {"type": "string", "format": "uri", "pattern": "^https?://[^/@]+", "maxLength": crate::create::MAX_URL_LEN}
}

/// A new customer.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NewCustomer {
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    #[schemars(email, length(max = 254))]
    pub email: String,
}

/// `mandate_options.amount`: exact, or a range with either bound or both.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum MandateAmountOption {
    Exact(Amount),
    Range(AmountRange),
}

/// `{max}` alone is a ceiling, `{min}` alone a floor.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("minProperties" = 1))]
pub struct AmountRange {
    pub min: Option<Amount>,
    pub max: Option<Amount>,
}

/// `recurrence` as a create takes it: `on` a number (ours) or Moment's object.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RecurrenceOption {
    #[schemars(rename = "type")]
    pub kind: crate::mandate::RecurrenceType,
    #[schemars(range(min = 1, max = 366))]
    pub interval_count: Option<u32>,
    pub on: Option<OnOption>,
}

/// Weekday 1-7 (Monday = 1), day of month or of year; or Moment's object.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum OnOption {
    Day(#[schemars(range(min = 1, max = 366))] u32),
    Days(OnDays),
}

/// `{days: ["mon"]}`, `{type: "day_of_month", days: [1], adjustment: "nearest_weekday"}`:
/// one day, since a recurrence charges once per period.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OnDays {
    #[schemars(rename = "type")]
    pub kind: Option<OnKind>,
    #[schemars(length(min = 1, max = 1))]
    pub days: Vec<DayName>,
    pub adjustment: Option<crate::mandate::DayAdjustment>,
}

#[derive(JsonSchema)]
pub enum OnKind {
    #[schemars(rename = "day_of_week")]
    DayOfWeek,
    #[schemars(rename = "day_of_month")]
    DayOfMonth,
    #[schemars(rename = "day_of_year")]
    DayOfYear,
}

/// `mon` … `sun`, or a day number.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum DayName {
    Weekday(Weekday),
    Number(#[schemars(range(min = 1, max = 366))] u32),
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// `subscription_options`: `{}` takes everything from the mandate.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SubscriptionOptionsBody {
    /// Defaults to the mandate's recurrence.
    pub recurrence: Option<RecurrenceOption>,
    /// Defaults to the mandate's fixed amount, else the session's.
    pub amount: Option<PositiveAmount>,
    /// Within the mandate's validity period, which it defaults to.
    pub active_period: Option<ValidityPeriod>,
    pub start_date: Option<chrono::NaiveDate>,
    #[schemars(range(min = 1))]
    pub max_occurrences: Option<u32>,
    /// UTC, `HH:MM`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub scheduled_time: Option<String>,
}

fixed_schema! {
    /// Moment's pattern for `external_reference`.
    ExternalReference, {"type": "string", "minLength": 1, "maxLength": crate::create::MAX_EXTERNAL_REFERENCE_LEN, "pattern": "^[a-zA-Z0-9_-]+$"}
}

/// A `first_in_series`'s mandate terms; all optional (omitted: an unconstrained on-demand mandate).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MandateOptions {
    #[schemars(rename = "type")]
    pub mandate_type: Option<MandateType>,
    pub amount: Option<MandateAmountOption>,
    /// The session's currency, if given.
    pub currency: Option<Currency>,
    pub recurrence: Option<RecurrenceOption>,
    pub validity_period: Option<ValidityPeriod>,
    #[schemars(range(min = 1))]
    pub max_occurrences: Option<u32>,
    pub total_amount: Option<Amount>,
}

/// `checkout_options`: where the customer goes after the checkout, and whether it may keep their card.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CheckoutOptions {
    #[schemars(with = "Option<HttpUrl>")]
    pub return_url: Option<String>,
    /// `one_time` only.
    pub save_payment_method: Option<SavePaymentMethod>,
    #[schemars(range(min = 60, max = 604800))]
    pub expires_in: Option<i64>,
    /// `redirect` (default), or framed by a registered origin.
    pub presentation_mode: Option<crate::branding::PresentationMode>,
    /// The checkout's language (BCP 47); absent, the customer's browser decides.
    pub locale: Option<LocaleTag>,
}

/// `payment_method_options`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PaymentMethodOptions {
    pub card: Option<CardOptions>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CardOptions {
    pub capture_method: Option<CaptureMethod>,
}

/// Moment's nested form of a customer-present create; each field may be given
/// here or flat, not both.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("not" = {"required": ["customer", "customer_id"]}))]
pub struct PresentOptions {
    pub customer: Option<NewCustomer>,
    pub customer_id: Option<CustomerId>,
    pub checkout_options: Option<CheckoutOptions>,
    pub payment_method_options: Option<PaymentMethodOptions>,
    /// `first_in_series` only.
    pub mandate_options: Option<MandateOptions>,
    /// `first_in_series` only.
    pub subscription_options: Option<SubscriptionOptionsBody>,
}

/// Moment's nested form of a `next_in_series`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NextOptions {
    pub mandate_id: Option<MandateId>,
    pub customer_id: Option<CustomerId>,
    pub payment_method_id: Option<PaymentMethodId>,
    pub payment_method_options: Option<PaymentMethodOptions>,
}

/// `type` of a body: a constant.
pub struct TypeTag<const N: usize>;

const TYPE_NAMES: [&str; 3] = ["one_time", "first_in_series", "next_in_series"];

impl<const N: usize> JsonSchema for TypeTag<N> {
    fn schema_name() -> Cow<'static, str> {
        format!("Type_{}", TYPE_NAMES[N]).into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"const": TYPE_NAMES[N]})
    }
}

/// A `one_time` (the type when none is given): the customer pays on the checkout.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("not" = {"required": ["customer", "customer_id"]}))]
pub struct OneTimeBody {
    #[schemars(rename = "type")]
    pub kind: Option<TypeTag<0>>,
    /// 0 verifies the card without charging it.
    pub amount: Amount,
    pub currency: Currency,
    pub capture_method: Option<CaptureMethod>,
    #[schemars(with = "Option<Metadata>")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[schemars(with = "Option<ExternalReference>")]
    pub external_reference: Option<String>,
    pub customer: Option<NewCustomer>,
    pub customer_id: Option<CustomerId>,
    /// Without one, the checkout ends on its own receipt page.
    #[schemars(with = "Option<HttpUrl>")]
    pub return_url: Option<String>,
    /// `never` by default; a card saved here is for customer-present use only.
    pub save_payment_method: Option<SavePaymentMethod>,
    /// Seconds from creation until the checkout expires (default 86400).
    #[schemars(range(min = 60, max = 604800))]
    pub expires_in: Option<i64>,
    pub options: Option<PresentOptions>,
    /// This checkout's look, over the merchant's checkout settings, field by field.
    pub branding: Option<BrandingBody>,
    /// `redirect` (default), or framed by one of the merchant's `embed_origins`.
    pub presentation_mode: Option<crate::branding::PresentationMode>,
    /// The checkout's language (BCP 47); absent, the customer's browser decides.
    pub locale: Option<LocaleTag>,
}

/// A `first_in_series`: pays (or verifies the card, at amount 0) and grants a mandate.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("not" = {"required": ["customer", "customer_id"]}))]
pub struct FirstInSeriesBody {
    #[schemars(rename = "type")]
    pub kind: TypeTag<1>,
    /// 0 verifies the card without charging it.
    pub amount: Amount,
    pub currency: Currency,
    pub capture_method: Option<CaptureMethod>,
    #[schemars(with = "Option<Metadata>")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[schemars(with = "Option<ExternalReference>")]
    pub external_reference: Option<String>,
    pub customer: Option<NewCustomer>,
    pub customer_id: Option<CustomerId>,
    #[schemars(with = "Option<HttpUrl>")]
    pub return_url: Option<String>,
    #[schemars(range(min = 60, max = 604800))]
    pub expires_in: Option<i64>,
    pub mandate_options: Option<MandateOptions>,
    pub subscription_options: Option<SubscriptionOptionsBody>,
    /// This checkout's look, over the merchant's checkout settings, field by field.
    pub branding: Option<BrandingBody>,
    /// `redirect` (default), or framed by one of the merchant's `embed_origins`.
    pub presentation_mode: Option<crate::branding::PresentationMode>,
    /// The checkout's language (BCP 47); absent, the customer's browser decides.
    pub locale: Option<LocaleTag>,
    pub options: Option<PresentOptions>,
}

/// A `next_in_series`: charged at once under a mandate, or a saved card's
/// customer and payment method (flat, or under `options`).
#[derive(JsonSchema)]
#[schemars(
    deny_unknown_fields,
    extend("anyOf" = [
        {"required": ["options"]},
        {"oneOf": [
            {"required": ["mandate_id"], "not": {"anyOf": [{"required": ["customer_id"]}, {"required": ["payment_method_id"]}]}},
            {"required": ["customer_id", "payment_method_id"], "not": {"required": ["mandate_id"]}}
        ]}
    ])
)]
pub struct NextInSeriesBody {
    #[schemars(rename = "type")]
    pub kind: TypeTag<2>,
    pub amount: PositiveAmount,
    pub currency: Currency,
    pub capture_method: Option<CaptureMethod>,
    #[schemars(with = "Option<Metadata>")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[schemars(with = "Option<ExternalReference>")]
    pub external_reference: Option<String>,
    pub mandate_id: Option<MandateId>,
    pub customer_id: Option<CustomerId>,
    pub payment_method_id: Option<PaymentMethodId>,
    pub options: Option<NextOptions>,
}

fixed_schema! {
    /// An amount above zero, in the currency's minor units.
    PositiveAmount, {"type": "integer", "minimum": 1, "maximum": Amount::MAX}
}

/// `payment_session.create`: one shape per `type` (`one_time` when absent),
/// flat or with Moment's nested `options`. Rules a schema cannot state (min ≤
/// max, dates in order, currencies matching, a field given both ways, fields
/// of `options` foreign to the type) are the service's: see
/// docs/contract-decisions.md.
#[derive(JsonSchema)]
#[schemars(untagged)]
// Never built: it only describes the body.
#[allow(clippy::large_enum_variant)]
pub enum CreateSessionBody {
    OneTime(OneTimeBody),
    FirstInSeries(FirstInSeriesBody),
    NextInSeries(NextInSeriesBody),
}

/// `payment_session.cancel`, `.retrieve`, `payment.void`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SessionRef {
    pub payment_session_id: SessionId,
}

/// A checkout's look (DESIGN §13): `#rrggbb` colours, an https logo, closed lists.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BrandingBody {
    #[schemars(length(min = 1, max = 100))]
    pub display_name: Option<String>,
    /// https only.
    #[schemars(with = "Option<HttpUrl>")]
    pub logo_url: Option<String>,
    pub brand_color: Option<crate::branding::Color>,
    pub button_color: Option<crate::branding::Color>,
    pub border_style: Option<crate::branding::BorderStyle>,
    pub font: Option<crate::branding::Font>,
}

/// `checkout_settings.update`: the fields given replace the merchant's; `null` clears one.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CheckoutSettingsBody {
    #[schemars(length(min = 1, max = 100))]
    pub display_name: Option<String>,
    #[schemars(with = "Option<HttpUrl>")]
    pub logo_url: Option<String>,
    /// Or the logo itself, uploaded: a PNG, JPEG or WebP image in base64,
    /// at most 128 KiB and 2048 pixels a side; not with `logo_url`.
    #[schemars(length(min = 1, max = 174768))]
    pub logo_image: Option<String>,
    pub brand_color: Option<crate::branding::Color>,
    pub button_color: Option<crate::branding::Color>,
    pub border_style: Option<crate::branding::BorderStyle>,
    pub font: Option<crate::branding::Font>,
    /// https origins (`https://shop.example`) that may frame the checkout; at most 10.
    #[schemars(length(max = 10))]
    pub embed_origins: Option<Vec<String>>,
}

/// `checkout_settings.retrieve`: no fields.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NoFields {}

/// `payment.capture`: less than what is open captures part and leaves the rest open.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Capture {
    pub payment_session_id: SessionId,
    pub amount: Option<PositiveAmount>,
}

/// `refund.create`: no amount refunds all that is left of what was paid.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RefundBody {
    pub payment_session_id: SessionId,
    pub amount: Option<PositiveAmount>,
    pub reason: Option<RefundReason>,
    #[schemars(with = "Option<Metadata>")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `refund.retrieve`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RefundRefBody {
    pub refund_id: RefundId,
}

/// `mandate.revoke`, `mandate.retrieve`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MandateRef {
    pub mandate_id: MandateId,
}

/// `payment_session.list`: newest first; `starting_after` is the last id of the previous page.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SessionListBody {
    pub customer_id: Option<CustomerId>,
    #[schemars(length(max = 255))]
    pub external_reference: Option<String>,
    pub status: Option<Status>,
    /// Exclusive.
    #[schemars(with = "Option<Timestamp>")]
    pub created_after: Option<String>,
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    pub starting_after: Option<SessionId>,
}

/// `mandate.list`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MandateListBody {
    pub customer_id: Option<CustomerId>,
    pub status: Option<MandateStatus>,
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    pub starting_after: Option<MandateId>,
}

/// One charge of a `schedule.trigger`: the `next_in_series` it becomes.
#[derive(JsonSchema)]
#[schemars(
    deny_unknown_fields,
    extend("oneOf" = [
        {"required": ["mandate_id"], "not": {"anyOf": [{"required": ["customer_id"]}, {"required": ["payment_method_id"]}]}},
        {"required": ["customer_id", "payment_method_id"], "not": {"required": ["mandate_id"]}}
    ])
)]
pub struct TriggerCharge {
    pub mandate_id: Option<MandateId>,
    pub customer_id: Option<CustomerId>,
    pub payment_method_id: Option<PaymentMethodId>,
    pub amount: PositiveAmount,
    pub currency: Currency,
    #[schemars(with = "Option<ExternalReference>")]
    pub external_reference: Option<String>,
    #[schemars(with = "Option<Metadata>")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `schedule.trigger`: a billing scheduler's batch.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TriggerBody {
    #[schemars(length(min = 1, max = 10000))]
    pub charges: Vec<TriggerCharge>,
}

/// `schedule.retrieve`, `.pause`, `.resume`, `.cancel`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScheduleRef {
    pub schedule_id: ScheduleId,
}

/// `schedule.list`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScheduleListBody {
    pub mandate_id: Option<MandateId>,
    pub status: Option<ScheduleStatus>,
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    pub starting_after: Option<ScheduleId>,
}

/// `webhook_endpoint.create`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CreateEndpointBody {
    #[schemars(with = "HttpUrl")]
    pub url: String,
    /// Event types, or `["*"]` for every one.
    #[schemars(length(min = 1, max = 64))]
    pub enabled_events: Vec<EnabledEvent>,
}

/// An event type, or `*`.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum EnabledEvent {
    Every(Star),
    One(EventType),
}

fixed_schema! {
    /// `*`: every event type.
    Star, {"const": "*"}
}

/// `webhook_endpoint.delete`, `.rotate_secret`, `.enable`, `.disable`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EndpointRef {
    pub webhook_endpoint_id: WebhookEndpointId,
}

/// `webhook_event.redeliver`: to one endpoint, or every endpoint that got it.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedeliverBody {
    pub event_id: EventId,
    pub webhook_endpoint_id: Option<WebhookEndpointId>,
}

/// `POST /collect/payments/{id}/captures`: no amount captures all that is authorised.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CaptureHttp {
    pub amount: Option<PositiveAmount>,
}

/// `POST /collect/refunds`: the payment by its id (or its session's).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("oneOf" = [{"required": ["payment_id"]}, {"required": ["payment_session_id"]}]))]
pub struct RefundHttp {
    pub payment_id: Option<crate::ids::PaymentId>,
    pub payment_session_id: Option<SessionId>,
    pub amount: Option<PositiveAmount>,
    pub reason: Option<RefundReason>,
    #[schemars(with = "Option<Metadata>")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /webhook_events/{id}/redeliver`: to one endpoint, or every one that got it.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedeliverHttp {
    pub webhook_endpoint_id: Option<WebhookEndpointId>,
}

/// Nothing: the path says it all.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EmptyBody {}

/// A failed command's reply.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ErrorReply {
    pub error: crate::error::ApiError,
}

/// A page of a list: newest first.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct List<T> {
    /// Always `"list"`.
    pub object: ListTag,
    pub data: Vec<T>,
    /// More rows follow: ask again with `starting_after` = the last `id`.
    pub has_more: bool,
}

fixed_schema! {
    /// `"list"`.
    ListTag, {"const": "list"}
}

/// `schedule.trigger`'s reply: accepted, answered item by item later in `schedule_trigger.completed`.
#[derive(JsonSchema)]
pub struct TriggerReply {
    /// Always `"schedule_trigger"`.
    pub object: String,
    pub id: TriggerId,
    /// `processing`, then `answered`.
    pub status: String,
    /// Per charge in order: its session id, or its error.
    pub items: Option<Vec<serde_json::Value>>,
}

/// `webhook_endpoint.delete`'s reply.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DeletedEndpoint {
    pub id: WebhookEndpointId,
    /// Always `"webhook_endpoint"`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}

/// `webhook_event.redeliver`'s reply: the endpoints it was queued for.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedeliveryReply {
    /// Always `"webhook_redelivery"`.
    pub object: String,
    pub event_id: EventId,
    pub webhook_endpoint_ids: Vec<WebhookEndpointId>,
}

/// A message's body, as the contract names it.
pub struct Document {
    /// File name without `.json`: the routing key for commands and internal
    /// messages, the object name for replies and event data.
    pub name: &'static str,
    pub title: &'static str,
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Published by the fleet (objects, replies, events, internal messages):
    /// described as serialised, every field present and no other. Otherwise a
    /// command body, described as the fleet accepts it.
    pub sent: bool,
}

fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// Every body the contract defines.
pub const DOCUMENTS: &[Document] = &[
    Document { name: "payment_session.create", title: "payment_session.create command body", sent: false, schema: of::<CreateSessionBody> },
    Document { name: "payment_session.cancel", title: "payment_session.cancel command body", sent: false, schema: of::<SessionRef> },
    Document { name: "payment_session.retrieve", title: "payment_session.retrieve command body", sent: false, schema: of::<SessionRef> },
    Document { name: "payment_session.list", title: "payment_session.list command body", sent: false, schema: of::<SessionListBody> },
    Document { name: "payment.capture", title: "payment.capture command body", sent: false, schema: of::<Capture> },
    Document { name: "payment.void", title: "payment.void command body", sent: false, schema: of::<SessionRef> },
    Document { name: "mandate.revoke", title: "mandate.revoke command body", sent: false, schema: of::<MandateRef> },
    Document {
        name: "checkout_settings.update",
        title: "checkout_settings.update command body",
        sent: false,
        schema: of::<CheckoutSettingsBody>,
    },
    Document { name: "checkout_settings.retrieve", title: "checkout_settings.retrieve command body", sent: false, schema: of::<NoFields> },
    Document { name: "mandate.retrieve", title: "mandate.retrieve command body", sent: false, schema: of::<MandateRef> },
    Document { name: "mandate.list", title: "mandate.list command body", sent: false, schema: of::<MandateListBody> },
    Document { name: "refund.create", title: "refund.create command body", sent: false, schema: of::<RefundBody> },
    Document { name: "refund.retrieve", title: "refund.retrieve command body", sent: false, schema: of::<RefundRefBody> },
    Document { name: "schedule.trigger", title: "schedule.trigger command body", sent: false, schema: of::<TriggerBody> },
    Document { name: "schedule.retrieve", title: "schedule.retrieve command body", sent: false, schema: of::<ScheduleRef> },
    Document { name: "schedule.list", title: "schedule.list command body", sent: false, schema: of::<ScheduleListBody> },
    Document { name: "schedule.pause", title: "schedule.pause command body", sent: false, schema: of::<ScheduleRef> },
    Document { name: "schedule.resume", title: "schedule.resume command body", sent: false, schema: of::<ScheduleRef> },
    Document { name: "schedule.cancel", title: "schedule.cancel command body", sent: false, schema: of::<ScheduleRef> },
    Document {
        name: "webhook_endpoint.create",
        title: "webhook_endpoint.create command body",
        sent: false,
        schema: of::<CreateEndpointBody>,
    },
    Document { name: "webhook_endpoint.delete", title: "webhook_endpoint.delete command body", sent: false, schema: of::<EndpointRef> },
    Document {
        name: "webhook_endpoint.rotate_secret",
        title: "webhook_endpoint.rotate_secret command body",
        sent: false,
        schema: of::<EndpointRef>,
    },
    Document { name: "webhook_endpoint.enable", title: "webhook_endpoint.enable command body", sent: false, schema: of::<EndpointRef> },
    Document { name: "webhook_endpoint.disable", title: "webhook_endpoint.disable command body", sent: false, schema: of::<EndpointRef> },
    Document { name: "webhook_event.redeliver", title: "webhook_event.redeliver command body", sent: false, schema: of::<RedeliverBody> },
    Document { name: "payment_session", title: "The payment_session object", sent: true, schema: of::<crate::session::PaymentSession> },
    Document {
        name: "payment_session.list_reply",
        title: "payment_session.list reply",
        sent: true,
        schema: of::<List<crate::session::PaymentSession>>,
    },
    Document { name: "payment", title: "The payment object", sent: true, schema: of::<crate::payment::Payment> },
    Document { name: "http.capture", title: "POST /collect/payments/{id}/captures body", sent: false, schema: of::<CaptureHttp> },
    Document { name: "http.refund", title: "POST /collect/refunds body", sent: false, schema: of::<RefundHttp> },
    Document { name: "http.redeliver", title: "POST /webhook_events/{id}/redeliver body", sent: false, schema: of::<RedeliverHttp> },
    Document { name: "http.empty", title: "A body with nothing to say", sent: false, schema: of::<EmptyBody> },
    Document { name: "refund", title: "The refund object", sent: true, schema: of::<crate::payment::Refund> },
    Document { name: "dispute", title: "The dispute object (payment.disputed)", sent: true, schema: of::<crate::payment::Dispute> },
    Document { name: "mandate", title: "The mandate object", sent: true, schema: of::<crate::mandate::MandateObject> },
    Document {
        name: "checkout_settings",
        title: "The checkout_settings object",
        sent: true,
        schema: of::<crate::branding::CheckoutSettings>,
    },
    Document { name: "mandate.list_reply", title: "mandate.list reply", sent: true, schema: of::<List<crate::mandate::MandateObject>> },
    Document { name: "payment_method", title: "The payment_method object", sent: true, schema: of::<crate::mandate::PaymentMethodObject> },
    Document { name: "schedule", title: "The schedule object", sent: true, schema: of::<crate::schedule::Schedule> },
    Document { name: "schedule.list_reply", title: "schedule.list reply", sent: true, schema: of::<List<crate::schedule::Schedule>> },
    Document { name: "schedule_trigger", title: "schedule.trigger reply", sent: true, schema: of::<TriggerReply> },
    Document { name: "webhook_endpoint", title: "The webhook_endpoint object", sent: true, schema: of::<crate::webhooks::WebhookEndpoint> },
    Document { name: "webhook_endpoint.deleted", title: "webhook_endpoint.delete reply", sent: true, schema: of::<DeletedEndpoint> },
    Document { name: "webhook_redelivery", title: "webhook_event.redeliver reply", sent: true, schema: of::<RedeliveryReply> },
    Document { name: "error_reply", title: "A failed command's reply", sent: true, schema: of::<ErrorReply> },
    Document { name: "event", title: "An event on payment_sessions.events", sent: true, schema: of::<crate::events::Event> },
    Document {
        name: "gateway.authorize",
        title: "gateway.authorize (internal)",
        sent: true,
        schema: of::<crate::internal::AuthorizeRequest>,
    },
    Document { name: "gateway.capture", title: "gateway.capture (internal)", sent: true, schema: of::<crate::internal::SettleRequest> },
    Document { name: "gateway.void", title: "gateway.void (internal)", sent: true, schema: of::<crate::internal::SettleRequest> },
    Document { name: "gateway.resolve", title: "gateway.resolve (internal)", sent: true, schema: of::<crate::internal::ResolveRequest> },
    Document { name: "gateway.refund", title: "gateway.refund (internal)", sent: true, schema: of::<crate::internal::RefundRequest> },
    Document { name: "gateway.result", title: "gateway.result (internal)", sent: true, schema: of::<crate::internal::GatewayResult> },
    Document {
        name: "gateway.authenticate",
        title: "gateway.authenticate (internal)",
        sent: true,
        schema: of::<crate::internal::AuthenticateRequest>,
    },
    Document { name: "gateway.dispute", title: "gateway.dispute (internal)", sent: true, schema: of::<crate::internal::DisputeNotice> },
    Document { name: "checkout.cancel", title: "checkout.cancel (internal)", sent: true, schema: of::<crate::internal::CustomerCancel> },
];

fn settings(base: SchemaSettings, sent: bool) -> SchemaSettings {
    if !sent {
        return base.for_deserialize();
    }
    // What the fleet sends has exactly the fields its types serialise.
    base.for_serialize().with_transform(RecursiveTransform(|s: &mut Schema| {
        if let Some(o) = s.as_object_mut() {
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), false.into());
            }
        }
    }))
}

/// One document as a standalone JSON Schema (draft 2020-12, its types under `$defs`).
pub fn standalone(d: &Document) -> serde_json::Value {
    let mut g = settings(SchemaSettings::draft2020_12(), d.sent).into_generator();
    let body = (d.schema)(&mut g);
    let mut root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://payment-sessions.dev/schemas/{}.json", d.name),
        "title": d.title,
    });
    let defs = g.take_definitions(true);
    // The document is its top type, inlined, so tools show its fields first.
    let (top, rest): (Option<serde_json::Value>, serde_json::Map<String, serde_json::Value>) =
        match body.as_object().and_then(|o| o.get("$ref")) {
            Some(serde_json::Value::String(r)) => {
                let name = r.trim_start_matches("#/$defs/").to_owned();
                let mut rest = defs;
                (rest.remove(&name), rest)
            }
            _ => (Some(body.to_value()), defs),
        };
    if let (Some(serde_json::Value::Object(top)), Some(root)) = (top, root.as_object_mut()) {
        for (k, v) in top {
            if k != "title" {
                root.insert(k, v);
            }
        }
        if !rest.is_empty() {
            root.insert("$defs".into(), serde_json::Value::Object(rest));
        }
    }
    root
}

/// Every document's schema for AsyncAPI: draft-07 (AsyncAPI's schema format),
/// shared types under `#/components/schemas/`. Returns (name → schema, shared types).
pub fn for_asyncapi() -> (Vec<(&'static str, serde_json::Value)>, serde_json::Map<String, serde_json::Value>) {
    components(SchemaSettings::draft07)
}

/// Every document's schema with the types they share under `#/components/schemas/`,
/// in the JSON Schema dialect `base` gives.
pub(crate) fn components(
    base: fn() -> SchemaSettings,
) -> (Vec<(&'static str, serde_json::Value)>, serde_json::Map<String, serde_json::Value>) {
    let at = || base().with(|s| s.definitions_path = "/components/schemas/".into());
    let (mut received, mut sent) = (settings(at(), false).into_generator(), settings(at(), true).into_generator());
    let mut bodies: Vec<(&'static str, serde_json::Value)> =
        DOCUMENTS.iter().map(|d| (d.name, (d.schema)(if d.sent { &mut sent } else { &mut received }).to_value())).collect();
    let mut shared = received.take_definitions(true);
    // A type described both ways keeps one name where the two agree; where they
    // differ, the sent description is renamed `…Sent` and its references with it.
    let sent_defs = sent.take_definitions(true);
    let renamed: Vec<String> =
        sent_defs.iter().filter(|(name, schema)| shared.get(*name).is_some_and(|s| s != *schema)).map(|(name, _)| name.clone()).collect();
    let rename = |v: &mut serde_json::Value| {
        let mut text = v.to_string();
        for name in &renamed {
            text = text.replace(&format!("\"#/components/schemas/{name}\""), &format!("\"#/components/schemas/{name}Sent\""));
        }
        *v = serde_json::from_str(&text).expect("renaming references keeps JSON valid");
    };
    for (name, mut schema) in sent_defs {
        rename(&mut schema);
        let key = if renamed.contains(&name) { format!("{name}Sent") } else { name };
        shared.insert(key, schema);
    }
    for (name, body) in &mut bodies {
        if DOCUMENTS.iter().any(|d| d.name == *name && d.sent) {
            rename(body);
        }
    }
    (bodies, shared)
}

/// Who receives a message, and what it answers.
pub struct Route {
    pub exchange: &'static str,
    pub routing_key: &'static str,
    /// The body's document in [`DOCUMENTS`].
    pub body: &'static str,
    /// The service that consumes it.
    pub consumer: &'static str,
    /// Documents a reply may be; empty when there is none.
    pub replies: &'static [&'static str],
    pub summary: &'static str,
}

use crate::routing::{command as c, exchange as x, internal as i};

const SESSION_REPLY: &[&str] = &["payment_session", "error_reply"];

/// Every message the fleet receives on its exchanges.
pub const ROUTES: &[Route] = &[
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SESSION_CREATE,
        body: "payment_session.create",
        consumer: "session-intake",
        replies: SESSION_REPLY,
        summary: "Create a session of any of the three types.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SESSION_CANCEL,
        body: "payment_session.cancel",
        consumer: "session-lifecycle",
        replies: SESSION_REPLY,
        summary: "Cancel an active session (refused while a payment is processing).",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SESSION_RETRIEVE,
        body: "payment_session.retrieve",
        consumer: "session-lifecycle",
        replies: SESSION_REPLY,
        summary: "Read a session.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SESSION_LIST,
        body: "payment_session.list",
        consumer: "session-lifecycle",
        replies: &["payment_session.list_reply", "error_reply"],
        summary: "List sessions, newest first.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::PAYMENT_CAPTURE,
        body: "payment.capture",
        consumer: "session-lifecycle",
        replies: SESSION_REPLY,
        summary: "Capture a reserved payment, in full or in part.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::PAYMENT_VOID,
        body: "payment.void",
        consumer: "session-lifecycle",
        replies: SESSION_REPLY,
        summary: "Release a reserved payment.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::MANDATE_REVOKE,
        body: "mandate.revoke",
        consumer: "session-lifecycle",
        replies: &["mandate", "error_reply"],
        summary: "Revoke a mandate: no further merchant-initiated charges.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::CHECKOUT_SETTINGS_UPDATE,
        body: "checkout_settings.update",
        consumer: "session-lifecycle",
        replies: &["checkout_settings", "error_reply"],
        summary: "Set how the merchant's checkout looks, and who may frame it.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::CHECKOUT_SETTINGS_RETRIEVE,
        body: "checkout_settings.retrieve",
        consumer: "session-lifecycle",
        replies: &["checkout_settings", "error_reply"],
        summary: "Read the merchant's checkout settings.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::MANDATE_RETRIEVE,
        body: "mandate.retrieve",
        consumer: "session-lifecycle",
        replies: &["mandate", "error_reply"],
        summary: "Read a mandate.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::MANDATE_LIST,
        body: "mandate.list",
        consumer: "session-lifecycle",
        replies: &["mandate.list_reply", "error_reply"],
        summary: "List mandates, newest first.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::REFUND_CREATE,
        body: "refund.create",
        consumer: "session-lifecycle",
        replies: &["refund", "error_reply"],
        summary: "Refund a paid session, in full or in part; several refunds never pass what was paid.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::REFUND_RETRIEVE,
        body: "refund.retrieve",
        consumer: "session-lifecycle",
        replies: &["refund", "error_reply"],
        summary: "Read a refund.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SCHEDULE_TRIGGER,
        body: "schedule.trigger",
        consumer: "charge-scheduler",
        replies: &["schedule_trigger", "error_reply"],
        summary: "Charge a batch of next_in_series now (a billing scheduler's run).",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SCHEDULE_RETRIEVE,
        body: "schedule.retrieve",
        consumer: "charge-scheduler",
        replies: &["schedule", "error_reply"],
        summary: "Read a charge schedule.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SCHEDULE_LIST,
        body: "schedule.list",
        consumer: "charge-scheduler",
        replies: &["schedule.list_reply", "error_reply"],
        summary: "List charge schedules.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SCHEDULE_PAUSE,
        body: "schedule.pause",
        consumer: "charge-scheduler",
        replies: &["schedule", "error_reply"],
        summary: "Pause a schedule.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SCHEDULE_RESUME,
        body: "schedule.resume",
        consumer: "charge-scheduler",
        replies: &["schedule", "error_reply"],
        summary: "Resume a paused schedule.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::SCHEDULE_CANCEL,
        body: "schedule.cancel",
        consumer: "charge-scheduler",
        replies: &["schedule", "error_reply"],
        summary: "Cancel a schedule for good.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::WEBHOOK_ENDPOINT_CREATE,
        body: "webhook_endpoint.create",
        consumer: "webhook-dispatch",
        replies: &["webhook_endpoint", "error_reply"],
        summary: "Register a webhook endpoint; the reply carries its secret, once.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::WEBHOOK_ENDPOINT_DELETE,
        body: "webhook_endpoint.delete",
        consumer: "webhook-dispatch",
        replies: &["webhook_endpoint.deleted", "error_reply"],
        summary: "Delete a webhook endpoint.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::WEBHOOK_ENDPOINT_ROTATE_SECRET,
        body: "webhook_endpoint.rotate_secret",
        consumer: "webhook-dispatch",
        replies: &["webhook_endpoint", "error_reply"],
        summary: "Rotate an endpoint's signing secret (the old one signs too for 24 h).",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::WEBHOOK_EVENT_REDELIVER,
        body: "webhook_event.redeliver",
        consumer: "webhook-dispatch",
        replies: &["webhook_redelivery", "error_reply"],
        summary: "Deliver an event again.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::WEBHOOK_ENDPOINT_ENABLE,
        body: "webhook_endpoint.enable",
        consumer: "webhook-dispatch",
        replies: &["webhook_endpoint", "error_reply"],
        summary: "Turn a disabled endpoint back on.",
    },
    Route {
        exchange: x::COMMANDS,
        routing_key: c::WEBHOOK_ENDPOINT_DISABLE,
        body: "webhook_endpoint.disable",
        consumer: "webhook-dispatch",
        replies: &["webhook_endpoint", "error_reply"],
        summary: "Turn an endpoint off; its pending deliveries fail and webhook_endpoint.disabled is sent.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_AUTHORIZE,
        body: "gateway.authorize",
        consumer: "payment-gateway",
        replies: &[],
        summary: "Internal: charge or verify a card for one attempt.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_CAPTURE,
        body: "gateway.capture",
        consumer: "payment-gateway",
        replies: &[],
        summary: "Internal: capture a reserved authorisation.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_VOID,
        body: "gateway.void",
        consumer: "payment-gateway",
        replies: &[],
        summary: "Internal: void an authorisation.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_RESOLVE,
        body: "gateway.resolve",
        consumer: "payment-gateway",
        replies: &[],
        summary: "Internal: ask the processor what it did under an unanswered attempt's key.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_REFUND,
        body: "gateway.refund",
        consumer: "payment-gateway",
        replies: &[],
        summary: "Internal: refund part or all of an attempt's payment, keyed by the refund.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_RESULT,
        body: "gateway.result",
        consumer: "session-lifecycle",
        replies: &[],
        summary: "Internal: what the processor answered.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_AUTHENTICATE,
        body: "gateway.authenticate",
        consumer: "payment-gateway",
        replies: &[],
        summary: "Internal: the customer finished (or gave up) an attempt's 3-D Secure challenge; the processor says what came of it.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::GATEWAY_DISPUTE,
        body: "gateway.dispute",
        consumer: "session-lifecycle",
        replies: &[],
        summary: "Internal: the processor told of a dispute on a payment.",
    },
    Route {
        exchange: x::INTERNAL,
        routing_key: i::CHECKOUT_CANCEL,
        body: "checkout.cancel",
        consumer: "session-lifecycle",
        replies: &[],
        summary: "Internal: the customer cancelled at the checkout.",
    },
];

fn id(name: &str) -> String {
    name.replace('.', "_")
}

/// The AsyncAPI 3.0 document: every exchange, routing key, message, header and reply.
pub fn asyncapi(version: &str) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let (bodies, shared) = for_asyncapi();
    let body = |name: &str| bodies.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone()).unwrap_or_else(|| panic!("no document {name}"));
    let title = |name: &'static str| DOCUMENTS.iter().find(|d| d.name == name).map(|d| d.title).unwrap_or(name);
    let exchange = |name: &str| json!({"name": name, "type": "topic", "durable": true, "autoDelete": false, "vhost": "/"});
    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let trace = json!({"type": "string", "description": "W3C trace context, carried through every hop.", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"});
    let command_headers = json!({
        "type": "object",
        "required": ["merchant-id"],
        "properties": {
            "merchant-id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "The merchant the command is for; the publisher's broker user must be granted it."},
            "idempotency-key": {"type": "string", "minLength": 1, "maxLength": 255, "description": "Required on payment_session.create, refund.create and schedule.trigger, honoured on every command: the same key within 24 h returns the first reply."},
            "traceparent": trace,
        }
    });
    let internal_headers = json!({"type": "object", "properties": {"traceparent": trace}});
    let reply_headers = json!({"type": "object", "properties": {"idempotent-replayed": {"type": "string", "enum": ["true"], "description": "Present on the stored reply to a repeated idempotency key."}, "traceparent": trace}});
    let amqp_message = json!({"amqp": {"contentEncoding": "utf-8", "messageType": "", "bindingVersion": "0.3.0"}});
    let mut reply_messages = Map::new();
    for r in ROUTES {
        let key = id(r.routing_key);
        let internal = r.exchange == x::INTERNAL;
        let mut m = json!({
            "name": r.routing_key,
            "title": title(r.body),
            "summary": r.summary,
            "contentType": "application/json",
            "headers": if internal { internal_headers.clone() } else { command_headers.clone() },
            "payload": body(r.body),
            "bindings": amqp_message.clone(),
        });
        m["bindings"]["amqp"]["messageType"] = r.routing_key.into();
        if !r.replies.is_empty() {
            m["correlationId"] = json!({"description": "The AMQP correlation_id property; the reply carries it back.", "location": "$message.header#/correlation_id"});
        }
        messages.insert(key.clone(), m);
        channels.insert(
            key.clone(),
            json!({
                "address": r.routing_key,
                "title": format!("{} on {}", r.routing_key, r.exchange),
                "messages": {key.clone(): {"$ref": format!("#/components/messages/{key}")}},
                "bindings": {"amqp": {"is": "routingKey", "exchange": exchange(r.exchange), "bindingVersion": "0.3.0"}},
            }),
        );
        let mut op = json!({
            "action": "receive",
            "title": format!("{} receives {}", r.consumer, r.routing_key),
            "summary": r.summary,
            "channel": {"$ref": format!("#/channels/{key}")},
            "messages": [{"$ref": format!("#/channels/{key}/messages/{key}")}],
            "bindings": {"amqp": {"ack": true, "bindingVersion": "0.3.0"}},
        });
        if !r.replies.is_empty() {
            for reply in r.replies {
                let rid = format!("reply_{}", id(reply));
                reply_messages.entry(rid.clone()).or_insert_with(|| json!({"$ref": format!("#/components/messages/{rid}")}));
                messages.entry(rid.clone()).or_insert_with(|| {
                    json!({
                        "name": rid,
                        "title": title(reply),
                        "contentType": "application/json",
                        "headers": reply_headers.clone(),
                        "correlationId": {"description": "The command's correlation_id.", "location": "$message.header#/correlation_id"},
                        "payload": body(reply),
                    })
                });
            }
            op["reply"] = json!({
                "address": {"description": "The command's reply_to: a queue of the publisher's, or amq.rabbitmq.reply-to (direct reply-to).", "location": "$message.header#/reply_to"},
                "channel": {"$ref": "#/channels/replies"},
                "messages": r.replies.iter().map(|reply| json!({"$ref": format!("#/channels/replies/messages/reply_{}", id(reply))})).collect::<Vec<_>>(),
            });
        }
        operations.insert(format!("receive_{key}"), op);
    }
    channels.insert("replies".into(), json!({
        "address": null,
        "title": "Replies",
        "description": "Published to the default exchange with the command's reply_to as routing key: persistent, and mandatory except to amq.rabbitmq.reply-to.*.",
        "messages": Value::Object(reply_messages),
        "bindings": {"amqp": {"is": "queue", "queue": {"name": "reply_to", "durable": false, "exclusive": true, "autoDelete": true, "vhost": "/"}, "bindingVersion": "0.3.0"}},
    }));
    let event_types: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
    messages.insert(
        "event".into(),
        json!({
            "name": "event",
            "title": title("event"),
            "summary": "Every state change, routing key = its type; the webhook service delivers each to merchants' endpoints.",
            "contentType": "application/json",
            "headers": internal_headers.clone(),
            "payload": body("event"),
            "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": "event", "bindingVersion": "0.3.0"}},
        }),
    );
    channels.insert(
        "events".into(),
        json!({
            "address": "{event_type}",
            "title": "payment_sessions.events",
            "description": format!("Routing key = the event's type: {}.", event_types.join(", ")),
            "parameters": {"event_type": {"enum": event_types, "description": "The event's type."}},
            "messages": {"event": {"$ref": "#/components/messages/event"}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": exchange(x::EVENTS), "bindingVersion": "0.3.0"}},
        }),
    );
    operations.insert(
        "send_event".into(),
        json!({
            "action": "send",
            "title": "The fleet publishes events",
            "channel": {"$ref": "#/channels/events"},
            "messages": [{"$ref": "#/channels/events/messages/event"}],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": true, "bindingVersion": "0.3.0"}},
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Payment Sessions",
            "version": version,
            "description": "One API for one-time payments, subscription set-up (mandates) and merchant-initiated repeat charges, over RabbitMQ. Every queue is a durable quorum queue with a dead-letter queue `<queue>.dlq`; every publish is persistent and confirmed. Generated from the ps-contract crate; see docs/contract.md.",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1", "description": "make run's broker (test mode)."},
            "production": {"host": "rabbitmq.example.com:5671", "protocol": "amqps", "protocolVersion": "0.9.1", "description": "TLS; each publisher its own broker user, granted its merchants (psctl merchants grant)."},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": shared},
    })
}
