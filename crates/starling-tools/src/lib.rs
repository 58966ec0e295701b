//! `starling bench` and `starling chaos`: tools that drive Starling nodes from outside,
//! through the typed client (`starling-client`), and start their own nodes as
//! `starling node` processes of the running executable. They never link the server.
//!
//! - [`bench`]: the load generator.
//! - [`chaos`]: the chaos tester and its history checker.
//! - [`process`]: signals to our own child processes, and how they exited.

#![forbid(unsafe_code)]

#[cfg(unix)]
pub mod bench;
pub mod chaos;
#[cfg(unix)]
pub mod process;
