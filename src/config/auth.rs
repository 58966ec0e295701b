//! `[auth]`: who may use the node. Off until a key is configured.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// Where tokens' signing keys come from, and what tokens must say.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC secret (HS256/384/512 tokens).
    pub hmac_secret: Option<String>,
    /// A file holding the HMAC secret (surrounding whitespace ignored).
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public keys: RSA (RS*/PS*), EC P-256/P-384 (ES256/ES384) or Ed25519 (EdDSA).
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS (`{"keys":[...]}`) fetched at start and again when a token names a key id
    /// it does not hold.
    pub jwks_url: Option<String>,
    /// A token naming an unknown key id fetches the JWKS again at most this often.
    pub jwks_refetch_min_ms: u64,
    /// When set, a token's `iss` must be this.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must contain this.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The cookie a token may come in (after `Authorization` and `?token=`).
    pub cookie: String,
    /// What a client without a token may do.
    pub anonymous: AnonymousConfig,
}

/// Topic patterns granted to clients without a token (`[auth.anonymous]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymousConfig {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret: None,
            hmac_secret_file: None,
            public_key_files: Vec::new(),
            jwks_url: None,
            jwks_refetch_min_ms: 10_000,
            issuer: None,
            audience: None,
            leeway_secs: 5,
            cookie: "starling_token".into(),
            anonymous: AnonymousConfig::default(),
        }
    }
}

impl AuthConfig {
    /// Whether any key is configured (then every client route needs a token or an
    /// anonymous grant).
    pub fn enabled(&self) -> bool {
        self.hmac_secret.is_some()
            || self.hmac_secret_file.is_some()
            || !self.public_key_files.is_empty()
            || self.jwks_url.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.hmac_secret.is_some() && self.hmac_secret_file.is_some() {
            return Err(invalid(
                "auth.hmac_secret_file",
                "set either auth.hmac_secret or auth.hmac_secret_file, not both",
            ));
        }
        if self.hmac_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(invalid(
                "auth.hmac_secret",
                "must be at least 32 characters (a short secret can be guessed offline)",
            ));
        }
        if let Some(url) = &self.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "auth.jwks_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.leeway_secs > 300 {
            return Err(invalid("auth.leeway_secs", "must be at most 300"));
        }
        let cookie_ok = !self.cookie.is_empty()
            && self
                .cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !cookie_ok {
            return Err(invalid("auth.cookie", "1 or more of A-Z a-z 0-9 _ -"));
        }
        let anonymous = [
            ("publish", &self.anonymous.publish),
            ("subscribe", &self.anonymous.subscribe),
        ];
        for (what, patterns) in anonymous {
            for (i, p) in patterns.iter().enumerate() {
                if let Err(why) = crate::auth::Pattern::parse(p) {
                    return Err(invalid(
                        format!("auth.anonymous.{what}[{i}]"),
                        why.to_string(),
                    ));
                }
                if p.contains("{sub}") {
                    return Err(invalid(
                        format!("auth.anonymous.{what}[{i}]"),
                        "an anonymous client has no subject: {sub} never matches",
                    ));
                }
            }
        }
        let grants = !self.anonymous.publish.is_empty() || !self.anonymous.subscribe.is_empty();
        if grants && !self.enabled() {
            return Err(invalid(
                "auth.anonymous",
                "anonymous grants need auth: configure a key (hmac_secret, hmac_secret_file, public_key_files or jwks_url); without one everyone may do everything",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn auth_is_off_until_a_key_is_configured() {
        let c = Config::parse("").unwrap();
        assert!(!c.auth.enabled());
        assert_eq!(c.auth.cookie, "starling_token");
        let c = Config::parse("[auth]\njwks_url = \"http://127.0.0.1:9/jwks\"\n").unwrap();
        assert!(c.auth.enabled());
    }

    #[test]
    fn bad_auth_settings_are_named() {
        for (text, key) in [
            ("[auth]\nhmac_secret = \"short\"\n", "auth.hmac_secret"),
            ("[auth]\njwks_url = \"ftp://x\"\n", "auth.jwks_url"),
            ("[auth]\ncookie = \"a b\"\n", "auth.cookie"),
            (
                "[auth.anonymous]\nsubscribe = [\"news.>\"]\n",
                "auth.anonymous",
            ),
            (
                "[auth]\njwks_url = \"http://x\"\n[auth.anonymous]\nsubscribe = [\"a.>.b\"]\n",
                "auth.anonymous.subscribe[0]",
            ),
            (
                "[auth]\njwks_url = \"http://x\"\n[auth.anonymous]\npublish = [\"u.{sub}\"]\n",
                "auth.anonymous.publish[0]",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
