//! The session lifecycle (DESIGN §2): `status` × `payment_outcome`, and the one
//! function that decides every move between them.

use crate::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $s:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $s)] $variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s,)* }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum!(SessionType {
    OneTime => "one_time",
    FirstInSeries => "first_in_series",
    NextInSeries => "next_in_series",
});

impl SessionType {
    /// Customer-present sessions have a checkout page and may retry after a decline.
    pub fn customer_present(self) -> bool {
        !matches!(self, SessionType::NextInSeries)
    }
}

wire_enum!(Status {
    Active => "active",
    Completed => "completed",
    Expired => "expired",
    Cancelled => "cancelled",
});

impl Status {
    pub fn is_terminal(self) -> bool {
        match self {
            Status::Active => false,
            Status::Completed | Status::Expired | Status::Cancelled => true,
        }
    }
}

wire_enum!(PaymentOutcome {
    NotStarted => "not_started",
    Pending => "pending",
    Paid => "paid",
    Unpaid => "unpaid",
    Reserved => "reserved",
    PaymentMethodVerified => "payment_method_verified",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionState {
    pub status: Status,
    pub outcome: PaymentOutcome,
}

impl SessionState {
    pub const fn new(status: Status, outcome: PaymentOutcome) -> Self {
        SessionState { status, outcome }
    }

    /// Where every session starts. A `next_in_series` moves to `pending` in the
    /// same transaction that creates it.
    pub const INITIAL: SessionState = SessionState::new(Status::Active, PaymentOutcome::NotStarted);
}

/// What a successful attempt produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Success {
    Paid,
    /// `capture_method: manual`: authorised, to be captured or voided later.
    Reserved,
    /// A zero-amount `first_in_series`: the card was verified, nothing charged.
    Verified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    StartAttempt,
    AttemptSucceeded(Success),
    AttemptFailed,
    /// A customer-present session's last allowed attempt failed: it ends
    /// `unpaid` (a card-testing limit, as the reference API ends a session whose attempts are exhausted).
    AttemptsExhausted,
    Expire,
    Cancel,
    Capture,
    Void,
}

impl Transition {
    pub const ALL: &'static [Transition] = &[
        Transition::StartAttempt,
        Transition::AttemptSucceeded(Success::Paid),
        Transition::AttemptSucceeded(Success::Reserved),
        Transition::AttemptSucceeded(Success::Verified),
        Transition::AttemptFailed,
        Transition::AttemptsExhausted,
        Transition::Expire,
        Transition::Cancel,
        Transition::Capture,
        Transition::Void,
    ];
}

/// A refused move. `code` is what a command's reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionError {
    pub code: ErrorCode,
    pub from: SessionState,
    pub transition: Transition,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.code {
            ErrorCode::PaymentProcessing => "a payment attempt is processing; try again when it has finished",
            ErrorCode::SessionNotActive => "the session has already ended",
            _ => "this change is not allowed in the session's current state",
        };
        write!(f, "{what} ({:?} from {}/{})", self.transition, self.from.status, self.from.outcome)
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> ApiError {
        ApiError::new(e.code, e.to_string())
    }
}

/// The only place that decides whether a session may change state.
pub fn transition(ty: SessionType, from: SessionState, t: Transition) -> Result<SessionState, TransitionError> {
    use PaymentOutcome::*;
    use Status::*;
    let refuse = |code| Err(TransitionError { code, from, transition: t });
    let to = |status, outcome| Ok(SessionState::new(status, outcome));
    let SessionState { status, outcome } = from;

    match t {
        // Settling a reservation is done on its payment (Moment's): the session
        // stays completed / reserved whatever is captured or released.
        Transition::Capture | Transition::Void => match (status, outcome) {
            (Completed, Reserved) => to(Completed, Reserved),
            _ => refuse(ErrorCode::IllegalTransition),
        },
        _ if status.is_terminal() => refuse(ErrorCode::SessionNotActive),
        Transition::StartAttempt => match outcome {
            NotStarted => to(Active, Pending),
            // A customer may try again after a decline; a next_in_series is one attempt.
            Unpaid if ty.customer_present() => to(Active, Pending),
            Pending => refuse(ErrorCode::PaymentProcessing),
            _ => refuse(ErrorCode::IllegalTransition),
        },
        Transition::AttemptSucceeded(success) => match (outcome, success) {
            (Pending, Success::Paid) => to(Completed, Paid),
            (Pending, Success::Reserved) => to(Completed, Reserved),
            // Moment's payment method verification: wherever the customer is there to give the card.
            (Pending, Success::Verified) if ty.customer_present() => to(Completed, PaymentMethodVerified),
            _ => refuse(ErrorCode::IllegalTransition),
        },
        Transition::AttemptFailed => match outcome {
            Pending if ty.customer_present() => to(Active, Unpaid),
            Pending => to(Completed, Unpaid),
            _ => refuse(ErrorCode::IllegalTransition),
        },
        Transition::AttemptsExhausted => match outcome {
            Pending if ty.customer_present() => to(Completed, Unpaid),
            _ => refuse(ErrorCode::IllegalTransition),
        },
        // Expiry and cancel wait for an attempt in flight: its money must be accounted for first.
        Transition::Expire | Transition::Cancel if outcome == Pending => refuse(ErrorCode::PaymentProcessing),
        // Active sessions are only ever not_started, pending, or (customer-present) unpaid.
        Transition::Expire | Transition::Cancel if !(outcome == NotStarted || outcome == Unpaid && ty.customer_present()) => {
            refuse(ErrorCode::IllegalTransition)
        }
        Transition::Expire if !ty.customer_present() => refuse(ErrorCode::IllegalTransition),
        Transition::Expire => to(Expired, outcome),
        Transition::Cancel => to(Cancelled, outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet, VecDeque};
    use PaymentOutcome::*;
    use SessionType::*;
    use Status::*;

    fn st(s: Status, o: PaymentOutcome) -> SessionState {
        SessionState::new(s, o)
    }

    /// Every legal move, written out as the specification. Anything not listed must be refused.
    fn legal() -> HashMap<(SessionType, SessionState, Transition), SessionState> {
        let mut m = HashMap::new();
        let paid = Transition::AttemptSucceeded(Success::Paid);
        let reserved = Transition::AttemptSucceeded(Success::Reserved);
        let verified = Transition::AttemptSucceeded(Success::Verified);
        for ty in SessionType::ALL.iter().copied() {
            m.insert((ty, st(Active, NotStarted), Transition::StartAttempt), st(Active, Pending));
            m.insert((ty, st(Active, Pending), paid), st(Completed, Paid));
            m.insert((ty, st(Active, Pending), reserved), st(Completed, Reserved));
            m.insert((ty, st(Completed, Reserved), Transition::Capture), st(Completed, Reserved));
            m.insert((ty, st(Completed, Reserved), Transition::Void), st(Completed, Reserved));
            m.insert((ty, st(Active, NotStarted), Transition::Cancel), st(Cancelled, NotStarted));
        }
        for ty in [OneTime, FirstInSeries] {
            m.insert((ty, st(Active, Unpaid), Transition::StartAttempt), st(Active, Pending));
            m.insert((ty, st(Active, Pending), Transition::AttemptFailed), st(Active, Unpaid));
            m.insert((ty, st(Active, Pending), Transition::AttemptsExhausted), st(Completed, Unpaid));
            m.insert((ty, st(Active, NotStarted), Transition::Expire), st(Expired, NotStarted));
            m.insert((ty, st(Active, Unpaid), Transition::Expire), st(Expired, Unpaid));
            m.insert((ty, st(Active, Unpaid), Transition::Cancel), st(Cancelled, Unpaid));
        }
        m.insert((FirstInSeries, st(Active, Pending), verified), st(Completed, PaymentMethodVerified));
        m.insert((OneTime, st(Active, Pending), verified), st(Completed, PaymentMethodVerified));
        m.insert((NextInSeries, st(Active, Pending), Transition::AttemptFailed), st(Completed, Unpaid));
        m
    }

    fn all_states() -> Vec<SessionState> {
        Status::ALL.iter().flat_map(|s| PaymentOutcome::ALL.iter().map(move |o| st(*s, *o))).collect()
    }

    #[test]
    fn every_legal_move_is_applied_and_every_other_is_refused() {
        let legal = legal();
        let mut checked = 0;
        for ty in SessionType::ALL.iter().copied() {
            for from in all_states() {
                for t in Transition::ALL.iter().copied() {
                    let got = transition(ty, from, t);
                    match legal.get(&(ty, from, t)) {
                        Some(to) => assert_eq!(got, Ok(*to), "{ty} {from:?} {t:?}"),
                        None => assert!(got.is_err(), "{ty} {from:?} {t:?} should be refused, got {got:?}"),
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 3 * 4 * 6 * 10);
    }

    #[test]
    fn refusals_say_why() {
        let pending = st(Active, Pending);
        assert_eq!(transition(OneTime, pending, Transition::Cancel).unwrap_err().code, ErrorCode::PaymentProcessing);
        assert_eq!(transition(OneTime, pending, Transition::Expire).unwrap_err().code, ErrorCode::PaymentProcessing);
        assert_eq!(transition(OneTime, st(Expired, Unpaid), Transition::Cancel).unwrap_err().code, ErrorCode::SessionNotActive);
        // A late processor result for an ended session is refused; lifecycle voids it.
        assert_eq!(
            transition(OneTime, st(Expired, NotStarted), Transition::AttemptSucceeded(Success::Paid)).unwrap_err().code,
            ErrorCode::SessionNotActive
        );
        assert_eq!(
            transition(NextInSeries, st(Active, Pending), Transition::AttemptSucceeded(Success::Verified)).unwrap_err().code,
            ErrorCode::IllegalTransition
        );
    }

    /// Walk everything reachable from the start and check the invariants hold there.
    #[test]
    fn reachable_states_keep_the_invariants() {
        for ty in SessionType::ALL.iter().copied() {
            let mut seen = HashSet::from([SessionState::INITIAL]);
            let mut queue = VecDeque::from([SessionState::INITIAL]);
            while let Some(s) = queue.pop_front() {
                assert!(s.outcome != Pending || s.status == Active, "pending outside active: {s:?}");
                if s.status == Completed {
                    assert!(matches!(s.outcome, Paid | Unpaid | Reserved | PaymentMethodVerified), "{ty} {s:?}");
                }
                if s.status == Active {
                    assert!(matches!(s.outcome, NotStarted | Pending | Unpaid), "{ty} {s:?}");
                }
                for t in Transition::ALL {
                    if let Ok(next) = transition(ty, s, *t) {
                        assert!(!(s.status.is_terminal() && next.status == Active), "terminal reopened");
                        if seen.insert(next) {
                            queue.push_back(next);
                        }
                    }
                }
            }
            if ty == NextInSeries {
                assert!(!seen.iter().any(|s| s.status == Expired), "a next_in_series never expires");
            }
        }
    }
}
