//! The persisted form of a consumer group: its window, its settings, when it was last
//! active, and its dead letters not yet published (each with the epoch its offset belongs
//! to). A record written before `last_active_ms`, `outbox` or the letters' epochs existed
//! still loads.

use super::window::{DeadLetter, Snapshot, WindowConfig};
use bincode::error::{DecodeError, EncodeError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConsumer {
    pub window: Snapshot,
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_inflight: usize,
    pub backoff_ms: Vec<u64>,
    /// Unix ms of the group's last ack, nack, poll, join, leave or settings change: what
    /// idle expiry measures from.
    pub last_active_ms: u64,
    /// Dead letters done in the window but not yet published to the dead-letter topic.
    pub outbox: Vec<OutboxLetter>,
}

/// A dead letter waiting in a group's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxLetter {
    pub letter: DeadLetter,
    /// The epoch its offset belongs to; `None` in a record written before epochs were kept
    /// here (then it is the topic's epoch when the record is loaded).
    pub epoch: Option<String>,
}

/// The record before the outbox's letters carried their epoch.
#[derive(Deserialize)]
struct StoredConsumerV3 {
    window: Snapshot,
    ack_wait_ms: u64,
    max_deliver: u32,
    max_inflight: usize,
    backoff_ms: Vec<u64>,
    last_active_ms: u64,
    outbox: Vec<DeadLetter>,
}

/// The record before `outbox` was added.
#[derive(Deserialize)]
struct StoredConsumerV2 {
    window: Snapshot,
    ack_wait_ms: u64,
    max_deliver: u32,
    max_inflight: usize,
    backoff_ms: Vec<u64>,
    last_active_ms: u64,
}

/// The record before `last_active_ms` was added.
#[derive(Deserialize)]
struct StoredConsumerV1 {
    window: Snapshot,
    ack_wait_ms: u64,
    max_deliver: u32,
    max_inflight: usize,
    backoff_ms: Vec<u64>,
}

impl StoredConsumer {
    pub fn config(&self) -> WindowConfig {
        WindowConfig {
            ack_wait_ms: self.ack_wait_ms,
            max_deliver: self.max_deliver,
            max_inflight: self.max_inflight,
            backoff_ms: self.backoff_ms.clone(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
    }

    /// Decodes a record. One written before `last_active_ms` existed counts as active at
    /// `now_ms`, so it gets a whole idle period before it can expire; one written before
    /// `outbox` existed has none (its dead letters were published before it was written).
    pub fn decode(bytes: &[u8], now_ms: u64) -> Result<StoredConsumer, DecodeError> {
        let config = bincode::config::standard();
        // Newest first, and a layout counts only if it reads the whole record: an older
        // layout is a prefix of a newer one.
        let current = bincode::serde::decode_from_slice::<StoredConsumer, _>(bytes, config);
        let e = match current {
            Ok((s, n)) if n == bytes.len() => return Ok(s),
            Ok(_) => DecodeError::Other("consumer record longer than its layout"),
            Err(e) => e,
        };
        if let Ok((v3, n)) = bincode::serde::decode_from_slice::<StoredConsumerV3, _>(bytes, config)
        {
            if n == bytes.len() {
                return Ok(StoredConsumer {
                    window: v3.window,
                    ack_wait_ms: v3.ack_wait_ms,
                    max_deliver: v3.max_deliver,
                    max_inflight: v3.max_inflight,
                    backoff_ms: v3.backoff_ms,
                    last_active_ms: v3.last_active_ms,
                    outbox: v3
                        .outbox
                        .into_iter()
                        .map(|letter| OutboxLetter {
                            letter,
                            epoch: None,
                        })
                        .collect(),
                });
            }
        }
        if let Ok((v2, _)) = bincode::serde::decode_from_slice::<StoredConsumerV2, _>(bytes, config)
        {
            return Ok(StoredConsumer {
                window: v2.window,
                ack_wait_ms: v2.ack_wait_ms,
                max_deliver: v2.max_deliver,
                max_inflight: v2.max_inflight,
                backoff_ms: v2.backoff_ms,
                last_active_ms: v2.last_active_ms,
                outbox: Vec::new(),
            });
        }
        let (v1, _) = bincode::serde::decode_from_slice::<StoredConsumerV1, _>(bytes, config)
            .map_err(|_| e)?;
        Ok(StoredConsumer {
            window: v1.window,
            ack_wait_ms: v1.ack_wait_ms,
            max_deliver: v1.max_deliver,
            max_inflight: v1.max_inflight,
            backoff_ms: v1.backoff_ms,
            last_active_ms: now_ms,
            outbox: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredConsumer {
        StoredConsumer {
            window: Snapshot {
                floor: 3,
                next: 6,
                pending: vec![(4, 1)],
                ..Default::default()
            },
            ack_wait_ms: 500,
            max_deliver: 2,
            max_inflight: 7,
            backoff_ms: vec![10, 20],
            last_active_ms: 1_700_000_000_000,
            outbox: vec![OutboxLetter {
                letter: DeadLetter {
                    offset: 5,
                    attempts: 2,
                },
                epoch: Some("e1".into()),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let s = stored();
        assert_eq!(StoredConsumer::decode(&s.encode().unwrap(), 9).unwrap(), s);
    }

    #[test]
    fn a_record_from_before_last_active_loads_as_active_now() {
        #[derive(Serialize)]
        struct V1<'a>(&'a Snapshot, u64, u32, usize, &'a [u64]);
        let s = stored();
        let old = V1(&s.window, 500, 2, 7, &s.backoff_ms);
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let got = StoredConsumer::decode(&bytes, 42).unwrap();
        assert_eq!(
            got,
            StoredConsumer {
                last_active_ms: 42,
                outbox: Vec::new(),
                ..s
            }
        );
    }

    #[test]
    fn a_record_from_before_the_outbox_loads_with_none() {
        #[derive(Serialize)]
        struct V2<'a>(&'a Snapshot, u64, u32, usize, &'a [u64], u64);
        let s = stored();
        let old = V2(&s.window, 500, 2, 7, &s.backoff_ms, s.last_active_ms);
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let got = StoredConsumer::decode(&bytes, 42).unwrap();
        assert_eq!(
            got,
            StoredConsumer {
                outbox: Vec::new(),
                ..s
            }
        );
    }

    #[test]
    fn a_record_from_before_the_letters_epochs_loads_them_as_the_current_epoch() {
        #[derive(Serialize)]
        struct V3<'a>(
            &'a Snapshot,
            u64,
            u32,
            usize,
            &'a [u64],
            u64,
            Vec<DeadLetter>,
        );
        let s = stored();
        let letters: Vec<DeadLetter> = s.outbox.iter().map(|l| l.letter).collect();
        let old = V3(
            &s.window,
            500,
            2,
            7,
            &s.backoff_ms,
            s.last_active_ms,
            letters,
        );
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let got = StoredConsumer::decode(&bytes, 42).unwrap();
        assert_eq!(got.outbox.len(), 1);
        assert_eq!(
            (got.outbox[0].letter, &got.outbox[0].epoch),
            (s.outbox[0].letter, &None)
        );
        // Two letters, whose bytes could be misread as one letter of the newer layout.
        let two = vec![
            DeadLetter {
                offset: 5,
                attempts: 1,
            },
            DeadLetter {
                offset: 1,
                attempts: 0,
            },
        ];
        let old = V3(
            &s.window,
            500,
            2,
            7,
            &s.backoff_ms,
            s.last_active_ms,
            two.clone(),
        );
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let got = StoredConsumer::decode(&bytes, 42).unwrap();
        let letters: Vec<DeadLetter> = got.outbox.iter().map(|l| l.letter).collect();
        assert_eq!(letters, two);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(StoredConsumer::decode(&[0xff; 3], 0).is_err());
    }
}
