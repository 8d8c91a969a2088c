//! Bodies of the commands other than create (DESIGN §4), parsed once.

use crate::error::{ApiError, ErrorCode};
use crate::fields::Obj;
use crate::ids::{CustomerId, MandateId, RefundId, SessionId};
use crate::lifecycle::Status;
use crate::mandate::MandateStatus;
use crate::money::{parse_amount, Amount};
use crate::payment::RefundReason;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// `payment_session.cancel`, `payment.void`: `{payment_session_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCommand {
    pub payment_session_id: SessionId,
}

/// `payment.capture`: `{payment_session_id, amount?}`; a smaller amount captures part
/// and leaves the rest open for more captures or a void (Moment's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureCommand {
    pub payment_session_id: SessionId,
    pub amount: Option<Amount>,
}

/// `mandate.revoke`: `{mandate_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeCommand {
    pub mandate_id: MandateId,
}

/// `refund.create`: `{payment_session_id, amount?, reason?, metadata?}`; no amount: all that is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundCommand {
    pub payment_session_id: SessionId,
    pub amount: Option<Amount>,
    pub reason: Option<RefundReason>,
    pub metadata: BTreeMap<String, String>,
}

/// `refund.retrieve`: `{refund_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRef {
    pub refund_id: RefundId,
}

impl RefundCommand {
    pub fn parse(body: &Value) -> Result<RefundCommand, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["payment_session_id", "amount", "reason", "metadata"])?;
        Ok(RefundCommand {
            payment_session_id: session_id(&o)?,
            amount: o.get("amount").map(|v| parse_amount(v, "amount", false)).transpose()?,
            reason: o.choice("reason", RefundReason::parse, "duplicate, fraudulent, requested_by_customer")?,
            metadata: crate::create::parse_metadata(&o)?,
        })
    }
}

impl RefundRef {
    pub fn parse(body: &Value) -> Result<RefundRef, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["refund_id"])?;
        Ok(RefundRef { refund_id: RefundId::parse(o.req_str("refund_id", 64)?).map_err(|e| e.with_param("refund_id"))? })
    }
}

fn session_id(o: &Obj<'_>) -> Result<SessionId, ApiError> {
    SessionId::parse(o.req_str("payment_session_id", 64)?).map_err(|e| e.with_param("payment_session_id"))
}

impl SessionCommand {
    pub fn parse(body: &Value) -> Result<SessionCommand, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["payment_session_id"])?;
        Ok(SessionCommand { payment_session_id: session_id(&o)? })
    }
}

impl CaptureCommand {
    pub fn parse(body: &Value) -> Result<CaptureCommand, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["payment_session_id", "amount"])?;
        let amount = o.get("amount").map(|v| parse_amount(v, "amount", false)).transpose()?;
        Ok(CaptureCommand { payment_session_id: session_id(&o)?, amount })
    }
}

impl RevokeCommand {
    pub fn parse(body: &Value) -> Result<RevokeCommand, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["mandate_id"])?;
        let id = MandateId::parse(o.req_str("mandate_id", 64)?).map_err(|e| e.with_param("mandate_id"))?;
        Ok(RevokeCommand { mandate_id: id })
    }
}

/// How much a capture takes: what was asked (at most what was authorised,
/// else 400), within what is still open (else 409, Moment's); none asked is
/// all that is open.
pub fn check_capture_amount(requested: Option<Amount>, authorised: i64, open: i64) -> Result<i64, ApiError> {
    match requested {
        None => Ok(open),
        Some(a) if a.minor() > authorised => {
            Err(ApiError::param(ErrorCode::AmountTooLarge, "amount", format!("cannot capture {a}: only {authorised} was authorised")))
        }
        Some(a) if a.minor() > open => Err(ApiError::param(
            ErrorCode::AmountExceedsRemaining,
            "amount",
            format!("the capture amount {a} exceeds the remaining authorised amount {open}"),
        )),
        Some(a) => Ok(a.minor()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies() {
        let id = "ps_01JDV3V9QK2H7M4N6P8R0S1T2U";
        assert_eq!(SessionCommand::parse(&json!({"payment_session_id": id})).unwrap().payment_session_id.as_str(), id);
        assert_eq!(SessionCommand::parse(&json!({})).unwrap_err().code, ErrorCode::ParameterMissing);
        assert_eq!(SessionCommand::parse(&json!({"payment_session_id": "nope"})).unwrap_err().code, ErrorCode::IdInvalid);
        assert_eq!(SessionCommand::parse(&json!({"payment_session_id": id, "x": 1})).unwrap_err().code, ErrorCode::ParameterUnknown);
        assert_eq!(CaptureCommand::parse(&json!({"payment_session_id": id, "amount": 0})).unwrap_err().code, ErrorCode::AmountTooSmall);
        assert_eq!(CaptureCommand::parse(&json!({"payment_session_id": id, "amount": 5})).unwrap().amount.unwrap().minor(), 5);
        assert_eq!(RevokeCommand::parse(&json!({"mandate_id": "md_x"})).unwrap_err().code, ErrorCode::IdInvalid);
        let r =
            RefundCommand::parse(&json!({"payment_session_id": id, "amount": 50, "reason": "duplicate", "metadata": {"k": "v"}})).unwrap();
        assert_eq!((r.amount.unwrap().minor(), r.reason, r.metadata["k"].as_str()), (50, Some(RefundReason::Duplicate), "v"));
        assert_eq!(RefundCommand::parse(&json!({"payment_session_id": id})).unwrap().amount, None);
        let bad = RefundCommand::parse(&json!({"payment_session_id": id, "reason": "bored"})).unwrap_err();
        assert_eq!((bad.code, bad.param.as_deref()), (ErrorCode::ParameterInvalidValue, Some("reason")));
        assert_eq!(RefundCommand::parse(&json!({"payment_session_id": id, "amount": -1})).unwrap_err().code, ErrorCode::AmountTooSmall);
        assert_eq!(RefundRef::parse(&json!({"refund_id": "re_nope"})).unwrap_err().code, ErrorCode::IdInvalid);
    }

    #[test]
    fn capture_amounts() {
        assert_eq!(check_capture_amount(None, 100, 100), Ok(100));
        assert_eq!(check_capture_amount(Some(Amount::new(60).unwrap()), 100, 100), Ok(60));
        assert_eq!(check_capture_amount(Some(Amount::new(101).unwrap()), 100, 100).unwrap_err().code, ErrorCode::AmountTooLarge);
        // After a capture of 60: none asked is the 40 still open, more is a conflict.
        assert_eq!(check_capture_amount(None, 100, 40), Ok(40));
        assert_eq!(check_capture_amount(Some(Amount::new(40).unwrap()), 100, 40), Ok(40));
        assert_eq!(check_capture_amount(Some(Amount::new(41).unwrap()), 100, 40).unwrap_err().code, ErrorCode::AmountExceedsRemaining);
    }
}

/// `payment_session.list` (DESIGN §9): filters, newest first, a page after `starting_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionList {
    pub customer_id: Option<CustomerId>,
    pub external_reference: Option<String>,
    pub status: Option<Status>,
    pub created_after: Option<DateTime<Utc>>,
    pub limit: u32,
    pub starting_after: Option<SessionId>,
}

/// `mandate.list` (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MandateList {
    pub customer_id: Option<CustomerId>,
    pub status: Option<MandateStatus>,
    pub limit: u32,
    pub starting_after: Option<MandateId>,
}

fn limit(o: &Obj<'_>) -> Result<u32, ApiError> {
    Ok(o.int("limit", 1, 100, ErrorCode::ParameterInvalidValue)?.unwrap_or(20) as u32)
}

fn customer(o: &Obj<'_>) -> Result<Option<CustomerId>, ApiError> {
    o.str("customer_id", 64)?.map(|c| CustomerId::parse(c).map_err(|e| e.with_param("customer_id"))).transpose()
}

impl SessionList {
    pub fn parse(body: &Value) -> Result<SessionList, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["customer_id", "external_reference", "status", "created_after", "limit", "starting_after"])?;
        let created_after = o
            .str("created_after", 64)?
            .map(|t| {
                DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                    ApiError::param(
                        ErrorCode::DateInvalid,
                        "created_after",
                        "created_after must be an RFC 3339 time, e.g. 2026-11-25T09:00:00Z",
                    )
                })
            })
            .transpose()?;
        Ok(SessionList {
            customer_id: customer(&o)?,
            external_reference: o.str("external_reference", crate::create::MAX_EXTERNAL_REFERENCE_LEN)?.map(str::to_owned),
            status: o.choice("status", Status::parse, "active, completed, expired, cancelled")?,
            created_after,
            limit: limit(&o)?,
            starting_after: o
                .str("starting_after", 64)?
                .map(|c| SessionId::parse(c).map_err(|e| e.with_param("starting_after")))
                .transpose()?,
        })
    }
}

impl MandateList {
    pub fn parse(body: &Value) -> Result<MandateList, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["customer_id", "status", "limit", "starting_after"])?;
        Ok(MandateList {
            customer_id: customer(&o)?,
            status: o.choice("status", MandateStatus::parse, "active, revoked, expired")?,
            limit: limit(&o)?,
            starting_after: o
                .str("starting_after", 64)?
                .map(|c| MandateId::parse(c).map_err(|e| e.with_param("starting_after")))
                .transpose()?,
        })
    }
}
