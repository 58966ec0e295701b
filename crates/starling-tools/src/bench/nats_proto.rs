//! The NATS client protocol as the server speaks it, parsed from a byte stream: WebSocket
//! frames may split a protocol line or a payload, or carry several, so bytes are buffered
//! and whole operations taken out one at a time.

/// One operation from the server. `Msg` borrows from the parser's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Info,
    Ping,
    Pong,
    Ok,
    Err(String),
    Msg {
        subject: &'a str,
        reply: Option<&'a str>,
        payload: &'a [u8],
    },
}

/// Buffers received bytes and hands out whole operations.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Bytes before this are consumed.
    pos: usize,
}

impl Parser {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole operation; `Ok(None)` when more bytes are needed.
    pub fn next_op(&mut self) -> Result<Option<Op<'_>>, String> {
        let rest = &self.buf[self.pos..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
        let (verb, args) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        let line_end = self.pos + eol + 2;
        let op = match verb.to_ascii_uppercase().as_str() {
            "INFO" => Op::Info,
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(args.trim().to_string()),
            "MSG" => {
                let parts: Vec<&str> = args.split_ascii_whitespace().collect();
                let (subject, reply, size) = match parts.as_slice() {
                    [s, _sid, n] => (*s, None, *n),
                    [s, _sid, r, n] => (*s, Some(*r), *n),
                    _ => return Err(format!("bad MSG line: {line:?}")),
                };
                let size: usize = size
                    .parse()
                    .map_err(|_| format!("bad MSG size: {line:?}"))?;
                let end = line_end + size + 2;
                if self.buf.len() < end {
                    return Ok(None);
                }
                // Offsets into the buffer, taken before it is borrowed for the answer.
                let subject = span(&self.buf, subject);
                let reply = reply.map(|r| span(&self.buf, r));
                self.pos = end;
                let text = |(a, b): (usize, usize)| {
                    std::str::from_utf8(&self.buf[a..b]).unwrap_or_default()
                };
                return Ok(Some(Op::Msg {
                    subject: text(subject),
                    reply: reply.map(text),
                    payload: &self.buf[line_end..line_end + size],
                }));
            }
            _ => return Err(format!("unknown operation: {line:?}")),
        };
        self.pos = line_end;
        Ok(Some(op))
    }
}

/// Where `part`, a slice of `buf`, lies in it.
fn span(buf: &[u8], part: &str) -> (usize, usize) {
    let a = part.as_ptr() as usize - buf.as_ptr() as usize;
    (a, a + part.len())
}

/// `PUB subject [reply] n\r\npayload\r\n`.
pub fn publish(subject: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let mut out = match reply {
        Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
        None => format!("PUB {subject} {}\r\n", payload.len()),
    }
    .into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut Parser) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(op) = p.next_op().expect("valid") {
            out.push(format!("{op:?}"));
        }
        out
    }

    #[test]
    fn joined_frames_and_ping() {
        let mut p = Parser::default();
        p.push(b"INFO {\"server_id\":\"x\"}\r\nPING\r\n+OK\r\nMSG a.b 1 5\r\nhello\r\nPONG\r\n");
        assert_eq!(
            all(&mut p),
            vec![
                "Info",
                "Ping",
                "Ok",
                format!(
                    "{:?}",
                    Op::Msg {
                        subject: "a.b",
                        reply: None,
                        payload: b"hello"
                    }
                )
                .as_str(),
                "Pong"
            ]
        );
    }

    #[test]
    fn split_frames() {
        let mut p = Parser::default();
        let wire = b"MSG t 7 _INBOX.x.123 11\r\n{\"seq\":1}\r\n\r\nPI";
        for chunk in wire.chunks(3) {
            p.push(chunk);
            if let Some(op) = p.next_op().expect("valid") {
                assert_eq!(
                    op,
                    Op::Msg {
                        subject: "t",
                        reply: Some("_INBOX.x.123"),
                        payload: b"{\"seq\":1}\r\n"
                    }
                );
            }
        }
        assert_eq!(p.next_op(), Ok(None));
        p.push(b"NG\r\n");
        assert_eq!(p.next_op(), Ok(Some(Op::Ping)));
        assert_eq!(p.next_op(), Ok(None));
    }

    #[test]
    fn errors_and_publish() {
        let mut p = Parser::default();
        p.push(b"-ERR 'Slow Consumer'\r\nBOGUS\r\n");
        assert_eq!(p.next_op(), Ok(Some(Op::Err("'Slow Consumer'".into()))));
        assert!(p.next_op().is_err());
        assert_eq!(publish("s", None, b"ab"), b"PUB s 2\r\nab\r\n");
        assert_eq!(publish("s", Some("r"), b""), b"PUB s r 0\r\n\r\n");
    }
}
