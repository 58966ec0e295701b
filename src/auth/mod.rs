//! Who a client is and what it may do: JWTs verified by `jsonwebtoken` (`verify.rs`, keys
//! from the config and a JWKS in `jwks.rs`), and the topic patterns of their `starling`
//! claim (`grants.rs`). Off until a key is configured; then every client route needs a
//! token or an anonymous grant. The HTTP layer finds the token and asks [`Auth::identify`];
//! every route and WebSocket frame then asks the [`Identity`].

mod grants;
mod jwks;
mod verify;

use crate::config::AuthConfig;
use crate::protocol::{ApiError, ErrorCode};
pub(crate) use grants::Pattern;
use grants::{Grants, PatternError};
use std::sync::Arc;
use verify::Verifier;

/// Why a token was not accepted (401 `unauthorized`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("a token is required (Authorization: Bearer, ?token= or the {0} cookie)")]
    Missing(String),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYet,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token's signature does not verify with any configured key")]
    Signature,
    #[error("the token names key id {0:?}, which the JWKS does not hold")]
    UnknownKey(String),
    #[error("the token's starling claim: pattern {0:?}: {1}")]
    Claim(String, PatternError),
}

impl AuthError {
    /// The `reason` label of the denial metric.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing",
            AuthError::Malformed(_) | AuthError::Claim(..) => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYet => "not_yet_valid",
            AuthError::Issuer | AuthError::Audience => "claims",
            AuthError::Signature | AuthError::UnknownKey(_) => "signature",
        }
    }

    pub(crate) fn to_api(&self) -> ApiError {
        metrics::counter!("starling_auth_denied_total", "reason" => self.reason()).increment(1);
        ApiError::new(ErrorCode::Unauthorized, self.to_string())
    }
}

/// A key that could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("auth: {path} is not a usable PEM public key (RSA, EC P-256/P-384 or Ed25519)")]
    Key { path: String },
    #[error("auth: the HMAC secret in {0} is shorter than 32 characters")]
    ShortSecret(String),
}

/// The node's authentication: its keys and the anonymous grants.
pub(crate) struct Auth {
    verifier: Option<Verifier>,
    anonymous: Arc<Grants>,
    cookie: String,
}

impl Auth {
    /// Loads the configured keys (files are read now, a JWKS on first use).
    pub(crate) fn from_config(c: &AuthConfig) -> Result<Auth, AuthSetupError> {
        let verifier = if c.enabled() {
            Some(Verifier::from_config(c)?)
        } else {
            None
        };
        // Validated with the config.
        let anonymous =
            Grants::parse(&c.anonymous.publish, &c.anonymous.subscribe, false).unwrap_or_default();
        Ok(Auth {
            verifier,
            anonymous: Arc::new(anonymous),
            cookie: c.cookie.clone(),
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The token a request carries: `Authorization: Bearer`, else `?token=`, else the
    /// cookie. A malformed `Authorization` header is an error, not a missing token.
    pub(crate) fn pick_token(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
        cookie_header: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        if let Some(h) = authorization {
            let (scheme, token) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(AuthError::Malformed(
                    "the Authorization header must be `Bearer <token>`".into(),
                ));
            }
            return Ok(Some(token.trim().to_string()));
        }
        if let Some(t) = query_token.filter(|t| !t.is_empty()) {
            return Ok(Some(t.to_string()));
        }
        let from_cookie = cookie_header.and_then(|h| {
            h.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == self.cookie && !v.is_empty()).then(|| v.to_string())
            })
        });
        Ok(from_cookie)
    }

    /// Who presents `token` (or no token). With auth off, anyone may do anything.
    pub(crate) async fn identify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Identity::open());
        };
        let Some(token) = token else {
            if self.anonymous.is_empty() {
                return Err(AuthError::Missing(self.cookie.clone()));
            }
            return Ok(Identity {
                subject: None,
                grants: self.anonymous.clone(),
                expires_at: None,
                open: false,
            });
        };
        let claims = verifier.verify(token).await?;
        let s = claims.starling;
        let grants = Grants::parse(&s.publish, &s.subscribe, s.admin)
            .map_err(|(p, e)| AuthError::Claim(p, e))?;
        Ok(Identity {
            subject: claims.sub.map(Arc::from),
            grants: Arc::new(grants),
            expires_at: Some(claims.exp),
            open: false,
        })
    }
}

/// A verified client: its subject, grants and token expiry.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    subject: Option<Arc<str>>,
    grants: Arc<Grants>,
    /// Unix seconds; `None` without a token.
    expires_at: Option<u64>,
    /// Auth is off: everything is allowed (admin routes keep their own loopback rule).
    open: bool,
}

impl Identity {
    fn open() -> Identity {
        Identity {
            subject: None,
            grants: Arc::default(),
            expires_at: None,
            open: true,
        }
    }

    /// Whether auth is on for this client.
    pub(crate) fn checked(&self) -> bool {
        !self.open
    }

    pub(crate) fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// When a connection on this token ends: at its `exp` plus the leeway its verification
    /// allowed (a token accepted within the leeway is not cut off at once).
    pub(crate) fn ends_at(&self, leeway_secs: u64) -> Option<tokio::time::Instant> {
        let exp = self.expires_at?.saturating_add(leeway_secs);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(tokio::time::Instant::now() + std::time::Duration::from_secs(exp.saturating_sub(now)))
    }

    /// Publishing to `topic`; 403 `forbidden` without the grant.
    pub(crate) fn may_publish(&self, topic: &str) -> Result<(), ApiError> {
        if self.open || self.grants.may_publish(topic, self.subject()) {
            return Ok(());
        }
        Err(self.refuse(format!("publishing to {topic}")))
    }

    /// Subscribing to `topic` in any mode, replaying, polling, acking, and its info.
    pub(crate) fn may_subscribe(&self, topic: &str) -> Result<(), ApiError> {
        if self.open || self.grants.may_subscribe(topic, self.subject()) {
            return Ok(());
        }
        Err(self.refuse(format!("subscribing to {topic}")))
    }

    /// With auth on, a token with `admin: true`. (With auth off the caller decides.)
    pub(crate) fn may_administer(&self) -> Result<(), ApiError> {
        if !self.open && self.grants.admin {
            return Ok(());
        }
        Err(self.refuse("this (it needs admin: true)".to_string()))
    }

    /// A missing grant: 403 `forbidden` for a token; for a client without one (served by
    /// the anonymous grants) 401 `unauthorized`, since a token might grant it.
    fn refuse(&self, what: String) -> ApiError {
        let (reason, code, message) = if self.expires_at.is_none() {
            let m = format!("a token is required for {what}");
            ("missing", ErrorCode::Unauthorized, m)
        } else {
            let m = format!("the token does not grant {what}");
            ("forbidden", ErrorCode::Forbidden, m)
        };
        metrics::counter!("starling_auth_denied_total", "reason" => reason).increment(1);
        ApiError::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let mut c = AuthConfig {
            hmac_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..AuthConfig::default()
        };
        c.anonymous.subscribe = vec!["public.>".into()];
        Auth::from_config(&c).unwrap()
    }

    #[test]
    fn the_token_comes_from_the_header_then_the_query_then_the_cookie() {
        let a = auth();
        let cookie = Some("theme=dark; starling_token=c1; x=y");
        assert_eq!(
            a.pick_token(Some("Bearer h1"), Some("q1"), cookie).unwrap(),
            Some("h1".into())
        );
        assert_eq!(
            a.pick_token(None, Some("q1"), cookie).unwrap(),
            Some("q1".into())
        );
        assert_eq!(a.pick_token(None, None, cookie).unwrap(), Some("c1".into()));
        assert_eq!(a.pick_token(None, None, Some("other=1")).unwrap(), None);
        for bad in ["Basic abc", "Bearer", "Bearer  ", "token"] {
            assert!(a.pick_token(Some(bad), None, None).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn without_a_token_only_the_anonymous_grants_apply() {
        let id = auth().identify(None).await.unwrap();
        assert!(id.may_subscribe("public.news").is_ok());
        assert_eq!(
            id.may_subscribe("chat").unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            id.may_publish("public.news").unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert!(id.may_administer().is_err());
        let c = AuthConfig {
            hmac_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..AuthConfig::default()
        };
        let closed = Auth::from_config(&c).unwrap();
        assert!(matches!(
            closed.identify(None).await,
            Err(AuthError::Missing(_))
        ));
        let open = Auth::from_config(&AuthConfig::default()).unwrap();
        let id = open.identify(None).await.unwrap();
        assert!(id.may_publish("anything").is_ok() && !id.checked());
    }
}
