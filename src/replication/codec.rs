//! The one encoding of the replication layer (log entries, meta records, snapshots, RPCs):
//! bincode 2 through serde, with a size limit on decoding so a damaged or hostile length
//! prefix cannot make it allocate without bound.

use bincode::config::{Configuration, Limit};

/// Largest value decoded: a snapshot of a shard may be large; RPCs and entries are ~1 MiB.
const MAX_DECODED: usize = 1 << 30;

fn config(
) -> Configuration<bincode::config::LittleEndian, bincode::config::Varint, Limit<MAX_DECODED>> {
    bincode::config::standard().with_limit::<MAX_DECODED>()
}

pub(crate) fn encode<T: serde::Serialize>(
    value: &T,
) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, config())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    let (value, _) = bincode::serde::decode_from_slice(bytes, config())?;
    Ok(value)
}
