//! `psctl checkout-settings`: how a merchant's checkout looks, set and read
//! through the same commands a merchant sends (checkout_settings.update /
//! .retrieve), so the same checks apply.

use clap::Subcommand;
use serde_json::{Map, Value};

// Parsed once per run: the variants' sizes cost nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum CheckoutCmd {
    /// Change the settings given; `--clear FIELD` goes back to ours.
    Set {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        display_name: Option<String>,
        /// https only.
        #[arg(long)]
        logo_url: Option<String>,
        /// Upload the logo instead: a PNG, JPEG or WebP file of at most 128 KiB, kept and served by the checkout.
        #[arg(long, conflicts_with = "logo_url")]
        logo_file: Option<std::path::PathBuf>,
        /// #rrggbb
        #[arg(long)]
        brand_color: Option<String>,
        /// #rrggbb
        #[arg(long)]
        button_color: Option<String>,
        /// rounded, pill or rectangular.
        #[arg(long)]
        border_style: Option<String>,
        /// system, sans_serif, serif or monospace.
        #[arg(long)]
        font: Option<String>,
        /// An https origin that may frame the checkout; repeat for several (replaces the list).
        #[arg(long = "embed-origin")]
        embed_origins: Vec<String>,
        /// A field to clear (display_name, logo_url, logo_image, brand_color, button_color, border_style, font).
        #[arg(long)]
        clear: Vec<String>,
    },
    /// The merchant's settings.
    Show {
        #[arg(long)]
        merchant: String,
    },
}

/// The command and its body for `action`; a logo file that cannot be read is
/// the error, named. Its content is checked by the command, as any sender's.
pub fn command(action: CheckoutCmd) -> Result<(&'static str, String, Value), String> {
    use base64::Engine;
    use ps_contract::routing::command::{CHECKOUT_SETTINGS_RETRIEVE, CHECKOUT_SETTINGS_UPDATE};
    Ok(match action {
        CheckoutCmd::Set {
            merchant,
            display_name,
            logo_url,
            logo_file,
            brand_color,
            button_color,
            border_style,
            font,
            embed_origins,
            clear,
        } => {
            let mut body = Map::new();
            let logo_image = match logo_file {
                Some(path) => Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(std::fs::read(&path).map_err(|e| format!("cannot read the logo file {}: {e}", path.display()))?),
                ),
                None => None,
            };
            let fields = [
                ("display_name", display_name),
                ("logo_url", logo_url),
                ("logo_image", logo_image),
                ("brand_color", brand_color),
                ("button_color", button_color),
                ("border_style", border_style),
                ("font", font),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body.insert(k.to_owned(), Value::String(v));
                }
            }
            for k in clear {
                body.insert(k, Value::Null);
            }
            if !embed_origins.is_empty() {
                body.insert("embed_origins".to_owned(), Value::from(embed_origins));
            }
            (CHECKOUT_SETTINGS_UPDATE, merchant, Value::Object(body))
        }
        CheckoutCmd::Show { merchant } => (CHECKOUT_SETTINGS_RETRIEVE, merchant, Value::Object(Map::new())),
    })
}
