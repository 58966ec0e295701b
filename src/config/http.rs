//! `[http]`: the client-facing server's protection against slow and cross-site clients.

use super::{invalid, ConfigError};
use serde::Deserialize;

/// How the HTTP server treats connections: timeouts that free what a slow or silent
/// client holds, bounds on how many it may hold, and which web origins may use the node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Web origins (`scheme://host[:port]`, `*` matching any run of characters within the
    /// origin, or `null` for pages opened from a file) whose pages may use the node: they
    /// get CORS headers, and may POST and open WebSockets. A page served from the node's own
    /// listening address is always allowed.
    pub allowed_origins: Vec<String>,
    /// A request head (and the pause before the next one on a kept-alive connection) must
    /// arrive within this.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this (408 `bad_request` otherwise).
    pub body_read_timeout_ms: u64,
    /// A connection whose writes make no progress for this long (the client stopped
    /// reading) is dropped.
    pub write_timeout_ms: u64,
    /// Open client connections (HTTP, SSE, long polls, WebSockets); more are refused with
    /// 503 `unavailable`.
    pub max_connections: usize,
    /// Connections that have not yet sent a complete first request head; past this the
    /// oldest of them is dropped to make room.
    pub max_pending_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allowed_origins: Vec::new(),
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            write_timeout_ms: 20_000,
            max_connections: 10_000,
            max_pending_connections: 512,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
            ("http.body_read_timeout_ms", self.body_read_timeout_ms),
            ("http.write_timeout_ms", self.write_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be greater than 0"));
        }
        if self.max_pending_connections == 0 || self.max_pending_connections > self.max_connections
        {
            return Err(invalid(
                "http.max_pending_connections",
                "must be 1..=http.max_connections",
            ));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if let Err(why) = check_origin_pattern(origin) {
                return Err(invalid(format!("http.allowed_origins[{i}]"), why));
            }
        }
        Ok(())
    }
}

/// An allowed origin is `*`, `null`, or `http(s)://host[:port]` (with `*` wildcards) and no
/// path: browsers send exactly that in `Origin`.
fn check_origin_pattern(p: &str) -> Result<(), &'static str> {
    if p == "*" || p == "null" {
        return Ok(());
    }
    let rest = p
        .strip_prefix("http://")
        .or_else(|| p.strip_prefix("https://"))
        .ok_or("must start with http:// or https:// (or be \"*\" or \"null\")")?;
    if rest.is_empty() || rest.contains('/') {
        return Err("must be scheme://host[:port], without a path or trailing slash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn origins_are_checked_and_named() {
        let c = Config::parse("[http]\nallowed_origins = [\"http://localhost:*\", \"null\"]\n");
        assert_eq!(c.unwrap().http.allowed_origins.len(), 2);
        for bad in ["localhost:8000", "http://a.example/", "ftp://x"] {
            let text = format!("[http]\nallowed_origins = [\"*\", \"{bad}\"]\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains("http.allowed_origins[1]"), "{err}");
        }
    }

    #[test]
    fn limits_are_checked() {
        let err = Config::parse("[http]\nmax_pending_connections = 20000\n").unwrap_err();
        assert!(
            err.to_string().contains("http.max_pending_connections"),
            "{err}"
        );
        let err = Config::parse("[http]\nwrite_timeout_ms = 0\n").unwrap_err();
        assert!(err.to_string().contains("http.write_timeout_ms"), "{err}");
        assert!(Config::parse("").unwrap().http.allowed_origins.is_empty());
    }
}
