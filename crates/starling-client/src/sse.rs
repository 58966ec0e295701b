//! Server-Sent Events: an incremental parser, bytes in, complete events out.

use std::collections::VecDeque;

/// One dispatched SSE event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    /// `message` (or empty, which means the same) and `reset` are Starling's.
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// The `(epoch, offset)` of a single-topic stream's event id, `<offset>:<epoch>`.
    pub fn position(&self) -> Option<(String, u64)> {
        let (offset, epoch) = self.id.as_deref()?.split_once(':')?;
        Some((epoch.to_string(), offset.parse().ok()?))
    }
}

/// Parses a stream fed in chunks of any size.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    /// Takes the next chunk of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    self.ready.push_back(std::mem::take(&mut self.current));
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
    }

    /// The next complete event, in stream order.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_parsed() {
        let mut p = SseParser::default();
        p.push(b"retry:3000\n\n:\nid: 1:e1\nevent: mess");
        assert_eq!(p.next_event(), None);
        p.push(b"age\ndata: {\"offset\":1}\n\n:\nid: 0:e2\nevent: reset\ndata: {}\n\n");
        let first = p.next_event().expect("first event");
        assert_eq!(
            first,
            SseEvent {
                id: Some("1:e1".into()),
                event: "message".into(),
                data: "{\"offset\":1}".into()
            }
        );
        assert_eq!(first.position(), Some(("e1".into(), 1)));
        let second = p.next_event().expect("second event");
        assert_eq!(
            (second.event.as_str(), second.data.as_str()),
            ("reset", "{}")
        );
        assert_eq!(p.next_event(), None);
        let bad = SseEvent {
            id: Some("x".into()),
            ..SseEvent::default()
        };
        assert_eq!(bad.position(), None);
    }
}
