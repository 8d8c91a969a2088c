//! A value that must never reach a log or an error message.

use std::fmt;

/// `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value,
/// so every place that reads one says so.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A connection URL whose password is a secret: `Debug` and `Display` print it
/// with the password as `***` (`amqp://svc:***@host/vhost`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as it may be shown: the password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else { return "***".into() };
        // userinfo ends at the last '@' before the first '/', per RFC 3986.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else { return self.0.clone() };
        let userinfo = &rest[..at];
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_secret_is_printed() {
        let s = Secret::new("hunter2");
        assert_eq!((format!("{s:?}"), s.to_string()), ("***".to_owned(), "***".to_owned()));
        for (url, shown) in [
            ("amqps://svc:p%40ss@rabbit:5671/prod", "amqps://svc:***@rabbit:5671/prod"),
            ("postgres://svc:pw@db/ps?sslmode=verify-full", "postgres://svc:***@db/ps?sslmode=verify-full"),
            ("postgres://svc@db/ps", "postgres://svc@db/ps"),
            ("postgres://h1:5432,h2:5432/db", "postgres://h1:5432,h2:5432/db"),
            ("not a url pw", "***"),
        ] {
            let u = SecretUrl::new(url);
            assert_eq!(u.to_string(), shown);
            assert!(!format!("{u:?}").contains("pw") && !format!("{u:?}").contains("p%40ss"), "{u:?}");
        }
    }
}
