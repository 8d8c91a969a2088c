//! Merchants' checkout settings (`checkout_settings`) and the logos they
//! upload (`checkout_logos`): this module is their one writer (lifecycle, for
//! `checkout_settings.update`); the checkout reads them to style its pages
//! and serve the logos.

use deadpool_postgres::GenericClient;
use ps_contract::branding::{Branding, CheckoutSettings, LogoImage, SettingsUpdate};
use ps_contract::ids::MerchantId;
use ps_runtime::HandlerError;

/// The merchant's settings; ours (nothing set) if it has none.
pub async fn get(client: &impl GenericClient, merchant: &MerchantId) -> Result<CheckoutSettings, HandlerError> {
    let row = client
        .query_opt(
            &client.prepare_cached("SELECT branding, embed_origins FROM checkout_settings WHERE merchant_id = $1").await?,
            &[&merchant.as_str()],
        )
        .await?;
    Ok(match row {
        Some(r) => CheckoutSettings::new(branding_of(r.get(0))?, r.get(1)),
        None => CheckoutSettings::new(Branding::default(), vec![]),
    })
}

/// Applies an update (the fields given set, those given as null cleared)
/// under the row's lock, and answers the settings as they now are.
pub async fn update(client: &impl GenericClient, merchant: &MerchantId, u: &SettingsUpdate) -> Result<CheckoutSettings, HandlerError> {
    client
        .execute(
            &client.prepare_cached("INSERT INTO checkout_settings (merchant_id) VALUES ($1) ON CONFLICT (merchant_id) DO NOTHING").await?,
            &[&merchant.as_str()],
        )
        .await?;
    let r = client
        .query_one(
            &client.prepare_cached("SELECT branding, embed_origins FROM checkout_settings WHERE merchant_id = $1 FOR UPDATE").await?,
            &[&merchant.as_str()],
        )
        .await?;
    let mut branding = u.set.over(&branding_of(r.get(0))?);
    for field in &u.cleared {
        match *field {
            "display_name" => branding.display_name = None,
            "logo_url" => branding.logo_url = None,
            "logo_image" => branding.logo_image = None,
            "brand_color" => branding.brand_color = None,
            "button_color" => branding.button_color = None,
            "border_style" => branding.border_style = None,
            "font" => branding.font = None,
            other => return Err(HandlerError::Permanent(format!("no branding field {other}"))),
        }
    }
    if let Some(logo) = &u.logo {
        keep_logo(client, logo).await?;
    }
    let origins: Vec<String> = u.embed_origins.clone().unwrap_or_else(|| r.get(1));
    client
        .execute(
            &client
                .prepare_cached("UPDATE checkout_settings SET branding = $2, embed_origins = $3, updated_at = now() WHERE merchant_id = $1")
                .await?,
            &[&merchant.as_str(), &serde_json::to_value(&branding)?, &origins],
        )
        .await?;
    Ok(CheckoutSettings::new(branding, origins))
}

/// Keeps an uploaded logo by its digest: the same image uploaded twice, by
/// one merchant or two, is one row. Rows are never changed, so a page that
/// names a digest always gets the image it meant.
async fn keep_logo(client: &impl GenericClient, logo: &LogoImage) -> Result<(), HandlerError> {
    client
        .execute(
            &client
                .prepare_cached(
                    "INSERT INTO checkout_logos (sha256, content_type, bytes) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
                )
                .await?,
            &[&logo.sha256, &logo.content_type, &logo.bytes],
        )
        .await?;
    Ok(())
}

/// An uploaded logo's type and bytes, by its digest.
pub async fn logo(client: &impl GenericClient, sha256: &str) -> Result<Option<(String, Vec<u8>)>, HandlerError> {
    let row = client
        .query_opt(&client.prepare_cached("SELECT content_type, bytes FROM checkout_logos WHERE sha256 = $1").await?, &[&sha256])
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

fn branding_of(v: serde_json::Value) -> Result<Branding, HandlerError> {
    serde_json::from_value(v).map_err(|e| HandlerError::Permanent(format!("stored checkout branding does not parse: {e}")))
}
