//! Consumers: acked, retried, at-least-once delivery. The window (position, in-flight
//! messages, redelivery schedule) is a pure state machine in [`window`].

pub mod window;
