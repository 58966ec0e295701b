//! Replacing a topic's copy wholesale (a snapshot from the shard's leader), and dropping it
//! (a damaged shard copy, before it is caught up again).

use super::{dedupe_key, delete_chunks, lock, read, write, SledLog, Topic};
use crate::storage::{Lease, StorageError, TopicMeta};
use std::sync::Arc;

impl SledLog {
    pub(super) fn replace_copy(
        &self,
        topic: &str,
        epoch: &str,
        term: u64,
        first: u64,
    ) -> Result<TopicMeta, StorageError> {
        let first = first.max(1);
        // Sealed until the import completes: a copy cut short by a crash is never written to.
        let lease = Lease {
            term,
            sealed: true,
            importing: true,
            sealed_for: None,
        };
        let mut topics = write(&self.topics);
        let old = topics.remove(topic);
        let _writer = old.as_ref().map(|t| lock(&t.writer));
        self.clear_copy(topic, old.as_deref())?;
        self.put_meta(topic, epoch, first, &lease)?;
        let tree = self.msgs_tree(topic).clone();
        let t = Topic::new(epoch.to_string(), first, lease, first - 1, tree);
        let meta = t.meta();
        topics.insert(topic.to_string(), Arc::new(t));
        tracing::info!(topic, epoch, term, first, "topic copy replaced");
        Ok(meta)
    }

    /// Removes everything stored for `topic`: as if it had never been created here.
    pub(super) fn forget_copy(&self, topic: &str) -> Result<(), StorageError> {
        let mut topics = write(&self.topics);
        let old = topics.remove(topic);
        let _writer = old.as_ref().map(|t| lock(&t.writer));
        // The meta record last: sled makes writes durable in order, so after a crash midway
        // the topic is still there (open refuses chunks without a meta record) and the
        // drop that was under way forgets it again.
        self.clear_copy(topic, old.as_deref())?;
        self.meta.remove(topic.as_bytes())?;
        tracing::info!(topic, "topic copy dropped");
        Ok(())
    }

    /// Deletes `topic`'s publish ids, consumers and messages (once `old`'s readers are done),
    /// in that order.
    fn clear_copy(&self, topic: &str, old: Option<&Topic>) -> Result<(), StorageError> {
        let prefix = dedupe_key(topic, "");
        for tree in read(&self.dedupe).values() {
            for key in tree.scan_prefix(&prefix).keys() {
                tree.remove(key?)?;
            }
        }
        for item in self.consumers.scan_prefix(&prefix).keys() {
            self.consumers.remove(item?)?;
        }
        // Waits for the old copy's readers.
        let _state = old.map(|t| write(&t.state));
        delete_chunks(self.msgs_tree(topic), topic, None)?;
        Ok(())
    }

    /// Opens the copy for appends if `expected` still holds of its lease (compare and set:
    /// another node may have sealed it meanwhile).
    pub(super) fn open_copy(
        &self,
        topic: &str,
        expected: impl Fn(&Lease) -> bool,
    ) -> Result<(), StorageError> {
        let t = self.topic(topic)?;
        let _writer = lock(&t.writer);
        let (epoch, first, lease) = {
            let state = read(&t.state);
            (state.epoch.clone(), state.first, state.lease.clone())
        };
        if !expected(&lease) {
            return Err(StorageError::Sealed(topic.to_string()));
        }
        let open = Lease {
            sealed: false,
            importing: false,
            sealed_for: None,
            ..lease
        };
        self.put_meta(topic, &epoch, first, &open)?;
        write(&t.state).lease = open;
        Ok(())
    }
}
