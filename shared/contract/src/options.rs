//! Moment's nested `options` on a create (DESIGN §12), read into the flat
//! body our contract has always taken, so one parser checks both forms. An
//! error names the field where the sender wrote it: `options.checkout_options.
//! return_url`, not `return_url`.

use crate::error::{ApiError, ErrorCode};
use crate::fields::Obj;
use serde_json::{Map, Value};

/// Where each nested field lands in the flat body: (path under `options`, flat key).
const MOVES: &[(&[&str], &str)] = &[
    (&["customer"], "customer"),
    (&["customer_id"], "customer_id"),
    (&["payment_method_id"], "payment_method_id"),
    (&["mandate_id"], "mandate_id"),
    (&["checkout_options", "return_url"], "return_url"),
    (&["checkout_options", "save_payment_method"], "save_payment_method"),
    (&["checkout_options", "expires_in"], "expires_in"),
    (&["checkout_options", "presentation_mode"], "presentation_mode"),
    (&["checkout_options", "locale"], "locale"),
    (&["payment_method_options", "card", "capture_method"], "capture_method"),
    (&["mandate_options"], "mandate_options"),
    (&["subscription_options"], "subscription_options"),
];

/// The flat body, and which of its fields came from `options` (flat key, nested path).
pub(crate) struct Flattened {
    pub body: Value,
    moved: Vec<(&'static str, String)>,
}

impl Flattened {
    /// The error as the sender wrote the field: a moved field's param is its nested path.
    pub fn rename(&self, mut e: ApiError) -> ApiError {
        let Some(param) = e.param.clone() else { return e };
        for (flat, nested) in &self.moved {
            let rest = match param.strip_prefix(flat) {
                Some(rest) if rest.is_empty() || rest.starts_with('.') => rest,
                _ => continue,
            };
            let renamed = format!("{nested}{rest}");
            if e.message.starts_with(param.as_str()) {
                e.message = format!("{renamed}{}", &e.message[param.len()..]);
            }
            e.param = Some(renamed);
            break;
        }
        e
    }
}

/// The body with `options` taken apart. A field given both ways is refused
/// (which one was meant cannot be known); an unknown field under `options` is
/// refused like any unknown field.
pub(crate) fn flatten(body: &Value) -> Result<Flattened, ApiError> {
    let top = Obj::new(body, "")?;
    let Some(options) = top.get("options") else {
        let mut body = body.clone();
        if let Some(m) = body.as_object_mut() {
            // `options: null` is absent, as any null is.
            m.remove("options");
        }
        return Ok(Flattened { body, moved: vec![] });
    };
    check_known(options, &[])?;
    let mut flat: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
    flat.remove("options");
    let mut moved = vec![];
    for (path, key) in MOVES {
        let Some(v) = lookup(options, path) else { continue };
        let nested = format!("options.{}", path.join("."));
        if flat.get(*key).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::param(ErrorCode::ParameterConflict, nested.as_str(), format!("give {key} or {nested}, not both")));
        }
        flat.insert((*key).to_owned(), v.clone());
        moved.push((*key, nested));
    }
    Ok(Flattened { body: Value::Object(flat), moved })
}

/// The value at `path` under `options`, when every object on the way is there.
fn lookup<'a>(options: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(options, |v, k| v.get(k)).filter(|v| !v.is_null())
}

/// Every key under `options` (at `at`) leads to a field we read, and every
/// object on the way is an object.
fn check_known(v: &Value, at: &[&str]) -> Result<(), ApiError> {
    let param = std::iter::once("options").chain(at.iter().copied()).collect::<Vec<_>>().join(".");
    let o = Obj::new(v, &param)?;
    for key in o.keys() {
        let mut path = at.to_vec();
        path.push(key.as_str());
        let leaf = MOVES.iter().any(|(p, _)| *p == path.as_slice());
        let inner = MOVES.iter().any(|(p, _)| p.len() > path.len() && p.starts_with(&path));
        match (leaf, inner) {
            (true, _) => {}
            (false, true) if o.get(key).is_some() => check_known(&v[key.as_str()], &path)?,
            (false, true) => {}
            (false, false) => {
                let p = o.param(key);
                return Err(ApiError::param(ErrorCode::ParameterUnknown, p.as_str(), format!("unknown field {p}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_land_flat_and_errors_name_them_as_written() {
        let f = flatten(&json!({"amount": 1, "options": {"checkout_options": {"return_url": "x"},
            "payment_method_options": {"card": {"capture_method": "manual"}}}}))
        .unwrap();
        assert_eq!(f.body, json!({"amount": 1, "return_url": "x", "capture_method": "manual"}));
        let e = f.rename(ApiError::param(ErrorCode::UrlInvalid, "return_url", "return_url is not an absolute URL"));
        assert_eq!(e.param.as_deref(), Some("options.checkout_options.return_url"));
        assert_eq!(e.message, "options.checkout_options.return_url is not an absolute URL");
        let f = flatten(&json!({"options": {"customer": {"name": "A"}}})).unwrap();
        let e = f.rename(ApiError::param(ErrorCode::ParameterMissing, "customer.email", "customer.email is required"));
        assert_eq!(e.param.as_deref(), Some("options.customer.email"));
        let e = f.rename(ApiError::param(ErrorCode::ParameterMissing, "customer_id", "x"));
        assert_eq!(e.param.as_deref(), Some("customer_id"), "customer_id is not customer");
    }

    #[test]
    fn unknown_conflicting_and_mistyped_options_are_refused() {
        let err = |v: Value| {
            let e = flatten(&v).err().unwrap();
            (e.code, e.param.unwrap_or_default())
        };
        assert_eq!(err(json!({"options": {"colour": 1}})), (ErrorCode::ParameterUnknown, "options.colour".into()));
        assert_eq!(
            err(json!({"options": {"checkout_options": {"cancel_url": "x"}}})),
            (ErrorCode::ParameterUnknown, "options.checkout_options.cancel_url".into())
        );
        assert_eq!(
            err(json!({"options": {"payment_method_options": {"card": {"capture": "manual"}}}})),
            (ErrorCode::ParameterUnknown, "options.payment_method_options.card.capture".into())
        );
        assert_eq!(err(json!({"options": [1]})), (ErrorCode::ParameterInvalidType, "options".into()));
        assert_eq!(
            err(json!({"options": {"checkout_options": "x"}})),
            (ErrorCode::ParameterInvalidType, "options.checkout_options".into())
        );
        assert_eq!(
            err(json!({"return_url": "a", "options": {"checkout_options": {"return_url": "b"}}})),
            (ErrorCode::ParameterConflict, "options.checkout_options.return_url".into())
        );
        assert_eq!(flatten(&json!({"amount": 1, "options": null})).unwrap().body, json!({"amount": 1}));
    }
}
