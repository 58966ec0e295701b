//! Token verification, all of it by `jsonwebtoken`: signature, `exp` (required), `nbf`,
//! `iss` and `aud` when configured, with a small leeway. The algorithm a token names must
//! belong to the key's family (the crate refuses an HS256 token checked against an RSA key,
//! the classic confusion), and `alg: none` does not parse at all.

use super::jwks::Jwks;
use super::{AuthError, AuthSetupError};
use crate::config::AuthConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::sync::Arc;

/// The claims Starling reads.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    pub sub: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub starling: StarlingClaim,
}

/// The `starling` claim: what the token grants.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct StarlingClaim {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub admin: bool,
}

pub(super) struct Verifier {
    /// The HMAC secret and the PEM keys.
    keys: Vec<Arc<DecodingKey>>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(path).map_err(|source| AuthSetupError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A PEM public key of any supported kind.
fn pem_key(pem: &[u8]) -> Option<DecodingKey> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .ok()
}

impl Verifier {
    pub(super) fn from_config(c: &AuthConfig) -> Result<Verifier, AuthSetupError> {
        let mut keys = Vec::new();
        if let Some(secret) = &c.hmac_secret {
            keys.push(Arc::new(DecodingKey::from_secret(secret.as_bytes())));
        }
        if let Some(path) = &c.hmac_secret_file {
            let text = String::from_utf8_lossy(&read(path)?).trim().to_string();
            if text.len() < 32 {
                return Err(AuthSetupError::ShortSecret(path.display().to_string()));
            }
            keys.push(Arc::new(DecodingKey::from_secret(text.as_bytes())));
        }
        for path in &c.public_key_files {
            let key = pem_key(&read(path)?).ok_or_else(|| AuthSetupError::Key {
                path: path.display().to_string(),
            })?;
            keys.push(Arc::new(key));
        }
        Ok(Verifier {
            keys,
            jwks: c.jwks_url.as_ref().map(|url| {
                Jwks::new(
                    url.clone(),
                    std::time::Duration::from_millis(c.jwks_refetch_min_ms),
                )
            }),
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            leeway_secs: c.leeway_secs,
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.set_required_spec_claims(&["exp", "iss"]);
        }
        v
    }

    /// The token's claims, if a configured key signed it and its claims hold.
    pub(super) async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let candidates: Vec<Arc<DecodingKey>> = match (&header.kid, &self.jwks) {
            (Some(kid), Some(jwks)) => match jwks.key(kid).await {
                Some(key) => vec![key],
                None if self.keys.is_empty() => return Err(AuthError::UnknownKey(kid.clone())),
                None => self.keys.clone(),
            },
            (None, Some(jwks)) => self.keys.iter().cloned().chain(jwks.all().await).collect(),
            (_, None) => self.keys.clone(),
        };
        let validation = self.validation(header.alg);
        for key in candidates {
            match decode::<Claims>(token, &key, &validation) {
                Ok(data) => return Ok(data.claims),
                // Another key (or another family) may be the one.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidSignature
                            | ErrorKind::InvalidAlgorithm
                            | ErrorKind::InvalidRsaKey(_)
                            | ErrorKind::InvalidEcdsaKey
                            | ErrorKind::InvalidEddsaKey
                            | ErrorKind::InvalidKeyFormat
                    ) => {}
                Err(e) => return Err(classify(e.kind())),
            }
        }
        Err(AuthError::Signature)
    }
}

/// What a claim check said, for the client.
fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYet,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::Malformed(format!("no `{c}` claim")),
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn verifier(c: AuthConfig) -> Verifier {
        Verifier::from_config(&c).unwrap()
    }

    fn hmac() -> AuthConfig {
        AuthConfig {
            hmac_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }
    }

    #[tokio::test]
    async fn a_good_token_gives_its_subject_and_grants() {
        let t = hs256(json!({"sub": "alice", "exp": now() + 60,
            "starling": {"publish": ["chat.>"], "subscribe": ["user.{sub}"], "admin": true}}));
        let c = verifier(hmac()).verify(&t).await.unwrap();
        assert_eq!(c.sub.as_deref(), Some("alice"));
        assert_eq!(c.starling.publish, ["chat.>"]);
        assert!(c.starling.admin);
    }

    #[tokio::test]
    async fn each_failure_has_its_kind() {
        let v = verifier(AuthConfig {
            issuer: Some("https://issuer".into()),
            audience: Some("starling".into()),
            ..hmac()
        });
        let good = json!({"exp": now() + 60, "iss": "https://issuer", "aud": "starling"});
        let with = |k: &str, val: serde_json::Value| {
            let mut c = good.clone();
            c[k] = val;
            c
        };
        let cases = [
            (hs256(with("exp", json!(now() - 600))), "expired"),
            (hs256(with("nbf", json!(now() + 600))), "not_yet_valid"),
            (hs256(with("iss", json!("https://other"))), "claims"),
            (hs256(with("aud", json!("other"))), "claims"),
            (
                hs256(json!({"iss": "https://issuer", "aud": "starling"})),
                "malformed",
            ),
            ("not.a.jwt".to_string(), "malformed"),
        ];
        for (token, reason) in cases {
            let e = v.verify(&token).await.unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
        }
        assert!(v.verify(&hs256(good)).await.is_ok());
        // Signed with another secret.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret, 32 characters long"),
        )
        .unwrap();
        assert!(matches!(
            verifier(hmac()).verify(&forged).await,
            Err(AuthError::Signature)
        ));
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"exp": far future} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQxMDI0NDQ4MDB9.";
        assert_eq!(
            verifier(hmac()).verify(token).await.unwrap_err().reason(),
            "malformed"
        );
    }
}
