//! The checkout's languages (DESIGN §13): which one a page speaks, its words
//! (Fluent messages in `locales/`), and its amounts and dates (CLDR's, by ICU4X).
//!
//! The language is negotiated from the session's `locale`, then the
//! customer's `Accept-Language`, among those we translate; English when none
//! matches. Numbers and dates follow the most specific tag asked for in that
//! language (`pt-BR` groups and writes months as Brazil does, `pt` as Portugal).

use chrono::{Datelike, NaiveDate};
use fluent_bundle::FluentValue;
use fluent_langneg::{negotiate_languages, NegotiationStrategy};
use fluent_templates::{LanguageIdentifier, Loader};
use icu_datetime::fieldsets::YMD;
use icu_datetime::FixedCalendarDateTimeFormatter;
use icu_decimal::input::Decimal;
use icu_decimal::DecimalFormatter;
use icu_locale_core::Locale;
use ps_contract::money::Currency;
use std::borrow::Cow;
use std::collections::HashMap;

fluent_templates::static_loader! {
    static MESSAGES = {
        locales: "./locales",
        fallback_language: "en",
        // No bidi isolation marks around arguments: every language here is
        // left to right, and the marks would reach the page as stray characters.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

/// The languages the checkout is translated into, the first the fallback.
pub const LANGUAGES: [&str; 3] = ["en", "fr", "pt"];

/// Formats when the customer asked for a language but no region: English as
/// written outside the US, Portuguese as in Portugal (and Lusophone Africa).
fn default_format(lang: &str) -> &'static str {
    match lang {
        "fr" => "fr",
        "pt" => "pt-PT",
        _ => "en-GB",
    }
}

/// The language a page speaks, and the locale its numbers and dates follow.
#[derive(Debug, Clone)]
pub struct Lang {
    lang: LanguageIdentifier,
    format: Locale,
}

impl Default for Lang {
    fn default() -> Lang {
        Lang::negotiate(None, None)
    }
}

impl Lang {
    /// The session's `locale` first (a merchant that set one means it), then
    /// the customer's `Accept-Language` in its order of preference.
    pub fn negotiate(session_locale: Option<&str>, accept_language: Option<&str>) -> Lang {
        let mut requested: Vec<LanguageIdentifier> = session_locale.and_then(|l| l.parse().ok()).into_iter().collect();
        requested.extend(accept_language.map(fluent_langneg::accepted_languages::parse).unwrap_or_default());
        let available: Vec<LanguageIdentifier> = LANGUAGES.iter().filter_map(|l| l.parse().ok()).collect();
        let fallback: LanguageIdentifier = LANGUAGES[0].parse().unwrap_or_default();
        let lang = negotiate_languages(&requested, &available, Some(&fallback), NegotiationStrategy::Lookup)
            .first()
            .map(|l| (*l).clone())
            .unwrap_or(fallback);
        // The most specific tag asked for in that language, if it has a region.
        let format = requested
            .iter()
            .find(|r| r.language == lang.language && r.region.is_some())
            .and_then(|r| Locale::try_from_str(&r.to_string()).ok())
            .or_else(|| Locale::try_from_str(default_format(lang.language.as_str())).ok())
            .unwrap_or(Locale::UNKNOWN);
        Lang { lang, format }
    }

    /// For `<html lang>`.
    pub fn tag(&self) -> String {
        self.lang.to_string()
    }

    /// A message. A missing one is a bug the tests catch (`every_message_is_in_every_language`).
    pub fn text(&self, id: &str) -> String {
        MESSAGES.lookup(&self.lang, id)
    }

    /// A message with its arguments: text, or numbers (which pick plurals).
    pub fn text_with(&self, id: &str, args: &[(&'static str, Arg)]) -> String {
        let args: HashMap<Cow<'static, str>, FluentValue> = args
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Arg::Text(s) => FluentValue::from(s.clone()),
                    Arg::Number(n) => FluentValue::from(*n),
                };
                (Cow::Borrowed(*k), v)
            })
            .collect();
        MESSAGES.lookup_with_args(&self.lang, id, &args)
    }

    /// An amount in minor units, with its currency's exponent kept (JPY none,
    /// KWD three) and grouped as the locale groups.
    pub fn money(&self, currency: Currency, minor: i64) -> String {
        let mut d = Decimal::from(minor);
        let exponent = i16::from(currency.exponent());
        d.multiply_pow10(-exponent);
        d.absolute.pad_end(-exponent);
        let amount = match DecimalFormatter::try_new((&self.format).into(), Default::default()) {
            Ok(f) => f.format(&d).to_string(),
            Err(_) => d.to_string(),
        };
        self.text_with("money", &[("amount", Arg::Text(amount)), ("currency", Arg::Text(currency.to_string()))])
    }

    /// A date as the locale writes it in full ("1 December 2026", "1 de dezembro de 2026").
    pub fn date(&self, day: NaiveDate) -> String {
        let date = icu_calendar::Date::try_new_gregorian(day.year(), day.month() as u8, day.day() as u8);
        let formatter = FixedCalendarDateTimeFormatter::<icu_calendar::Gregorian, _>::try_new((&self.format).into(), YMD::long());
        match (date, formatter) {
            (Ok(d), Ok(f)) => f.format(&d).to_string(),
            _ => day.format("%Y-%m-%d").to_string(),
        }
    }
}

/// A message argument.
pub enum Arg {
    Text(String),
    Number(i64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_owned())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(lang: &str) -> Vec<String> {
        let path = format!("{}/locales/{lang}/checkout.ftl", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut ids: Vec<String> = text
            .lines()
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            .filter_map(|l| l.split_once(" =").map(|(id, _)| id.trim().to_owned()))
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn every_message_is_in_every_language() {
        let english = ids("en");
        assert!(english.len() > 50, "{english:?}");
        for lang in &LANGUAGES[1..] {
            assert_eq!(ids(lang), english, "{lang} has other messages than English");
            // Every argument any message takes, so a message resolves only if its own parse and use are sound.
            let mut args: HashMap<Cow<'static, str>, FluentValue> = HashMap::new();
            for name in ["amount", "currency", "merchant", "min", "max", "when", "start", "end", "total", "reason", "action", "card"] {
                args.insert(name.into(), FluentValue::from("x"));
            }
            for name in ["brand", "last4", "expiry", "unit"] {
                args.insert(name.into(), FluentValue::from("x"));
            }
            args.insert("n".into(), FluentValue::from(2));
            args.insert("day".into(), FluentValue::from(3));
            let id_lang: LanguageIdentifier = lang.parse().unwrap();
            for id in &english {
                // Found in that language itself, not the fallback's, and resolved without error.
                let found = MESSAGES.lookup_single_language(&id_lang, id, Some(&args));
                assert!(found.as_ref().is_ok_and(|t| !t.is_empty()), "{lang}: {id}: {found:?}");
            }
        }
    }

    #[test]
    fn every_message_a_template_uses_exists() {
        let dir = format!("{}/templates", env!("CARGO_MANIFEST_DIR"));
        let english = ids("en");
        let mut used = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for part in text.split("t.text(\"").skip(1) {
                let id = part.split('"').next().unwrap();
                assert!(english.iter().any(|e| e == id), "templates use {id}, which no language has");
                used += 1;
            }
        }
        assert!(used > 15, "{used}");
    }

    #[test]
    fn the_session_locale_comes_first_then_the_customers() {
        assert_eq!(Lang::negotiate(Some("fr"), Some("pt-BR,pt;q=0.9")).tag(), "fr");
        assert_eq!(Lang::negotiate(None, Some("de-DE,pt-BR;q=0.8,en;q=0.5")).tag(), "pt");
        assert_eq!(Lang::negotiate(Some("zu"), Some("fr-CA")).tag(), "fr", "a language we lack gives way to the customer's");
        assert_eq!(Lang::negotiate(Some("zu"), None).tag(), "en");
        assert_eq!(Lang::negotiate(None, Some("garbage;;q=x")).tag(), "en");
        assert_eq!(Lang::default().tag(), "en");
    }

    #[test]
    fn amounts_keep_the_exponent_and_follow_the_locale() {
        let zar = Currency::parse("ZAR").unwrap();
        let en = Lang::default();
        assert_eq!(en.money(zar, 238800), "ZAR 2,388.00");
        assert_eq!(en.money(Currency::parse("JPY").unwrap(), 1234567), "JPY 1,234,567");
        assert_eq!(en.money(Currency::parse("KWD").unwrap(), 1005), "KWD 1.005");
        assert_eq!(en.money(Currency::parse("USD").unwrap(), 5), "USD 0.05");
        assert_eq!(en.money(zar, 0), "ZAR 0.00");
        // French groups with a narrow no-break space and keeps the code after, joined by a no-break space.
        assert_eq!(Lang::negotiate(Some("fr"), None).money(zar, 238800), "2\u{202f}388,00\u{a0}ZAR");
        // Brazil groups four digits, Portugal does not.
        assert_eq!(Lang::negotiate(Some("pt-BR"), None).money(zar, 238800), "2.388,00\u{a0}ZAR");
        assert_eq!(Lang::negotiate(Some("pt"), None).money(zar, 238800), "2388,00\u{a0}ZAR");
        assert_eq!(Lang::negotiate(Some("pt"), None).money(zar, 12345678), "123\u{a0}456,78\u{a0}ZAR");
    }

    #[test]
    fn dates_in_words() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(Lang::default().date(d), "1 December 2026");
        assert_eq!(Lang::negotiate(Some("en-US"), None).date(d), "December 1, 2026");
        assert_eq!(Lang::negotiate(Some("fr"), None).date(d), "1 décembre 2026");
        assert_eq!(Lang::negotiate(Some("pt"), None).date(d), "1 de dezembro de 2026");
    }
}
