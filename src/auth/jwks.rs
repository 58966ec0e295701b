//! A JWKS (`{"keys":[...]}`) fetched from `[auth] jwks_url`: on first use, and again when a
//! token names a key id it does not hold (an identity provider rotated its keys), at most
//! once per `[auth] jwks_refetch_min_ms` so that tokens with made-up key ids cannot make
//! the node hammer the provider.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Jwks {
    url: String,
    refetch_every: Duration,
    http: reqwest::Client,
    state: tokio::sync::Mutex<Fetched>,
}

#[derive(Default)]
struct Fetched {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    all: Vec<Arc<DecodingKey>>,
    at: Option<Instant>,
}

impl Jwks {
    pub(super) fn new(url: String, refetch_every: Duration) -> Jwks {
        Jwks {
            url,
            refetch_every,
            http: reqwest::Client::new(),
            state: tokio::sync::Mutex::new(Fetched::default()),
        }
    }

    /// The key with id `kid`, fetching the set again if it is unknown and the last fetch
    /// is old enough.
    pub(super) async fn key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let mut state = self.state.lock().await;
        if let Some(key) = state.by_kid.get(kid) {
            return Some(key.clone());
        }
        self.refresh(&mut state).await;
        state.by_kid.get(kid).cloned()
    }

    /// Every key of the set (for a token without a key id).
    pub(super) async fn all(&self) -> Vec<Arc<DecodingKey>> {
        let mut state = self.state.lock().await;
        if state.at.is_none() {
            self.refresh(&mut state).await;
        }
        state.all.clone()
    }

    async fn refresh(&self, state: &mut Fetched) {
        if state.at.is_some_and(|at| at.elapsed() < self.refetch_every) {
            return;
        }
        state.at = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let mut by_kid = HashMap::new();
                let mut all = Vec::new();
                for jwk in &set.keys {
                    let Ok(key) = DecodingKey::from_jwk(jwk) else {
                        tracing::warn!(url = %self.url, kid = ?jwk.common.key_id, "JWKS key skipped: not a usable verification key");
                        continue;
                    };
                    let key = Arc::new(key);
                    if let Some(kid) = &jwk.common.key_id {
                        by_kid.insert(kid.clone(), key.clone());
                    }
                    all.push(key);
                }
                tracing::info!(url = %self.url, keys = all.len(), "JWKS fetched");
                state.by_kid = by_kid;
                state.all = all;
            }
            // Keep the keys we had: the provider may be briefly away.
            Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed"),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let res = self
            .http
            .get(&self.url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))
    }
}
