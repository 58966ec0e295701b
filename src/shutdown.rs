//! Shutdown as a value: every long-running loop holds a [`Shutdown`] and selects on it.

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal. `trigger` once; every clone sees it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Shutdown(CancellationToken::new())
    }

    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the shutdown was triggered.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }
}
