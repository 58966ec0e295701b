//! Records and key encodings of [`super::SledLog`], and lock helpers that survive poisoning.

use super::{StorageError, StoredMessage};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Trees of the previous layout, one per segment of a topic's offsets (migrated at open).
pub(super) const SEGMENT_PREFIX: &str = "seg:";
/// The message trees: `msgs:<stripe>`.
pub(super) const MSGS_PREFIX: &str = "msgs:";
/// Bytes of a chunk's checksum, before its bincode.
const CRC_BYTES: usize = 4;

/// Value of a topic in the `meta` tree.
#[derive(Serialize, Deserialize)]
pub(super) struct MetaRecord {
    pub(super) epoch: String,
    pub(super) first: u64,
    /// Orders epochs of one topic across nodes (see [`super::Lease`]).
    pub(super) term: u64,
    /// This copy was handed to another owner: never appended to again.
    pub(super) sealed: bool,
    pub(super) importing: bool,
    pub(super) sealed_for: Option<String>,
}

/// Most messages one chunk (one value of a segment tree) holds.
pub(super) const CHUNK_MESSAGES: usize = 256;
/// A chunk is closed once its payloads reach this many bytes (it holds at least one).
pub(super) const CHUNK_BYTES: usize = 256 * 1024;

/// One message of a chunk; borrowed so `data` is written and read as one slice rather than
/// byte by byte. A message tree's value is a chunk: the CRC-32 of the rest (4 bytes,
/// big-endian), then the bincode `Vec` of the records of consecutive offsets starting at the
/// key's offset. One insert per chunk rather than per message is what makes sled fast
/// enough for batched appends (4-6x, BENCHMARKS.md).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredRecord<'a> {
    pub(super) id: &'a str,
    pub(super) time_ms: u64,
    pub(super) data: &'a [u8],
}

/// Value of a publish id in a dedupe tree.
#[derive(Serialize, Deserialize)]
pub(super) struct DedupeRecord {
    pub(super) offset: u64,
    pub(super) time_ms: u64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn corrupt(what: &'static str, detail: impl Into<String>) -> StorageError {
    let detail = detail.into();
    StorageError::Corrupt { what, detail }
}

pub(super) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| corrupt(what, format!("cannot encode: {e}")))
}

pub(super) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, StorageError> {
    let (value, used) =
        bincode::serde::borrow_decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| corrupt(what, e.to_string()))?;
    if used != bytes.len() {
        return Err(corrupt(
            what,
            format!("{} trailing bytes", bytes.len() - used),
        ));
    }
    Ok(value)
}

pub(super) fn offset_key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

pub(super) fn decode_offset(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| corrupt("segment key", format!("{} bytes, not 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The start of every key of `topic` in a message tree: the name, then 0x00 (no topic
/// name contains 0x00, so no other topic's keys start with it).
pub(super) fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 1 + 8);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key
}

/// The key of `topic`'s chunk starting at `offset`: the topic's prefix, then the offset
/// (u64 big-endian, so a topic's chunks sort by offset).
pub(super) fn chunk_key(topic: &str, offset: u64) -> Vec<u8> {
    let mut key = topic_prefix(topic);
    key.extend_from_slice(&offset_key(offset));
    key
}

/// The key just past every key of `topic` (its prefix with 0x01 for the 0x00).
pub(super) fn topic_end(topic: &str) -> Vec<u8> {
    let mut key = topic.as_bytes().to_vec();
    key.push(1);
    key
}

/// Splits a message tree's key into topic and chunk start.
pub(super) fn split_chunk_key(key: &[u8]) -> Result<(&str, u64), StorageError> {
    let bad = || corrupt("chunk key", format!("{key:?}"));
    let at = key.len().checked_sub(9).ok_or_else(bad)?;
    if key[at] != 0 {
        return Err(bad());
    }
    let topic = std::str::from_utf8(&key[..at]).map_err(|_| bad())?;
    Ok((topic, decode_offset(&key[at + 1..])?))
}

pub(super) fn msgs_name(stripe: u32) -> String {
    format!("{MSGS_PREFIX}{stripe}")
}

/// The stripe of a message tree's name `msgs:<stripe>`.
pub(super) fn parse_msgs_name(name: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(name).ok()?.strip_prefix(MSGS_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `body` behind its checksum, as a message tree stores a chunk.
pub(super) fn checksummed(body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(CRC_BYTES + body.len());
    value.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    value.extend_from_slice(body);
    value
}

/// The records of `topic`'s chunk at `offset`, stored as `value`: a chunk whose checksum
/// does not match, that does not decode, or that is empty is corrupt, and never served.
pub(super) fn decode_chunk<'a>(
    topic: &str,
    offset: u64,
    value: &'a [u8],
) -> Result<Vec<StoredRecord<'a>>, StorageError> {
    decode_body(value).map_err(|reason| {
        tracing::error!(topic, offset, reason, "corrupt chunk");
        corrupt("chunk", format!("{topic} offset {offset}"))
    })
}

fn decode_body(value: &[u8]) -> Result<Vec<StoredRecord<'_>>, String> {
    if value.len() < CRC_BYTES {
        return Err(format!("{} bytes, too short for a checksum", value.len()));
    }
    let (crc, body) = value.split_at(CRC_BYTES);
    let (stored, actual) = (crc, crc32fast::hash(body).to_be_bytes());
    if stored != actual {
        return Err(format!("checksum {stored:02x?}, computed {actual:02x?}"));
    }
    let records: Vec<StoredRecord<'_>> = decode("chunk", body).map_err(|e| e.to_string())?;
    if records.is_empty() {
        return Err("no messages".to_string());
    }
    Ok(records)
}

pub(super) fn to_message(offset: u64, rec: &StoredRecord<'_>) -> StoredMessage {
    StoredMessage {
        offset,
        id: rec.id.to_string(),
        time_ms: rec.time_ms,
        data: Bytes::copy_from_slice(rec.data),
    }
}

/// Splits consecutive messages into chunks of at most [`CHUNK_MESSAGES`] messages and
/// about [`CHUNK_BYTES`] of payload.
pub(super) fn chunks(msgs: &[StoredMessage]) -> Vec<&[StoredMessage]> {
    let mut out = Vec::new();
    let mut rest = msgs;
    while !rest.is_empty() {
        let (mut n, mut bytes) = (0, 0);
        while n < rest.len() && n < CHUNK_MESSAGES && (n == 0 || bytes < CHUNK_BYTES) {
            bytes += rest[n].data.len();
            n += 1;
        }
        let (chunk, later) = rest.split_at(n);
        out.push(chunk);
        rest = later;
    }
    out
}

/// The stored value of a chunk of `msgs`: checksum, then bincode.
pub(super) fn encode_chunk(msgs: &[StoredMessage]) -> Result<Vec<u8>, StorageError> {
    let records: Vec<StoredRecord<'_>> = msgs
        .iter()
        .map(|m| StoredRecord {
            id: &m.id,
            time_ms: m.time_ms,
            data: &m.data,
        })
        .collect();
    let mut value = vec![0; CRC_BYTES];
    bincode::serde::encode_into_std_write(&records, &mut value, bincode::config::standard())
        .map_err(|e| corrupt("chunk", format!("cannot encode: {e}")))?;
    let crc = crc32fast::hash(&value[CRC_BYTES..]);
    value[..CRC_BYTES].copy_from_slice(&crc.to_be_bytes());
    Ok(value)
}

/// Splits `seg:<topic>:<20 digits>` into topic and start; topic names may contain ':'.
pub(super) fn parse_segment_name(name: &[u8]) -> Option<(&str, u64)> {
    let rest = std::str::from_utf8(name)
        .ok()?
        .strip_prefix(SEGMENT_PREFIX)?;
    let (topic, digits) = rest.rsplit_once(':')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic, digits.parse().ok()?))
}

pub(super) fn dedupe_key(topic: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 1 + id.len());
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}
