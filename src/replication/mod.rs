//! STUB (replaced by the real module from branch repl-core at merge).
#![allow(dead_code, unused_variables)]
use crate::storage::flusher::Flusher;
use crate::storage::{StoredMessage, TopicLog};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct ReplicationSettings {
    pub me: String,
    pub nodes: Vec<String>,
    pub shards: u32,
    pub factor: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

#[derive(Clone)]
pub(crate) struct Replication {}

#[derive(Debug)]
pub(crate) struct Leaders {
    pub by_shard: Vec<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicationError {
    #[error("x")]
    X,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeError {
    #[error("not the leader")]
    NotLeader { leader: Option<String> },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("fatal: {0}")]
    Fatal(String),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    #[error("unreachable {0}")]
    Unreachable(String),
    #[error("failed {0}")]
    Failed(String),
}

#[async_trait::async_trait]
pub(crate) trait RaftNet: Send + Sync + 'static {
    async fn call(
        &self,
        node: &str,
        shard: u32,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError>;
}

pub(crate) struct RaftStore;

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Create {
        topic: String,
        epoch: String,
    },
    Append {
        topic: String,
        msgs: Vec<StoredMessage>,
    },
    RememberIds {
        topic: String,
        ids: Vec<(String, u64)>,
        time_ms: u64,
    },
    SaveConsumer {
        topic: String,
        name: String,
        state: Vec<u8>,
    },
    DeleteConsumer {
        topic: String,
        name: String,
    },
    Retention {
        topic: String,
        max_messages: u64,
        max_age_ms: u64,
        now_ms: u64,
    },
    ExpireIds {
        now_ms: u64,
    },
}

impl Replication {
    pub async fn start(
        settings: ReplicationSettings,
        log: Arc<dyn TopicLog>,
        store: RaftStore,
        flusher: Flusher,
        net: Arc<dyn RaftNet>,
    ) -> Result<Replication, ReplicationError> {
        unimplemented!()
    }
    pub fn me(&self) -> &str {
        unimplemented!()
    }
    pub fn shards(&self) -> u32 {
        unimplemented!()
    }
    pub fn shard_of(&self, topic: &str) -> u32 {
        unimplemented!()
    }
    pub fn voters(&self, shard: u32) -> &[String] {
        unimplemented!()
    }
    pub fn is_voter(&self, shard: u32) -> bool {
        unimplemented!()
    }
    pub async fn propose(&self, shard: u32, ops: Vec<Op>) -> Result<(), ProposeError> {
        unimplemented!()
    }
    pub fn leader(&self, shard: u32) -> Option<String> {
        unimplemented!()
    }
    pub fn leaders(&self) -> tokio::sync::watch::Receiver<Arc<Leaders>> {
        unimplemented!()
    }
    pub async fn lead_ready(&self, shard: u32, timeout: Duration) -> Result<(), ProposeError> {
        unimplemented!()
    }
    pub async fn serve(&self, shard: u32, request: Vec<u8>) -> Vec<u8> {
        unimplemented!()
    }
    pub async fn stop(&self) {
        unimplemented!()
    }
}
pub(crate) mod cluster_net;
pub(crate) mod owners;
impl crate::storage::SledLog {
    pub fn raft_store(&self) -> Result<RaftStore, crate::storage::StorageError> {
        unimplemented!()
    }
}
