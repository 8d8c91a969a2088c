//! How psctl prints: tables for people, JSON (`--json`) for scripts.

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::Value;

pub struct Out {
    pub json: bool,
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

impl Out {
    /// Rows as a table of `columns`, or as a JSON array of the whole rows.
    pub fn rows(&self, columns: &[&str], rows: &[Value]) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(rows).expect("JSON values serialise"));
            return;
        }
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(columns.to_vec());
        for r in rows {
            t.add_row(columns.iter().map(|c| cell(r.get(*c))).collect::<Vec<_>>());
        }
        println!("{t}");
        if rows.is_empty() {
            eprintln!("psctl: none");
        }
    }

    /// One object: its fields as a two-column table, or JSON.
    pub fn object(&self, v: &Value) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).expect("JSON values serialise"));
            return;
        }
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
        if let Some(o) = v.as_object() {
            for (k, val) in o {
                t.add_row(vec![k.clone(), cell(Some(val))]);
            }
        }
        println!("{t}");
    }

    /// A progress bar on standard error for a long operation; hidden for
    /// `--json` and when standard error is not a terminal.
    pub fn progress(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if self.json {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }
}
