//! The flags of `starling bench <scenario>`.

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Publishers over WebSocket, subscribers over WebSocket or SSE: deliveries/s and
    /// publish-to-deliver latency (HDR histogram) at a fixed offered rate.
    Fanout(FanoutArgs),
    /// Publish throughput and ack latency per durability level. Without --url, starts its
    /// own single node for each level in a temporary directory.
    Durable(DurableArgs),
    /// Publishes a backlog, then drains it as a stream, as an acked consumer and with
    /// max_inflight 1: deliveries/s for each.
    Consumer(ConsumerArgs),
    /// Opens many idle WebSocket connections (each subscribed) and reports the server's
    /// resident memory per connection. Without --url, starts its own node.
    Connections(ConnectionsArgs),
    /// Publishes on a fixed schedule and reports every stall and epoch change: kill or
    /// hang a topic's owner meanwhile.
    Failover(FailoverArgs),
}

/// Flags every scenario has.
#[derive(Args, Debug, Clone)]
pub struct Output {
    /// Also write the result as one JSON record to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The offered load of the publishing scenarios.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Publishing connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Spread the load over this many topics (publishes round robin).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Use this topic name (with --topics N > 1: NAME-0 .. NAME-{N-1}); default: fresh
    /// names per run.
    #[arg(long)]
    pub topic: Option<String>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Offered publishes per second over all publishers, sent on a fixed schedule whatever
    /// the acks (open loop). 0: as fast as acks allow (closed loop, --window in flight
    /// per publisher).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Publishes in flight per publisher in closed loop (--rate 0).
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// How long to measure, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Starling,
    /// A NATS server's WebSocket listener (`--url ws://HOST:PORT`), for comparison: core
    /// NATS subjects for fanout and connections, a JetStream file stream for durable.
    Nats,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Starling => "starling",
            Target::Nats => "nats",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Ws,
    Sse,
}

#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// The node publishers (and, without --sub-url, subscribers) talk to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Nodes the subscribers connect to, round robin; repeatable. Default: --url.
    #[arg(long = "sub-url")]
    pub sub_urls: Vec<String>,
    /// Subscribing connections, spread round robin over the topics.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// How subscribers receive.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// The server under test.
    #[arg(long, value_enum, default_value_t = Target::Starling)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    Always,
    Batch,
    None,
}

impl Fsync {
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Batch => "batch",
            Fsync::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Ws,
    /// One POST in flight per publisher.
    Http,
}

#[derive(Args, Debug)]
pub struct DurableArgs {
    /// Measure this running node instead of starting one per level (name its level with
    /// --fsync-label).
    #[arg(long)]
    pub url: Option<String>,
    /// The running node's fsync level, for the report (with --url).
    #[arg(long, default_value = "unknown")]
    pub fsync_label: String,
    /// Levels to measure on nodes started for the purpose (without --url).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "always,batch,none"
    )]
    pub levels: Vec<Fsync>,
    /// How publishes are sent.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    pub via: Via,
    /// The server under test.
    #[arg(long, value_enum, default_value_t = Target::Starling)]
    pub target: Target,
    /// JetStream stream replicas (--target nats; needs a cluster for more than 1).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    #[command(flatten)]
    pub load: Load,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Args, Debug)]
pub struct ConsumerArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Topic to use; default: a fresh one.
    #[arg(long)]
    pub topic: Option<String>,
    /// Backlog published before consuming.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Connections sharing one consumer.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// The consumer's max_inflight.
    #[arg(long, default_value_t = 100)]
    pub inflight: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    /// A running node (then --pid is needed); default: start one.
    #[arg(long)]
    pub url: Option<String>,
    /// The running node's process id, to read its resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Source addresses 127.0.0.2 .. to spread them over (each has its own ephemeral
    /// ports); only when the node is on 127.0.0.1.
    #[arg(long, default_value_t = 50)]
    pub sources: u8,
    /// Topics the connections subscribe to, round robin.
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// The server under test.
    #[arg(long, value_enum, default_value_t = Target::Starling)]
    pub target: Target,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The node to publish through (e.g. not the topic's owner).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long)]
    pub topic: Option<String>,
    /// Time between publishes.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub interval: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub out: Output,
}

/// `10s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s or 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
