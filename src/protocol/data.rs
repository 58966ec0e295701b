//! The `data` of a publish: checked once, when it is published, with the parser that
//! renders and reads envelopes (serde_json), and stored on one line.
//!
//! The publish body is read with `RawValue`, which skips `data` without validating it:
//! strings are skipped without checking their `\u` escapes (a lone surrogate `"\ud800"`
//! passes) and nesting is skipped without serde_json's recursion limit. Stored as is, such
//! data makes every envelope carrying it unparseable for serde_json clients, so
//! [`normalize_data`] parses it again, every string as `str` (which validates escapes) and
//! every number (which refuses ones out of `f64` range, such as `1e400`), without
//! allocating: nothing is kept, only checked.

use super::error::ApiError;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::fmt;

/// Most levels of arrays and objects `data` may nest. serde_json refuses a document nested
/// more than 127 levels, and `data` is delivered up to 4 levels deep (a poll reply's
/// `messages` array, its envelope, a dead letter's record): 100 leaves room for both.
pub const MAX_DATA_DEPTH: usize = 100;

/// Why `data` was refused.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("`data` is not JSON that clients can parse: {0} (of `data`)")]
    Invalid(serde_json::Error),
    #[error("`data` nests arrays and objects more than {MAX_DATA_DEPTH} levels deep")]
    TooDeep,
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

/// The `data` of a publish as stored: the client's JSON text if every client can parse it,
/// with the line breaks between its tokens removed, so that it fits one SSE `data:` line.
/// JSON strings cannot hold a raw line break, so every `\n` and `\r` is whitespace, and
/// whitespace never separates two tokens that would merge without it. Text without line
/// breaks is stored byte for byte.
pub fn normalize_data(raw: &RawValue) -> Result<Bytes, DataError> {
    let text = raw.get();
    check(text)?;
    let mut one_line = Vec::with_capacity(text.len());
    push_one_line(&mut one_line, text.as_bytes());
    Ok(Bytes::from(one_line))
}

/// Appends JSON text `bytes` to `out` without its line breaks (whitespace between tokens:
/// a JSON string cannot hold a raw one).
pub fn push_one_line(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut from = 0;
    for at in memchr::memchr2_iter(b'\n', b'\r', bytes) {
        out.extend_from_slice(&bytes[from..at]);
        from = at + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

/// Parses `text` as one JSON value, as serde_json clients will, keeping nothing.
fn check(text: &str) -> Result<(), DataError> {
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Check {
        levels_left: MAX_DATA_DEPTH,
        too_deep: &too_deep,
    };
    seed.deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| match too_deep.get() {
            true => DataError::TooDeep,
            false => DataError::Invalid(e),
        })
}

/// A visitor that accepts any JSON value, descending at most `levels_left` more levels of
/// arrays and objects; past that it sets `too_deep` and fails.
#[derive(Clone, Copy)]
struct Check<'a> {
    levels_left: usize,
    too_deep: &'a Cell<bool>,
}

impl<'a> Check<'a> {
    fn nested<E: de::Error>(self) -> Result<Check<'a>, E> {
        match self.levels_left.checked_sub(1) {
            Some(levels_left) => Ok(Check {
                levels_left,
                ..self
            }),
            None => {
                self.too_deep.set(true);
                Err(E::custom("nested too deep"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    /// Every string, borrowed or unescaped: serde_json validated it as UTF-8 (surrogate
    /// escapes paired) to hand it over as `str`.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.nested()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.nested()?;
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(text: &str) -> Result<Bytes, DataError> {
        normalize_data(&RawValue::from_string(text.to_string()).unwrap())
    }

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn data_without_line_breaks_is_stored_byte_for_byte() {
        for text in [
            r#"{"a":[1,2.50,1e2,-0,123456789012345678901234567890],"b":null}"#,
            r#""caf\u00e9 \ud83d\ude00""#,
            r#"{ "spaced" :	true }"#,
            r#"{"a":1,"a":2}"#,
        ] {
            assert_eq!(&normalize(text).unwrap()[..], text.as_bytes());
        }
    }

    #[test]
    fn line_breaks_between_tokens_go_and_escaped_ones_in_strings_stay() {
        let text = "{\r\n \"a\": \"x\\ny\\r\",\n \"n\": 1.50\r,\"b\":\n[\rtrue\n]\n}";
        let d = normalize(text).unwrap();
        assert!(!d.contains(&b'\n') && !d.contains(&b'\r'), "{d:?}");
        assert_eq!(&d[..], br#"{ "a": "x\ny\r", "n": 1.50,"b":[true]}"#);
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["a"], "x\ny\r");
        assert_eq!(v["b"][0], true);
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for text in [
            r#""\ud800""#,
            "[\n\n\"\\ud800\",\n1]",
            r#"{"k":"\udc00"}"#,
            r#"{"\ud800":1}"#,
            r#""\ud800\u0041""#,
        ] {
            let e = normalize(text).unwrap_err();
            assert!(matches!(e, DataError::Invalid(_)), "{text}: {e}");
            assert!(e.to_string().contains("hex escape"), "{text}: {e}");
        }
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        // RawValue skips a number without checking that it fits an f64.
        let e = normalize("[1e400]").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn nesting_is_limited_below_what_serde_json_can_read_in_an_envelope() {
        assert!(normalize(&nested(MAX_DATA_DEPTH)).is_ok());
        let deep_object = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DATA_DEPTH),
            "}".repeat(MAX_DATA_DEPTH)
        );
        assert!(normalize(&deep_object).is_ok());
        for levels in [MAX_DATA_DEPTH + 1, 128, 129, 100_000] {
            let e = normalize(&nested(levels)).unwrap_err();
            assert!(matches!(e, DataError::TooDeep), "{levels}: {e}");
            let e = ApiError::from(e);
            assert_eq!(e.code, crate::protocol::ErrorCode::BadRequest);
            assert!(e.message.contains("levels deep"), "{}", e.message);
        }
    }

    #[test]
    fn the_deepest_delivery_of_the_deepest_data_parses() {
        // A poll reply holding a dead letter of data at the limit: the deepest wrapping.
        let data = normalize(&nested(MAX_DATA_DEPTH)).unwrap();
        let data = std::str::from_utf8(&data).unwrap();
        let reply = format!(
            r#"{{"messages":[{{"topic":"$dlq.t","data":{{"topic":"t","data":{data}}}}}],"next":1}}"#
        );
        serde_json::from_str::<serde_json::Value>(&reply).unwrap();
    }
}
