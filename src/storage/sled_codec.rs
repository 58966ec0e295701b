//! Records and key encodings of [`super::SledLog`], and lock helpers that survive poisoning.

use super::{StorageError, StoredMessage};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(super) const SEGMENT_PREFIX: &str = "seg:";

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

/// Value of an offset in a segment tree; borrowed so `data` is written and read as one
/// slice rather than byte by byte.
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

pub(super) fn decode_message(offset: u64, value: &[u8]) -> Result<StoredMessage, StorageError> {
    let rec: StoredRecord<'_> = decode("message", value)?;
    Ok(StoredMessage {
        offset,
        id: rec.id.to_string(),
        time_ms: rec.time_ms,
        data: Bytes::copy_from_slice(rec.data),
    })
}

pub(super) fn segment_name(topic: &str, start: u64) -> String {
    format!("{SEGMENT_PREFIX}{topic}:{start:020}")
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
