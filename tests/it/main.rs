//! Black-box tests: real `starling` node processes on free ports, real WebSocket, SSE and
//! HTTP clients. One test binary (modules below) keeps link time down.

mod harness;
mod smoke;
mod ws;
mod sse_poll;
mod lifecycle;
