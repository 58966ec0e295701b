//! Black-box tests: real `starling` node processes on free ports, real WebSocket, SSE and
//! HTTP clients. One test binary (modules below) keeps link time down.

mod auth;
mod bench;
mod browser;
mod browser_harness;
mod chaos;
mod chaos_faults;
mod cluster;
mod cluster_harness;
mod consumer_groups;
mod consumers;
mod corrupt_storage;
mod cors;
mod harness;
mod healed;
mod hostile;
mod hostile_data;
mod lifecycle;
mod membership;
mod recovered;
mod replication;
mod robustness;
mod smoke;
mod sse_poll;
mod up;
mod wiped;
mod ws;
