//! How a merchant's checkout looks (DESIGN §13): its settings
//! (`checkout_settings.update`), overridden field by field by a create's
//! `branding`. Every value is checked here, at the edge, so nothing a merchant
//! writes can become CSS or HTML: colours are `#rrggbb`, the logo an https
//! URL, the rest closed lists.

use crate::error::{ApiError, ErrorCode};
use crate::fields::Obj;
use crate::lifecycle::wire_enum;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest display name shown; longer would not fit the header.
pub const MAX_DISPLAY_NAME: usize = 100;
const MAX_LOGO_URL: usize = 2048;
/// Origins allowed to frame the checkout.
pub const MAX_EMBED_ORIGINS: usize = 10;

wire_enum!(
    /// How the customer reaches the checkout (DESIGN §13): sent to it, or
    /// framed in the merchant's own page (a registered `embed_origins` only).
    PresentationMode {
        Redirect => "redirect",
        EmbeddedModal => "embedded_modal",
        EmbeddedInline => "embedded_inline",
    }
);

impl PresentationMode {
    pub fn embedded(self) -> bool {
        self != PresentationMode::Redirect
    }
}

/// The language a checkout speaks: a BCP 47 tag (`af`, `zu`, `fr`, `pt-BR`),
/// kept in its canonical form. Any well-formed tag is taken: the checkout
/// speaks the closest language it has, and the customer's browser decides
/// between those it lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Locale(String);

impl Locale {
    /// RFC 5646's advice for the longest tag worth keeping.
    pub const MAX_LEN: usize = 35;

    pub fn parse(s: &str) -> Option<Locale> {
        if s.len() > Locale::MAX_LEN {
            return None;
        }
        let l = icu_locale_core::Locale::try_from_str(s).ok()?;
        // `und` (no language) says nothing a checkout could speak.
        (!l.id.language.is_unknown()).then(|| Locale(l.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `locale` in a create, if there: well-formed, or refused naming the field.
    pub(crate) fn from_field(o: &Obj<'_>) -> Result<Option<Locale>, ApiError> {
        let Some(tag) = o.str("locale", 64)? else { return Ok(None) };
        Locale::parse(tag).map(Some).ok_or_else(|| {
            let p = o.param("locale");
            ApiError::param(
                ErrorCode::ParameterInvalidValue,
                p.as_str(),
                format!("{p} must be a BCP 47 language tag of at most {} characters, e.g. en, fr, pt-BR", Locale::MAX_LEN),
            )
        })
    }
}

wire_enum!(
    /// The corners of boxes and buttons.
    BorderStyle {
        Rounded => "rounded",
        Pill => "pill",
        Rectangular => "rectangular",
    }
);

wire_enum!(
    /// Fonts from a short list the customer's device already has: no font is
    /// fetched from elsewhere.
    Font {
        System => "system",
        SansSerif => "sans_serif",
        Serif => "serif",
        Monospace => "monospace",
    }
);

impl Font {
    /// The CSS font stack.
    pub fn stack(self) -> &'static str {
        match self {
            Font::System => "system-ui,-apple-system,'Segoe UI',Roboto,sans-serif",
            Font::SansSerif => "Helvetica,Arial,sans-serif",
            Font::Serif => "Georgia,'Times New Roman',serif",
            Font::Monospace => "ui-monospace,Menlo,Consolas,monospace",
        }
    }
}

impl BorderStyle {
    /// The CSS border radius.
    pub fn radius(self) -> &'static str {
        match self {
            BorderStyle::Rounded => "8px",
            BorderStyle::Pill => "999px",
            BorderStyle::Rectangular => "0",
        }
    }
}

/// A colour as `#rrggbb`, nothing else: it lands in a stylesheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color([u8; 3]);

impl Color {
    pub fn parse(s: &str) -> Option<Color> {
        let hex = s.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(Color([byte(0)?, byte(2)?, byte(4)?]))
    }

    pub fn css(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0[0], self.0[1], self.0[2])
    }

    /// WCAG 2.1 relative luminance.
    fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0[0]) + 0.7152 * lin(self.0[1]) + 0.0722 * lin(self.0[2])
    }

    /// WCAG 2.1 contrast ratio between two colours (1 to 21).
    pub fn contrast(self, other: Color) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }

    /// The text colour readable on this one: black or white, whichever
    /// contrasts more (every background reaches WCAG AA's 4.5:1 with one).
    pub fn text_on(self) -> Color {
        let (black, white) = (Color([0, 0, 0]), Color([0xff, 0xff, 0xff]));
        if self.contrast(black) >= self.contrast(white) {
            black
        } else {
            white
        }
    }
}

impl Serialize for Color {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.css())
    }
}

impl<'de> Deserialize<'de> for Color {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Color, D::Error> {
        let s = String::deserialize(d)?;
        Color::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a #rrggbb colour")))
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Color {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Color".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"})
    }
}

/// How the checkout looks; each field absent keeps what is underneath it
/// (a session's over the merchant's settings, those over ours).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Branding {
    /// Shown where the customer sees who asks to be paid (the merchant id otherwise).
    pub display_name: Option<String>,
    /// An https URL of the merchant's logo.
    pub logo_url: Option<String>,
    /// Or the logo the merchant uploaded (`logo_image` on an update), kept by
    /// us and named by its SHA-256: the checkout serves it from its own host.
    /// One logo either way: setting one form clears the other.
    #[serde(default)]
    pub logo_image: Option<String>,
    /// The header's colour; its text is black or white, whichever reads.
    pub brand_color: Option<Color>,
    /// The pay button's colour; its text likewise.
    pub button_color: Option<Color>,
    pub border_style: Option<BorderStyle>,
    pub font: Option<Font>,
}

const BRANDING_FIELDS: [&str; 6] = ["display_name", "logo_url", "brand_color", "button_color", "border_style", "font"];

impl Branding {
    /// A `branding` object (or the branding fields of the settings), each
    /// fault named by its field (`param` prefixes them: `branding.logo_url`).
    pub fn parse(v: &Value, param: &str) -> Result<Branding, ApiError> {
        let o = Obj::new(v, param)?;
        o.only(&BRANDING_FIELDS)?;
        Branding::read(&o)
    }

    fn read(o: &Obj<'_>) -> Result<Branding, ApiError> {
        let color = |key: &str| -> Result<Option<Color>, ApiError> {
            match o.str(key, 64)? {
                None => Ok(None),
                Some(s) => Color::parse(s).map(Some).ok_or_else(|| {
                    ApiError::param(ErrorCode::ParameterInvalidValue, o.param(key), format!("{} must be a colour as #rrggbb", o.param(key)))
                }),
            }
        };
        let logo_url = match o.str("logo_url", MAX_LOGO_URL)? {
            None => None,
            Some(s) => Some(
                logo(s)
                    .map_err(|why| ApiError::param(ErrorCode::UrlInvalid, o.param("logo_url"), format!("{} {why}", o.param("logo_url"))))?,
            ),
        };
        Ok(Branding {
            display_name: o.str("display_name", MAX_DISPLAY_NAME)?.map(str::to_owned),
            logo_url,
            logo_image: None,
            brand_color: color("brand_color")?,
            button_color: color("button_color")?,
            border_style: o.choice("border_style", BorderStyle::parse, "rounded, pill, rectangular")?,
            font: o.choice("font", Font::parse, "system, sans_serif, serif, monospace")?,
        })
    }

    /// This branding over `under`, field by field.
    pub fn over(&self, under: &Branding) -> Branding {
        // The logo is one field in two forms: whichever this one has wins whole.
        let logo = if self.logo_url.is_some() || self.logo_image.is_some() { self } else { under };
        Branding {
            display_name: self.display_name.clone().or_else(|| under.display_name.clone()),
            logo_url: logo.logo_url.clone(),
            logo_image: logo.logo_image.clone(),
            brand_color: self.brand_color.or(under.brand_color),
            button_color: self.button_color.or(under.button_color),
            border_style: self.border_style.or(under.border_style),
            font: self.font.or(under.font),
        }
    }
}

/// An https URL with a host and no credentials: fetched by the customer's
/// browser, so never plain http (mixed content) nor anything but a URL.
fn logo(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("is not an absolute URL: {e}"))?;
    if u.scheme() != "https" {
        return Err("must use https".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(u.to_string())
}

/// A merchant's checkout settings, as `checkout_settings.update` and
/// `checkout_settings.retrieve` answer them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckoutSettings {
    /// Always `checkout_settings`.
    pub object: String,
    #[serde(flatten)]
    pub branding: Branding,
    /// Origins (`https://shop.example`) allowed to frame the checkout.
    pub embed_origins: Vec<String>,
}

impl CheckoutSettings {
    pub const OBJECT: &'static str = "checkout_settings";

    pub fn new(branding: Branding, embed_origins: Vec<String>) -> CheckoutSettings {
        CheckoutSettings { object: Self::OBJECT.to_owned(), branding, embed_origins }
    }
}

/// `checkout_settings.update`: the fields given replace the merchant's; a
/// field given as `null` goes back to ours; absent ones stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsUpdate {
    pub set: Branding,
    /// An uploaded logo, checked (its `sha256` is in `set.logo_image`).
    pub logo: Option<LogoImage>,
    /// Fields given as `null`.
    pub cleared: Vec<&'static str>,
    pub embed_origins: Option<Vec<String>>,
}

impl SettingsUpdate {
    pub fn parse(body: &Value) -> Result<SettingsUpdate, ApiError> {
        let o = Obj::new(body, "")?;
        let mut allowed = BRANDING_FIELDS.to_vec();
        allowed.extend(["embed_origins", "logo_image"]);
        o.only(&allowed)?;
        let mut set = Branding::read(&o)?;
        let logo = LogoImage::from_field(&o)?;
        if logo.is_some() && set.logo_url.is_some() {
            return Err(ApiError::param(
                ErrorCode::ParameterConflict,
                "logo_image",
                "give logo_url or logo_image, not both: a checkout has one logo",
            ));
        }
        set.logo_image = logo.as_ref().map(|l| l.sha256.clone());
        let obj = body.as_object().expect("checked by Obj::new");
        let cleared: Vec<&'static str> =
            BRANDING_FIELDS.iter().chain(&["logo_image"]).copied().filter(|k| obj.get(*k).is_some_and(Value::is_null)).collect();
        let embed_origins = match o.get("embed_origins") {
            None => None,
            Some(Value::Array(list)) => {
                if list.len() > MAX_EMBED_ORIGINS {
                    return Err(ApiError::param(
                        ErrorCode::ParameterInvalidValue,
                        "embed_origins",
                        format!("embed_origins takes at most {MAX_EMBED_ORIGINS} origins"),
                    ));
                }
                let mut origins = Vec::with_capacity(list.len());
                for (i, v) in list.iter().enumerate() {
                    let param = format!("embed_origins[{i}]");
                    let s = v
                        .as_str()
                        .ok_or_else(|| ApiError::param(ErrorCode::ParameterInvalidType, &param, format!("{param} must be a string")))?;
                    origins.push(origin(s).map_err(|why| ApiError::param(ErrorCode::UrlInvalid, &param, format!("{param} {why}")))?);
                }
                origins.sort();
                origins.dedup();
                Some(origins)
            }
            Some(_) => return Err(o.wrong_type("embed_origins", "an array of origins")),
        };
        if set == Branding::default() && cleared.is_empty() && embed_origins.is_none() {
            return Err(ApiError::new(ErrorCode::ParameterMissing, "give at least one setting to change"));
        }
        Ok(SettingsUpdate { set, logo, cleared, embed_origins })
    }
}

/// A logo a merchant uploads: PNG, JPEG or WebP (what its bytes are, not what
/// it is called; never SVG, which can carry script), at most
/// `MAX_LOGO_BYTES` and `MAX_LOGO_SIDE` pixels a side.
#[derive(Clone, PartialEq, Eq)]
pub struct LogoImage {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    /// Lowercase hex: its name where it is kept and served.
    pub sha256: String,
}

/// Large enough for any header logo, small enough to keep in a row and a message.
pub const MAX_LOGO_BYTES: usize = 128 * 1024;
pub const MAX_LOGO_SIDE: usize = 2048;

impl std::fmt::Debug for LogoImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogoImage({}, {} bytes, {})", self.content_type, self.bytes.len(), self.sha256)
    }
}

impl LogoImage {
    /// Checks an image's bytes: its type by its header, its size and sides.
    pub fn check(bytes: Vec<u8>) -> Result<LogoImage, String> {
        use sha2::Digest;
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(format!("is {} bytes; a logo may be at most {MAX_LOGO_BYTES}", bytes.len()));
        }
        let content_type = match imagesize::image_type(&bytes) {
            Ok(imagesize::ImageType::Png) => "image/png",
            Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
            Ok(imagesize::ImageType::Webp) => "image/webp",
            _ => return Err("must be a PNG, JPEG or WebP image".into()),
        };
        let size = imagesize::blob_size(&bytes).map_err(|_| format!("is not a readable {content_type} image"))?;
        if size.width == 0 || size.height == 0 || size.width > MAX_LOGO_SIDE || size.height > MAX_LOGO_SIDE {
            return Err(format!("is {}×{} pixels; each side must be 1 to {MAX_LOGO_SIDE}", size.width, size.height));
        }
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(LogoImage { content_type, bytes, sha256 })
    }

    /// `logo_image`: the image's bytes in standard base64.
    fn from_field(o: &Obj<'_>) -> Result<Option<LogoImage>, ApiError> {
        use base64::Engine;
        // Base64 is 4/3 of the bytes; anything longer is over the cap already.
        let Some(text) = o.str("logo_image", MAX_LOGO_BYTES.div_ceil(3) * 4 + 4)? else { return Ok(None) };
        let p = o.param("logo_image");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| ApiError::param(ErrorCode::ParameterInvalidValue, p.as_str(), format!("{p} must be the image in base64")))?;
        LogoImage::check(bytes).map(Some).map_err(|why| ApiError::param(ErrorCode::ParameterInvalidValue, p.as_str(), format!("{p} {why}")))
    }
}

/// An https origin and nothing more (`https://shop.example[:port]`): it is
/// written into a `frame-ancestors` directive.
fn origin(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("is not an origin: {e}"))?;
    if u.scheme() != "https" {
        return Err("must use https".into());
    }
    if u.host_str().is_none_or(str::is_empty) || !u.username().is_empty() || u.password().is_some() {
        return Err("must be scheme and host only".into());
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || s.trim_end_matches('/') != u.origin().ascii_serialization() {
        return Err("must be an origin: scheme, host and port, no path".into());
    }
    Ok(u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colours_are_hex_triplets_and_their_text_reads() {
        assert_eq!(Color::parse("#0A2540").map(Color::css).as_deref(), Some("#0a2540"));
        for hostile in ["red", "#fff", "#12345g", "#123456;}", "#123456 ", "url(x)", "#1234567"] {
            assert_eq!(Color::parse(hostile), None, "{hostile}");
        }
        // Whatever the background, the chosen text passes WCAG AA (4.5:1).
        for c in ["#ffffff", "#000000", "#777777", "#ff0000", "#00ff00", "#0000ff", "#ffcc00", "#7f7f7f", "#767676"] {
            let c = Color::parse(c).unwrap();
            assert!(c.contrast(c.text_on()) >= 4.5, "{} on {}: {}", c.text_on().css(), c.css(), c.contrast(c.text_on()));
        }
    }

    #[test]
    fn branding_is_checked_field_by_field_and_layers() {
        let b = Branding::parse(
            &json!({"display_name": "Kaapse Koffie", "logo_url": "https://cdn.koffie.example/logo.png", "brand_color": "#6f4e37",
                    "button_color": "#1a7f37", "border_style": "pill", "font": "serif"}),
            "branding",
        )
        .unwrap();
        assert_eq!(b.border_style, Some(BorderStyle::Pill));
        let code = |v: Value| Branding::parse(&v, "branding").unwrap_err();
        let e = code(json!({"logo_url": "http://cdn.example/logo.png"}));
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::UrlInvalid, Some("branding.logo_url")));
        assert_eq!(code(json!({"logo_url": "javascript:alert(1)"})).code, ErrorCode::UrlInvalid);
        assert_eq!(code(json!({"brand_color": "red;background:url(//x)"})).code, ErrorCode::ParameterInvalidValue);
        assert_eq!(code(json!({"font": "Comic Sans"})).code, ErrorCode::ParameterInvalidValue);
        assert_eq!(code(json!({"border_style": "dashed"})).code, ErrorCode::ParameterInvalidValue);
        assert_eq!(code(json!({"display_name": "x".repeat(101)})).code, ErrorCode::StringTooLong);
        assert_eq!(code(json!({"css": "body{}"})).code, ErrorCode::ParameterUnknown);

        let merchant = Branding { display_name: Some("Shop".into()), font: Some(Font::Serif), ..Branding::default() };
        let session = Branding { display_name: Some("Shop — Black Friday".into()), ..Branding::default() };
        let seen = session.over(&merchant);
        assert_eq!((seen.display_name.as_deref(), seen.font), (Some("Shop — Black Friday"), Some(Font::Serif)));
    }

    #[test]
    fn settings_updates_set_clear_and_list_origins() {
        let u = SettingsUpdate::parse(&json!({"display_name": "Shop", "logo_url": null,
                                             "embed_origins": ["https://shop.example", "https://shop.example/", "https://b.example:8443"]}))
        .unwrap();
        assert_eq!(u.cleared, ["logo_url"]);
        assert_eq!(u.embed_origins.unwrap(), ["https://b.example:8443", "https://shop.example"]);
        let e = |v: Value| SettingsUpdate::parse(&v).unwrap_err();
        assert_eq!(e(json!({"embed_origins": ["http://shop.example"]})).param.as_deref(), Some("embed_origins[0]"));
        assert_eq!(e(json!({"embed_origins": ["https://shop.example/pay"]})).code, ErrorCode::UrlInvalid);
        assert_eq!(e(json!({"embed_origins": ["https://shop.example; script-src *"]})).code, ErrorCode::UrlInvalid);
        assert_eq!(e(json!({})).code, ErrorCode::ParameterMissing);
    }

    #[test]
    fn a_logo_is_what_its_bytes_are_and_small() {
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
            .unwrap();
        let ok = LogoImage::check(png.clone()).unwrap();
        assert_eq!((ok.content_type, ok.sha256.len()), ("image/png", 64));
        assert!(LogoImage::check(b"<svg onload=alert(1)></svg>".to_vec()).unwrap_err().contains("PNG, JPEG or WebP"));
        assert!(LogoImage::check(b"GIF89a".to_vec()).is_err(), "not on the list");
        // A PNG header claiming 4096 pixels a side.
        let mut wide = png.clone();
        wide[16..20].copy_from_slice(&4096u32.to_be_bytes());
        assert!(LogoImage::check(wide).unwrap_err().contains("4096×1"));
        let mut big = png;
        big.resize(MAX_LOGO_BYTES + 1, 0);
        assert!(LogoImage::check(big).unwrap_err().contains("at most"));
        let u = SettingsUpdate::parse(&json!({"logo_image": null})).unwrap();
        assert_eq!(u.cleared, ["logo_image"]);
        let e = SettingsUpdate::parse(&json!({"logo_image": "aGk=", "font": "serif"})).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::ParameterInvalidValue, Some("logo_image")));
    }
}
