//! Card numbers, checked where they enter: the vault. Pure.

/// Digits only, 12–19 of them, passing the Luhn check.
pub fn valid_number(pan: &str) -> bool {
    let len = pan.len();
    if !(12..=19).contains(&len) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = pan
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The sandbox's funding per test card, as Stripe's test cards are: its
/// debit and prepaid numbers, credit otherwise.
pub fn sandbox_funding(pan: &str) -> &'static str {
    match pan {
        "4000056655665556" | "5200828282828210" => "debit",
        "5105105105105100" => "prepaid",
        _ => "credit",
    }
}

pub fn brand(pan: &str) -> &'static str {
    match pan.as_bytes() {
        [b'4', ..] => "visa",
        [b'5', b'1'..=b'5', ..] | [b'2', b'2'..=b'7', ..] => "mastercard",
        [b'3', b'4' | b'7', ..] => "amex",
        [b'6', ..] => "discover",
        _ => "unknown",
    }
}

/// Removes the spaces and dashes people type.
pub fn normalise(input: &str) -> String {
    input.chars().filter(|c| !c.is_whitespace() && *c != '-').collect()
}

/// What the sandbox processor does with a card, by number (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxBehaviour {
    Succeeds,
    Declines {
        error_code: &'static str,
        decline_code: &'static str,
    },
    /// Verifies and pays with the customer present; later merchant-initiated charges fail.
    SucceedsOnlyWithCustomerPresent,
    /// Pays; the first capture or void of the payment fails with a retryable
    /// `processing_error`, as an acquirer's hiccup would. Ours, beyond DESIGN §7.
    SettlementFailsOnce,
    /// Pays; every refund of the payment fails (`expired_or_canceled_card`), as Stripe's test card does.
    RefundsFail,
    /// 3-D Secure (Stripe's authentication test cards, DESIGN §11): with the
    /// customer present the issuer asks for a challenge, then `then` decides;
    /// off-session it asks again unless the card was set up for later use.
    Authenticates {
        then: AfterAuthentication,
        off_session: OffSession,
    },
}

/// What the issuer does once the customer has authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAuthentication {
    Pays,
    Declines { error_code: &'static str, decline_code: &'static str },
}

/// What an authentication card does with the customer absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffSession {
    /// Asks every time: off-session that is a decline (`authentication_required`).
    AlwaysAsks,
    /// Set up once with the customer (a saved card's first payment), never asks again.
    PaysOnceSetUp,
}

/// The code an off-session charge fails with when the issuer wants the customer.
pub const AUTHENTICATION_REQUIRED: &str = "authentication_required";
/// The decline of an attempt whose challenge failed or was abandoned.
pub const AUTHENTICATION_FAILED: &str = "authentication_failed";

pub fn sandbox_behaviour(pan: &str) -> SandboxBehaviour {
    use SandboxBehaviour::*;
    match pan {
        "4000000000000002" => Declines { error_code: "card_declined", decline_code: "generic_decline" },
        "4000000000009995" => Declines { error_code: "card_declined", decline_code: "insufficient_funds" },
        "4000000000000069" => Declines { error_code: "expired_card", decline_code: "expired_card" },
        "4000000000000127" => Declines { error_code: "incorrect_cvc", decline_code: "incorrect_cvc" },
        "4000000000000119" => Declines { error_code: "processing_error", decline_code: "processing_error" },
        "4000000000000341" => SucceedsOnlyWithCustomerPresent,
        "4000000000000309" => SettlementFailsOnce,
        "4000000000005126" => RefundsFail,
        "4000002760003184" => Authenticates { then: AfterAuthentication::Pays, off_session: OffSession::AlwaysAsks },
        "4000002500003155" => Authenticates { then: AfterAuthentication::Pays, off_session: OffSession::PaysOnceSetUp },
        "4000008260003178" => Authenticates {
            then: AfterAuthentication::Declines { error_code: "card_declined", decline_code: "insufficient_funds" },
            off_session: OffSession::AlwaysAsks,
        },
        _ => Succeeds,
    }
}

pub fn decline_message(decline_code: &str) -> &'static str {
    match decline_code {
        "insufficient_funds" => "Your card has insufficient funds.",
        "expired_card" => "Your card has expired.",
        "incorrect_cvc" => "Your card's security code is incorrect.",
        "processing_error" => "An error occurred while processing your card. Try again in a little bit.",
        AUTHENTICATION_REQUIRED => "Your bank asks you to authenticate this payment; it cannot be charged without you.",
        AUTHENTICATION_FAILED => "Your bank could not authenticate this payment.",
        _ => "Your card was declined.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sandbox_test_card_is_a_valid_number() {
        for pan in [
            "4242424242424242",
            "4000000000000002",
            "4000000000009995",
            "4000000000000069",
            "4000000000000127",
            "4000000000000119",
            "4000000000000341",
            "4000000000000309",
            "4000000000005126",
            "4000002760003184",
            "4000002500003155",
            "4000008260003178",
        ] {
            assert!(valid_number(pan), "{pan}");
            assert_eq!(brand(pan), "visa");
        }
    }

    #[test]
    fn invalid_numbers() {
        for pan in ["4242424242424241", "", "4242 4242 4242 4242", "abcd", "42424242424"] {
            assert!(!valid_number(pan), "{pan}");
        }
        assert_eq!(normalise("4242 4242-4242 4242"), "4242424242424242");
    }

    #[test]
    fn behaviours() {
        assert_eq!(sandbox_behaviour("4242424242424242"), SandboxBehaviour::Succeeds);
        assert!(matches!(sandbox_behaviour("4000000000009995"), SandboxBehaviour::Declines { decline_code: "insufficient_funds", .. }));
        assert_eq!(sandbox_behaviour("4000000000000341"), SandboxBehaviour::SucceedsOnlyWithCustomerPresent);
        assert_eq!(sandbox_behaviour("4000000000000309"), SandboxBehaviour::SettlementFailsOnce);
        assert_eq!(sandbox_behaviour("4000000000005126"), SandboxBehaviour::RefundsFail);
        assert!(matches!(
            sandbox_behaviour("4000002760003184"),
            SandboxBehaviour::Authenticates { off_session: OffSession::AlwaysAsks, .. }
        ));
        assert!(matches!(
            sandbox_behaviour("4000002500003155"),
            SandboxBehaviour::Authenticates { off_session: OffSession::PaysOnceSetUp, .. }
        ));
        assert!(matches!(
            sandbox_behaviour("4000008260003178"),
            SandboxBehaviour::Authenticates { then: AfterAuthentication::Declines { decline_code: "insufficient_funds", .. }, .. }
        ));
        assert_eq!(brand("5555555555554444"), "mastercard");
        assert_eq!(sandbox_behaviour("4000056655665556"), SandboxBehaviour::Succeeds);
        assert_eq!(
            (sandbox_funding("4242424242424242"), sandbox_funding("4000056655665556"), sandbox_funding("5105105105105100")),
            ("credit", "debit", "prepaid")
        );
    }
}
