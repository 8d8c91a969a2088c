//! What a customer agrees to, in plain words. Pure, so it is tested as text.

use chrono::NaiveDate;
use ps_contract::mandate::{MandateAmount, MandateTerms, Recurrence, RecurrenceType};
use ps_contract::money::Currency;

pub fn money(currency: Currency, minor: i64) -> String {
    let formatted = currency.format_minor(minor);
    let (whole, frac) = formatted.split_once('.').map_or((formatted.as_str(), None), |(w, f)| (w, Some(f)));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{currency} {grouped}.{f}"),
        None => format!("{currency} {grouped}"),
    }
}

fn date(d: NaiveDate) -> String {
    d.format("%-d %B %Y").to_string()
}

fn every(r: &Recurrence) -> String {
    let unit = match r.kind {
        RecurrenceType::Daily => "day",
        RecurrenceType::Weekly => "week",
        RecurrenceType::Monthly => "month",
        RecurrenceType::Yearly => "year",
    };
    let mut s = match r.interval_count {
        1 => format!("once every {unit}"),
        n => format!("once every {n} {unit}s"),
    };
    match (r.kind, r.on) {
        (RecurrenceType::Weekly, Some(d)) => {
            let day = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"][(d as usize - 1).min(6)];
            s.push_str(&format!(", on a {day}"));
        }
        (RecurrenceType::Monthly, Some(d)) => s.push_str(&format!(", on day {d} of the month")),
        (RecurrenceType::Yearly, Some(d)) => s.push_str(&format!(", on day {d} of the year")),
        _ => {}
    }
    if r.adjustment.is_some() {
        s.push_str(" (the nearest weekday when that falls on a weekend)");
    }
    s
}

/// Sentences describing the mandate `merchant` asks for.
pub fn describe(merchant: &str, t: &MandateTerms) -> Vec<String> {
    let c = t.currency;
    let amount = match t.amount {
        Some(MandateAmount::Exact(a)) => money(c, a.minor()),
        Some(MandateAmount::Range { min: Some(min), max: Some(max) }) => {
            format!("between {} and {}", money(c, min.minor()), money(c, max.minor()))
        }
        Some(MandateAmount::Range { min: None, max: Some(max) }) => format!("up to {}", money(c, max.minor())),
        Some(MandateAmount::Range { min: Some(min), max: None }) => format!("at least {}", money(c, min.minor())),
        Some(MandateAmount::Range { min: None, max: None }) | None => format!("amounts in {c} that you agree with them"),
    };
    let when = match &t.recurrence {
        Some(r) => every(r),
        None => "whenever a payment is due, without you being present".to_owned(),
    };
    let mut out = vec![format!("You authorise {merchant} to charge this card {amount}, {when}.")];
    if let Some(vp) = t.validity_period {
        match (vp.start_date, vp.end_date) {
            (Some(s), Some(e)) => out.push(format!("Charges may be made from {} until {}.", date(s), date(e))),
            (Some(s), None) => out.push(format!("Charges may be made from {}.", date(s))),
            (None, Some(e)) => out.push(format!("Charges may be made until {}.", date(e))),
            (None, None) => {}
        }
    }
    match (t.max_occurrences, t.total_amount) {
        (Some(n), Some(total)) => out.push(format!("At most {n} charges, and no more than {} in total.", money(c, total.minor()))),
        (Some(n), None) => out.push(format!("At most {n} charges.")),
        (None, Some(total)) => out.push(format!("No more than {} in total.", money(c, total.minor()))),
        (None, None) => {}
    }
    out.push(format!("You can cancel this authorisation at any time by contacting {merchant}."));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_is_grouped_with_the_currency_exponent() {
        assert_eq!(money(Currency::parse("ZAR").unwrap(), 238800), "ZAR 2,388.00");
        assert_eq!(money(Currency::parse("JPY").unwrap(), 1234567), "JPY 1,234,567");
        assert_eq!(money(Currency::parse("KWD").unwrap(), 1005), "KWD 1.005");
        assert_eq!(money(Currency::parse("USD").unwrap(), 5), "USD 0.05");
    }

    #[test]
    fn the_contract_example_in_words() {
        let terms = ps_contract::mandate::parse_mandate_options(
            &json!({"type": "scheduled", "amount": 19900, "recurrence": {"type": "monthly", "interval_count": 1, "on": 1},
                    "validity_period": {"start_date": "2026-12-01", "end_date": "2027-11-30"}, "max_occurrences": 12, "total_amount": 238800}),
            Currency::parse("ZAR").unwrap(),
        )
        .unwrap();
        let text = describe("gym", &terms).join(" ");
        assert_eq!(
            text,
            "You authorise gym to charge this card ZAR 199.00, once every month, on day 1 of the month. \
             Charges may be made from 1 December 2026 until 30 November 2027. \
             At most 12 charges, and no more than ZAR 2,388.00 in total. \
             You can cancel this authorisation at any time by contacting gym."
        );
    }

    #[test]
    fn ranges_and_on_demand() {
        let terms =
            ps_contract::mandate::parse_mandate_options(&json!({"amount": {"min": 1000, "max": 50000}}), Currency::parse("USD").unwrap())
                .unwrap();
        let first = &describe("shop", &terms)[0];
        assert_eq!(first, "You authorise shop to charge this card between USD 10.00 and USD 500.00, whenever a payment is due, without you being present.");
    }
}
