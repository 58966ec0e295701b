//! Configuration: `cluster.toml`, every field defaulted, validated with errors that name the
//! offending key.

mod auth;
mod http;
mod replication;

pub use auth::{AnonymousConfig, AuthConfig};
pub use http::HttpConfig;
pub use replication::ReplicationConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("node `{0}` is not listed under [[nodes]] in the config")]
    UnknownNode(String),
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Each node keeps its data under `data_dir/<node id>`.
    pub data_dir: PathBuf,
    pub nodes: Vec<NodeConfig>,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub limits: LimitsConfig,
    pub heartbeat: HeartbeatConfig,
    pub consumers: ConsumersConfig,
    pub cluster: ClusterConfig,
    pub http: HttpConfig,
    pub replication: ReplicationConfig,
    pub chaos: ChaosConfig,
    pub auth: AuthConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    /// Where the node serves HTTP, WebSocket and SSE. Port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// UDP address of the node's gossip (membership and failure detection). Required when
    /// the config lists more than one node or any seed.
    #[serde(default)]
    pub gossip_addr: Option<SocketAddr>,
    /// TCP address of the node's cluster transport (ractor_cluster). Required with
    /// `gossip_addr`.
    #[serde(default)]
    pub cluster_addr: Option<SocketAddr>,
}

/// How nodes find each other, detect failures and authenticate.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Gossip ignores nodes of another cluster name.
    pub name: String,
    /// Shared secret: a node must present it to be admitted (ractor_cluster's cookie
    /// handshake).
    pub cookie: String,
    /// Gossip addresses to join through. Empty: every listed node's `gossip_addr`.
    pub seeds: Vec<SocketAddr>,
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold above which a silent member is marked down.
    pub phi_threshold: f64,
    /// How long a starting node looks for peers before it serves alone.
    pub join_timeout_ms: u64,
    /// How long a node-to-node request may take.
    pub rpc_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "starling".into(),
            cookie: "starling-dev-cookie".into(),
            seeds: Vec::new(),
            gossip_interval_ms: 100,
            phi_threshold: 8.0,
            join_timeout_ms: 3_000,
            rpc_timeout_ms: 5_000,
        }
    }
}

/// Settings that exist only for `starling chaos`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosConfig {
    /// Serves `POST /v1/chaos/partition`, which makes this node drop gossip and cluster
    /// traffic to and from named peers. Anyone who can reach the HTTP port can then cut
    /// this node off from its peers: off unless a chaos run starts the node.
    pub fault_injection: bool,
}

/// When a publish is acknowledged, relative to the disk.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// One fsync per publish, each acknowledged after its own flush.
    Always,
    /// Group commit: acknowledged after a flush that includes the message; one flush covers
    /// every publish that arrived while the previous flush ran.
    Batch,
    /// Acknowledged once written to the page cache; flushed every `flush_interval_ms`.
    None,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub fsync: FsyncMode,
    /// Background flush period with `fsync = "none"`.
    pub flush_interval_ms: u64,
    /// How long a publish `id` is remembered for idempotency.
    pub dedupe_window_ms: u64,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub max_messages: u64,
    pub max_age_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
    pub max_ws_frame_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_outbound_queue_bytes: usize,
    pub max_poll_timeout_secs: u64,
    pub max_poll_limit: usize,
    /// Malformed WebSocket frames in a row before the connection is closed with 4000.
    pub max_malformed_frames: u32,
    /// A topic with no subscribers and nothing in flight leaves memory after this long
    /// (its data stays on disk).
    pub topic_idle_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    pub ws_ping_interval_ms: u64,
    pub ws_pong_timeout_ms: u64,
    pub sse_keepalive_ms: u64,
}

/// Consumer group defaults, the bounds a group's settings must lie within, and how many
/// groups a topic may have for how long.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumersConfig {
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_inflight: usize,
    /// Redelivery delay after the 1st, 2nd, ... failed attempt (the last one repeats).
    pub backoff_ms: Vec<u64>,
    pub min_ack_wait_ms: u64,
    pub max_ack_wait_ms: u64,
    pub max_deliver_limit: u32,
    pub max_inflight_limit: usize,
    /// A group with no connected member, nothing leased and no delivery, ack, nack or poll
    /// for this long is deleted (JetStream's `inactive_threshold`).
    pub idle_expiry_secs: u64,
    /// Most consumer groups one topic may have; creating one more is refused.
    pub max_groups_per_topic: usize,
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        ConsumersConfig {
            ack_wait_ms: 30_000,
            max_deliver: 5,
            max_inflight: 100,
            backoff_ms: vec![1_000, 5_000, 30_000],
            min_ack_wait_ms: 100,
            max_ack_wait_ms: 3_600_000,
            max_deliver_limit: 100,
            max_inflight_limit: 10_000,
            idle_expiry_secs: 24 * 3600,
            max_groups_per_topic: 1_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            nodes: vec![NodeConfig {
                id: "n1".into(),
                http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                gossip_addr: None,
                cluster_addr: None,
            }],
            storage: StorageConfig::default(),
            retention: RetentionConfig::default(),
            limits: LimitsConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            consumers: ConsumersConfig::default(),
            cluster: ClusterConfig::default(),
            http: HttpConfig::default(),
            replication: ReplicationConfig::default(),
            chaos: ChaosConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: FsyncMode::Batch,
            flush_interval_ms: 500,
            dedupe_window_ms: 120_000,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_messages: 10_000,
            max_age_secs: 24 * 3600,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 64 * 1024,
            max_ws_frame_bytes: 128 * 1024,
            max_subscriptions_per_connection: 1000,
            max_outbound_queue_bytes: 1024 * 1024,
            max_poll_timeout_secs: 120,
            max_poll_limit: 1000,
            max_malformed_frames: 10,
            topic_idle_secs: 60,
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            ws_ping_interval_ms: 20_000,
            ws_pong_timeout_ms: 10_000,
            sse_keepalive_ms: 15_000,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every constraint the code relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(invalid("nodes", "list at least one node"));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let ok = !node.id.is_empty()
                && node.id.len() <= 64
                && node
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(invalid(
                    format!("nodes[{i}].id"),
                    "1-64 characters of A-Z a-z 0-9 - _",
                ));
            }
            if self.nodes[..i].iter().any(|n| n.id == node.id) {
                return Err(invalid(format!("nodes[{i}].id"), "duplicate node id"));
            }
        }
        let positive = [
            ("storage.flush_interval_ms", self.storage.flush_interval_ms),
            ("storage.dedupe_window_ms", self.storage.dedupe_window_ms),
            ("retention.max_messages", self.retention.max_messages),
            ("retention.max_age_secs", self.retention.max_age_secs),
            (
                "limits.max_poll_timeout_secs",
                self.limits.max_poll_timeout_secs,
            ),
            (
                "heartbeat.ws_ping_interval_ms",
                self.heartbeat.ws_ping_interval_ms,
            ),
            (
                "heartbeat.ws_pong_timeout_ms",
                self.heartbeat.ws_pong_timeout_ms,
            ),
            (
                "heartbeat.sse_keepalive_ms",
                self.heartbeat.sse_keepalive_ms,
            ),
            ("limits.topic_idle_secs", self.limits.topic_idle_secs),
            (
                "limits.max_malformed_frames",
                u64::from(self.limits.max_malformed_frames),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        let l = &self.limits;
        if l.max_message_bytes < 16 {
            return Err(invalid("limits.max_message_bytes", "must be at least 16"));
        }
        if l.max_ws_frame_bytes < l.max_message_bytes {
            return Err(invalid(
                "limits.max_ws_frame_bytes",
                "must be at least limits.max_message_bytes",
            ));
        }
        if l.max_outbound_queue_bytes < 2 * (l.max_message_bytes + 1024) {
            return Err(invalid(
                "limits.max_outbound_queue_bytes",
                "must be at least 2 x (limits.max_message_bytes + 1024): a queue holds at least two messages",
            ));
        }
        if l.max_subscriptions_per_connection == 0 {
            return Err(invalid(
                "limits.max_subscriptions_per_connection",
                "must be greater than 0",
            ));
        }
        if l.max_poll_limit == 0 {
            return Err(invalid("limits.max_poll_limit", "must be greater than 0"));
        }
        self.validate_consumers()?;
        self.validate_cluster()?;
        self.http.validate()?;
        self.replication.validate()?;
        self.auth.validate()?;
        if self.storage.cache_bytes < 1024 * 1024 {
            return Err(invalid("storage.cache_bytes", "must be at least 1048576"));
        }
        Ok(())
    }

    /// Whether this config describes a cluster (more than one node, or seeds to join).
    pub fn clustered(&self) -> bool {
        self.nodes.len() > 1 || !self.cluster.seeds.is_empty()
    }

    /// The gossip seeds: the configured ones, or every listed node's gossip address.
    pub fn seeds(&self) -> Vec<SocketAddr> {
        if self.cluster.seeds.is_empty() {
            self.nodes.iter().filter_map(|n| n.gossip_addr).collect()
        } else {
            self.cluster.seeds.clone()
        }
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(invalid(
                "cluster.name",
                "1-64 characters of A-Z a-z 0-9 - _",
            ));
        }
        if c.cookie.is_empty() || c.cookie.len() > 256 {
            return Err(invalid("cluster.cookie", "must be 1-256 characters"));
        }
        for (key, value) in [
            ("cluster.gossip_interval_ms", c.gossip_interval_ms),
            ("cluster.join_timeout_ms", c.join_timeout_ms),
            ("cluster.rpc_timeout_ms", c.rpc_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if !(c.phi_threshold.is_finite() && c.phi_threshold > 0.0) {
            return Err(invalid(
                "cluster.phi_threshold",
                "must be a positive number",
            ));
        }
        let clustered = self.clustered();
        for (i, node) in self.nodes.iter().enumerate() {
            match (node.gossip_addr, node.cluster_addr) {
                (Some(g), Some(t)) => {
                    if g.port() == 0 || t.port() == 0 {
                        return Err(invalid(
                            format!("nodes[{i}].gossip_addr"),
                            "gossip_addr and cluster_addr need fixed ports (peers dial them)",
                        ));
                    }
                    let taken = self.nodes[..i].iter().any(|n| {
                        [n.gossip_addr, n.cluster_addr].contains(&Some(g))
                            || [n.gossip_addr, n.cluster_addr].contains(&Some(t))
                    });
                    if taken || g == t {
                        return Err(invalid(
                            format!("nodes[{i}].gossip_addr"),
                            "every node needs its own gossip_addr and cluster_addr",
                        ));
                    }
                }
                (None, None) if !clustered => {}
                (None, None) => {
                    return Err(invalid(
                        format!("nodes[{i}].gossip_addr"),
                        "a cluster needs gossip_addr and cluster_addr for every node",
                    ))
                }
                (Some(_), None) => {
                    return Err(invalid(
                        format!("nodes[{i}].cluster_addr"),
                        "set together with gossip_addr",
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        format!("nodes[{i}].gossip_addr"),
                        "set together with cluster_addr",
                    ))
                }
            }
        }
        Ok(())
    }

    fn validate_consumers(&self) -> Result<(), ConfigError> {
        let c = &self.consumers;
        if c.min_ack_wait_ms == 0 || c.min_ack_wait_ms > c.max_ack_wait_ms {
            return Err(invalid(
                "consumers.min_ack_wait_ms",
                "must be greater than 0 and at most consumers.max_ack_wait_ms",
            ));
        }
        if !(c.min_ack_wait_ms..=c.max_ack_wait_ms).contains(&c.ack_wait_ms) {
            return Err(invalid(
                "consumers.ack_wait_ms",
                "must lie within consumers.min_ack_wait_ms..=consumers.max_ack_wait_ms",
            ));
        }
        if c.max_deliver == 0 || c.max_deliver > c.max_deliver_limit {
            return Err(invalid(
                "consumers.max_deliver",
                "must be 1..=consumers.max_deliver_limit",
            ));
        }
        if c.max_inflight == 0 || c.max_inflight > c.max_inflight_limit {
            return Err(invalid(
                "consumers.max_inflight",
                "must be 1..=consumers.max_inflight_limit",
            ));
        }
        if c.backoff_ms.is_empty() {
            return Err(invalid("consumers.backoff_ms", "list at least one delay"));
        }
        if c.idle_expiry_secs == 0 {
            return Err(invalid(
                "consumers.idle_expiry_secs",
                "must be greater than 0",
            ));
        }
        if c.max_groups_per_topic == 0 {
            return Err(invalid(
                "consumers.max_groups_per_topic",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The entry for node `id`.
    pub fn node(&self, id: &str) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ConfigError::UnknownNode(id.to_string()))
    }

    /// Where node `id` keeps its data.
    pub fn node_data_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.storage.fsync, FsyncMode::Batch);
    }

    #[test]
    fn shipped_file_is_valid() {
        let text = include_str!("../../cluster.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.node("n1").is_ok());
        // The file shows the defaults of the sections it lists.
        assert_eq!(c.replication, ReplicationConfig::default());
    }

    #[test]
    fn replication_settings_are_checked_by_key() {
        for (toml, key) in [
            ("[replication]\nshards = 0\n", "replication.shards"),
            ("[replication]\nfactor = 0\n", "replication.factor"),
            (
                "[replication]\nheartbeat_ms = 200\nelection_min_ms = 500\n",
                "replication.election_min_ms",
            ),
            (
                "[replication]\nelection_min_ms = 900\nelection_max_ms = 900\n",
                "replication.election_max_ms",
            ),
        ] {
            let err = Config::parse(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let ok = Config::parse("[replication]\nshards = 4\nfactor = 1\n").unwrap();
        assert_eq!((ok.replication.shards, ok.replication.factor), (4, 1));
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::parse("[retention]\nmax_messages = 0\n").unwrap_err();
        assert!(err.to_string().contains("retention.max_messages"), "{err}");
        let err = Config::parse("[storage]\nfsync = \"sometimes\"\n").unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
        let err = Config::parse("[limits]\nmax_mesage_bytes = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_mesage_bytes"), "{err}");
        let err =
            Config::parse("[[nodes]]\nid = \"a b\"\nhttp_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("nodes[0].id"), "{err}");
    }

    #[test]
    fn consumer_group_limits_name_the_key() {
        for key in ["idle_expiry_secs", "max_groups_per_topic"] {
            let err = Config::parse(&format!("[consumers]\n{key} = 0\n")).unwrap_err();
            assert!(
                err.to_string().contains(&format!("consumers.{key}")),
                "{err}"
            );
        }
    }

    #[test]
    fn fault_injection_is_off_unless_set() {
        assert!(!Config::parse("").unwrap().chaos.fault_injection);
        let c = Config::parse("[chaos]\nfault_injection = true\n").unwrap();
        assert!(c.chaos.fault_injection);
        let err = Config::parse("[chaos]\nfault_injection = \"yes\"\n").unwrap_err();
        assert!(err.to_string().contains("fault_injection"), "{err}");
        let err = Config::parse("[chaos]\nfault_injecton = true\n").unwrap_err();
        assert!(err.to_string().contains("fault_injecton"), "{err}");
    }

    #[test]
    fn unknown_node_is_named() {
        let err = Config::default().node("zz").unwrap_err();
        assert!(err.to_string().contains("zz"));
    }
}
