//! What a customer agrees to, in plain words, in their language. Pure, so it
//! is tested as text.

use crate::i18n::{Arg, Lang};
use ps_contract::mandate::{MandateAmount, MandateTerms, Recurrence, RecurrenceType};

fn every(t: &Lang, r: &Recurrence) -> String {
    let unit = match r.kind {
        RecurrenceType::Daily => "day",
        RecurrenceType::Weekly => "week",
        RecurrenceType::Monthly => "month",
        RecurrenceType::Yearly => "year",
    };
    let mut s = t.text_with("terms-every", &[("unit", unit.into()), ("n", Arg::Number(i64::from(r.interval_count)))]);
    let on = match (r.kind, r.on) {
        (RecurrenceType::Weekly, Some(_)) => Some("terms-on-weekday"),
        (RecurrenceType::Monthly, Some(_)) => Some("terms-on-month-day"),
        (RecurrenceType::Yearly, Some(_)) => Some("terms-on-year-day"),
        _ => None,
    };
    if let (Some(id), Some(day)) = (on, r.on) {
        s.push_str(", ");
        s.push_str(&t.text_with(id, &[("day", Arg::Number(i64::from(day)))]));
    }
    if r.adjustment.is_some() {
        s.push_str(&format!(" ({})", t.text("terms-weekend-adjusted")));
    }
    s
}

/// Sentences describing the mandate `merchant` asks for.
pub fn describe(t: &Lang, merchant: &str, terms: &MandateTerms) -> Vec<String> {
    let c = terms.currency;
    let money = |minor: i64| Arg::Text(t.money(c, minor));
    let amount = match terms.amount {
        Some(MandateAmount::Exact(a)) => t.text_with("terms-amount-exact", &[("amount", money(a.minor()))]),
        Some(MandateAmount::Range { min: Some(min), max: Some(max) }) => {
            t.text_with("terms-amount-range", &[("min", money(min.minor())), ("max", money(max.minor()))])
        }
        Some(MandateAmount::Range { min: None, max: Some(max) }) => t.text_with("terms-amount-up-to", &[("max", money(max.minor()))]),
        Some(MandateAmount::Range { min: Some(min), max: None }) => t.text_with("terms-amount-at-least", &[("min", money(min.minor()))]),
        Some(MandateAmount::Range { min: None, max: None }) | None => {
            t.text_with("terms-amount-any", &[("currency", c.to_string().into())])
        }
    };
    let when = match &terms.recurrence {
        Some(r) => every(t, r),
        None => t.text("terms-when-due"),
    };
    let mut out = vec![t.text_with("terms-charge", &[("merchant", merchant.into()), ("amount", amount.into()), ("when", when.into())])];
    if let Some(vp) = terms.validity_period {
        let date = |d| Arg::Text(t.date(d));
        match (vp.start_date, vp.end_date) {
            (Some(s), Some(e)) => out.push(t.text_with("terms-from-until", &[("start", date(s)), ("end", date(e))])),
            (Some(s), None) => out.push(t.text_with("terms-from", &[("start", date(s))])),
            (None, Some(e)) => out.push(t.text_with("terms-until", &[("end", date(e))])),
            (None, None) => {}
        }
    }
    match (terms.max_occurrences, terms.total_amount) {
        (Some(n), Some(total)) => {
            out.push(t.text_with("terms-max-count-total", &[("n", Arg::Number(i64::from(n))), ("total", money(total.minor()))]))
        }
        (Some(n), None) => out.push(t.text_with("terms-max-count", &[("n", Arg::Number(i64::from(n)))])),
        (None, Some(total)) => out.push(t.text_with("terms-max-total", &[("total", money(total.minor()))])),
        (None, None) => {}
    }
    out.push(t.text_with("terms-cancel", &[("merchant", merchant.into())]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_contract::money::Currency;
    use serde_json::json;

    fn contract_example() -> MandateTerms {
        ps_contract::mandate::parse_mandate_options(
            &json!({"type": "scheduled", "amount": 19900, "recurrence": {"type": "monthly", "interval_count": 1, "on": 1},
                    "validity_period": {"start_date": "2026-12-01", "end_date": "2027-11-30"}, "max_occurrences": 12, "total_amount": 238800}),
            Currency::parse("ZAR").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_contract_example_in_words() {
        let text = describe(&Lang::default(), "gym", &contract_example()).join(" ");
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
        let first = &describe(&Lang::default(), "shop", &terms)[0];
        assert_eq!(first, "You authorise shop to charge this card between USD 10.00 and USD 500.00, whenever a payment is due, without you being present.");
    }

    #[test]
    fn the_contract_example_in_french_and_portuguese() {
        let fr = describe(&Lang::negotiate(Some("fr"), None), "gym", &contract_example()).join(" ");
        assert_eq!(
            fr,
            "Vous autorisez gym à débiter cette carte de 199,00\u{a0}ZAR, une fois par mois, le 1er du mois. \
             Les prélèvements peuvent avoir lieu du 1 décembre 2026 au 30 novembre 2027. \
             Au plus 12 prélèvements, pour un total d'au plus 2\u{202f}388,00\u{a0}ZAR. \
             Vous pouvez annuler cette autorisation à tout moment en contactant gym."
        );
        let pt = describe(&Lang::negotiate(Some("pt"), None), "gym", &contract_example()).join(" ");
        assert_eq!(
            pt,
            "Autoriza gym a cobrar neste cartão 199,00\u{a0}ZAR, uma vez por mês, no dia 1 do mês. \
             As cobranças podem ser feitas de 1 de dezembro de 2026 a 30 de novembro de 2027. \
             No máximo 12 cobranças, e não mais de 2388,00\u{a0}ZAR no total. \
             Pode cancelar esta autorização a qualquer momento, contactando gym."
        );
    }

    #[test]
    fn weekly_with_weekend_adjustment_and_a_single_charge() {
        let terms = ps_contract::mandate::parse_mandate_options(
            &json!({"amount": 500, "recurrence": {"type": "weekly", "interval_count": 2, "on": 3}, "max_occurrences": 1}),
            Currency::parse("USD").unwrap(),
        )
        .unwrap();
        let en = describe(&Lang::default(), "shop", &terms);
        assert_eq!(en[0], "You authorise shop to charge this card USD 5.00, once every 2 weeks, on a Wednesday.");
        assert_eq!(en[1], "At most one charge.");
        let fr = describe(&Lang::negotiate(Some("fr"), None), "shop", &terms);
        assert_eq!(fr[0], "Vous autorisez shop à débiter cette carte de 5,00\u{a0}USD, une fois toutes les 2 semaines, le mercredi.");
        assert_eq!(fr[1], "Un seul prélèvement.");
    }
}
