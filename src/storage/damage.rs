//! Damaged copies: the port through which storage tells the layers above that a record of
//! theirs failed its checksum or did not decode. Such a record is never served (the read
//! that found it fails); the copy it belongs to is reported here, once per finding, and the
//! replication layer drops that shard's copy and catches it up from the shard's leader.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A copy found damaged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Damaged {
    /// A record of this topic (a chunk of its messages).
    Topic(String),
    /// A Raft record (log entry or meta record) of this shard.
    Shard(u32),
}

/// What was found damaged and not yet taken; cheap to clone (one per store).
#[derive(Clone, Default)]
pub struct Damage {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    found: Mutex<BTreeSet<Damaged>>,
    notify: Notify,
}

impl Damage {
    /// Records a damaged copy and wakes whoever waits in [`Damage::reported`].
    pub fn report(&self, what: Damaged) {
        tracing::error!(damaged = ?what, "a damaged record was found; it is never served");
        match self.inner.found.lock() {
            Ok(mut found) => found.insert(what),
            Err(poisoned) => poisoned.into_inner().insert(what),
        };
        self.inner.notify.notify_one();
    }

    /// Everything reported and not taken yet.
    pub fn take(&self) -> Vec<Damaged> {
        self.take_where(|_| true)
    }

    /// What was reported and `wanted` picks; the rest stays.
    pub fn take_where(&self, wanted: impl Fn(&Damaged) -> bool) -> Vec<Damaged> {
        let mut found = match self.inner.found.lock() {
            Ok(found) => found,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (taken, kept): (BTreeSet<_>, BTreeSet<_>) =
            std::mem::take(&mut *found).into_iter().partition(wanted);
        *found = kept;
        taken.into_iter().collect()
    }

    /// Resolves once something was reported since the last wait (a report made while no one
    /// waited counts).
    pub async fn reported(&self) {
        self.inner.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_are_taken_once_and_wake_a_later_waiter() {
        let damage = Damage::default();
        damage.report(Damaged::Shard(3));
        damage.report(Damaged::Topic("chat".into()));
        damage.report(Damaged::Shard(3));
        // Reported before anyone waited: the wait still resolves.
        tokio::time::timeout(std::time::Duration::from_secs(1), damage.reported())
            .await
            .expect("woken");
        let shards = damage.take_where(|d| matches!(d, Damaged::Shard(_)));
        assert_eq!(shards, vec![Damaged::Shard(3)]);
        assert_eq!(damage.take(), vec![Damaged::Topic("chat".into())]);
        assert!(damage.take().is_empty());
    }
}
