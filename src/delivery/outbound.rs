//! A connection's outbound queue, bounded in bytes. Topic actors push live messages straight
//! into it (one `Arc` per message, shared by every subscriber); the transport's writer drains
//! it in batches. A live push that would pass the bound closes the queue with
//! [`CloseReason::SlowConsumer`] instead of growing: the client resumes by offset.

use super::envelope::Delivery;
use crate::protocol::frames::ReqId;
use crate::protocol::resume::ResumePlan;
use crate::protocol::TopicName;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// A subscription that was (re)established, rendered per transport: a `subscribed` reply
/// over WebSocket, a position (and a `reset` event when not recovered) over SSE.
#[derive(Debug)]
pub struct Subscribed {
    pub topic: TopicName,
    pub req: Option<ReqId>,
    pub epoch: Arc<str>,
    pub first: u64,
    pub head: u64,
    pub plan: ResumePlan,
    /// Set for a consumer subscription.
    pub consumer: Option<String>,
}

/// One item for the writer.
#[derive(Debug)]
pub enum OutFrame {
    Message(Arc<Delivery>),
    /// A ready WebSocket text frame (replies, errors).
    Text(String),
    Subscribed(Box<Subscribed>),
}

impl OutFrame {
    fn cost(&self) -> usize {
        match self {
            OutFrame::Message(d) => d.cost(),
            OutFrame::Text(t) => t.len() + 32,
            OutFrame::Subscribed(_) => 256,
        }
    }
}

/// Why a queue was closed; the transport turns it into a close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The queue passed its bound (WS 4008).
    SlowConsumer,
    /// The client went away or the session ended.
    Gone,
    /// The session failed (WS 1011).
    Internal,
}

/// Why a push did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// This push passed the bound; the queue is now closed as a slow consumer.
    Overflow,
    /// The queue was already closed.
    Closed,
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    closed: Option<CloseReason>,
}

/// The bounded outbound queue of one connection.
pub struct Outbound {
    inner: Mutex<Inner>,
    writer: Notify,
    space: Notify,
    limit: usize,
}

impl Outbound {
    pub fn new(limit: usize) -> Arc<Outbound> {
        Arc::new(Outbound {
            inner: Mutex::new(Inner::default()),
            writer: Notify::new(),
            space: Notify::new(),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame, or closes the queue as a slow consumer if it would pass the bound.
    pub fn push(&self, frame: OutFrame) -> Result<(), PushError> {
        let cost = frame.cost();
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return Err(PushError::Closed);
        }
        if inner.bytes + cost > self.limit {
            inner.closed = Some(CloseReason::SlowConsumer);
            inner.frames.clear();
            inner.bytes = 0;
            drop(inner);
            metrics::counter!("starling_slow_consumer_disconnects_total").increment(1);
            self.wake_all();
            return Err(PushError::Overflow);
        }
        inner.bytes += cost;
        inner.frames.push_back(frame);
        drop(inner);
        self.writer.notify_one();
        Ok(())
    }

    /// Whether the queue is open and at most half full (consumer deliveries are paced by
    /// this, never cut off).
    pub fn has_room(&self) -> bool {
        let inner = self.lock();
        inner.closed.is_none() && inner.bytes <= self.limit / 2
    }

    /// Queues a frame if it fits under the bound; never closes the queue. False if it did
    /// not fit or the queue is closed.
    pub fn offer(&self, frame: OutFrame) -> bool {
        let cost = frame.cost();
        let mut inner = self.lock();
        if inner.closed.is_some() || inner.bytes + cost > self.limit {
            return false;
        }
        inner.bytes += cost;
        inner.frames.push_back(frame);
        drop(inner);
        self.writer.notify_one();
        true
    }

    /// Waits until the queue holds at most half its bound (for replay, which must pace
    /// itself instead of overflowing). Returns false if the queue closed.
    pub async fn wait_for_room(&self) -> bool {
        loop {
            let notified = self.space.notified();
            {
                let inner = self.lock();
                if inner.closed.is_some() {
                    return false;
                }
                if inner.bytes <= self.limit / 2 {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Closes the queue; the writer sends the close and stops. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.lock();
        if inner.closed.is_none() {
            inner.closed = Some(reason);
            inner.frames.clear();
            inner.bytes = 0;
        }
        drop(inner);
        self.wake_all();
    }

    /// Resolves once the queue is closed.
    pub async fn wait_closed(&self) {
        loop {
            let notified = self.space.notified();
            if self.closed().is_some() {
                return;
            }
            notified.await;
        }
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    fn wake_all(&self) {
        self.writer.notify_one();
        self.space.notify_waiters();
    }

    /// Waits for frames and moves them all into `out`; returns the close reason instead
    /// once the queue is closed.
    pub async fn drain(&self, out: &mut Vec<OutFrame>) -> Result<(), CloseReason> {
        loop {
            {
                let mut inner = self.lock();
                if let Some(reason) = inner.closed {
                    return Err(reason);
                }
                if !inner.frames.is_empty() {
                    out.extend(inner.frames.drain(..));
                    inner.bytes = 0;
                    drop(inner);
                    self.space.notify_waiters();
                    return Ok(());
                }
            }
            self.writer.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> OutFrame {
        OutFrame::Text("x".repeat(n))
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer() {
        let q = Outbound::new(1000);
        q.push(text(400)).unwrap();
        q.push(text(400)).unwrap();
        assert_eq!(q.push(text(400)), Err(PushError::Overflow));
        assert_eq!(q.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(q.push(text(1)), Err(PushError::Closed));
        let mut out = Vec::new();
        assert_eq!(q.drain(&mut out).await, Err(CloseReason::SlowConsumer));
    }

    #[tokio::test]
    async fn drain_takes_everything_and_frees_room() {
        let q = Outbound::new(1000);
        q.push(text(400)).unwrap();
        q.push(text(400)).unwrap();
        let room = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_for_room().await })
        };
        let mut out = Vec::new();
        q.drain(&mut out).await.unwrap();
        assert_eq!(out.len(), 2);
        assert!(room.await.unwrap());
        q.push(text(900)).unwrap();
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_writer() {
        let q = Outbound::new(1000);
        let w = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                q.drain(&mut out).await
            })
        };
        tokio::task::yield_now().await;
        q.close(CloseReason::Gone);
        assert_eq!(w.await.unwrap(), Err(CloseReason::Gone));
    }
}
