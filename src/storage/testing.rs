//! Test support for the layers above storage: a real [`SledLog`] whose behaviour a test
//! can change at the points faults come from (append, read, publish-id lookup, flush) and
//! observe when a topic's consumers are loaded. Everything else is delegated unchanged.

use super::{RetentionPolicy, SledLog, StorageError, StoredMessage, TopicLog, TopicMeta};

/// What a test injects. Every hook defaults to doing nothing extra.
pub trait Faults: Send + Sync + 'static {
    /// Called before each append (may block, as a slow disk would).
    fn append(&self, _topic: &str) {}
    /// Called before each read (may panic or block).
    fn read(&self, _topic: &str) {}
    /// Called before each lookup of a publish id (may panic: the topic actor looks ids up
    /// itself, so this fails the actor rather than a replica's apply).
    fn lookup_id(&self, _topic: &str, _id: &str) {}
    /// Called before each load of a topic's consumers (a topic actor starting).
    fn consumers(&self, _topic: &str) {}
    /// Wraps each flush; `flush` performs the real one.
    fn flush(&self, flush: &dyn Fn() -> Result<(), StorageError>) -> Result<(), StorageError> {
        flush()
    }
}

/// A [`SledLog`] with [`Faults`]; derefs to the faults so a test reads its counters directly.
pub struct HookedLog<F> {
    pub inner: SledLog,
    pub faults: F,
}

impl<F> std::ops::Deref for HookedLog<F> {
    type Target = F;

    fn deref(&self) -> &F {
        &self.faults
    }
}

impl<F: Faults> TopicLog for HookedLog<F> {
    fn meta(&self, topic: &str) -> Result<Option<TopicMeta>, StorageError> {
        self.inner.meta(topic)
    }

    fn create(&self, topic: &str, epoch: &str, term: u64) -> Result<TopicMeta, StorageError> {
        self.inner.create(topic, epoch, term)
    }

    fn set_epoch(&self, topic: &str, epoch: &str, term: u64) -> Result<TopicMeta, StorageError> {
        self.inner.set_epoch(topic, epoch, term)
    }

    fn replace(
        &self,
        topic: &str,
        epoch: &str,
        term: u64,
        first: u64,
    ) -> Result<TopicMeta, StorageError> {
        self.inner.replace(topic, epoch, term, first)
    }

    fn unseal(&self, topic: &str) -> Result<(), StorageError> {
        self.inner.unseal(topic)
    }

    fn forget(&self, topic: &str) -> Result<(), StorageError> {
        self.inner.forget(topic)
    }

    fn topics(&self) -> Result<Vec<String>, StorageError> {
        self.inner.topics()
    }

    fn append(&self, topic: &str, msgs: &[StoredMessage]) -> Result<(), StorageError> {
        self.faults.append(topic);
        self.inner.append(topic, msgs)
    }

    fn read(
        &self,
        topic: &str,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        self.faults.read(topic);
        self.inner.read(topic, from, to, max_count, max_bytes)
    }

    fn apply_retention(
        &self,
        topic: &str,
        policy: &RetentionPolicy,
        now_ms: u64,
    ) -> Result<TopicMeta, StorageError> {
        self.inner.apply_retention(topic, policy, now_ms)
    }

    fn remember_id(
        &self,
        topic: &str,
        id: &str,
        offset: u64,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        self.inner.remember_id(topic, id, offset, now_ms)
    }

    fn lookup_id(&self, topic: &str, id: &str, now_ms: u64) -> Result<Option<u64>, StorageError> {
        self.faults.lookup_id(topic, id);
        self.inner.lookup_id(topic, id, now_ms)
    }

    fn remembered_ids(&self, topic: &str) -> Result<Vec<(String, u64, u64)>, StorageError> {
        self.inner.remembered_ids(topic)
    }

    fn expire_ids(&self, now_ms: u64) -> Result<(), StorageError> {
        self.inner.expire_ids(now_ms)
    }

    fn save_consumer(&self, topic: &str, name: &str, state: &[u8]) -> Result<(), StorageError> {
        self.inner.save_consumer(topic, name, state)
    }

    fn delete_consumer(&self, topic: &str, name: &str) -> Result<(), StorageError> {
        self.inner.delete_consumer(topic, name)
    }

    fn consumers(&self, topic: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.faults.consumers(topic);
        self.inner.consumers(topic)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.faults.flush(&|| self.inner.flush())
    }

    fn mark_running(&self) -> Result<bool, StorageError> {
        self.inner.mark_running()
    }

    fn mark_clean(&self) -> Result<(), StorageError> {
        self.inner.mark_clean()
    }
}
