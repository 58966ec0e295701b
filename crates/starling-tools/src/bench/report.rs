//! A scenario's result: a table on stdout and one JSON record (scenario, parameters,
//! results, machine, timestamp).

use super::BenchError;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::path::Path;

/// Microseconds from 1 µs to an hour, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

/// p50/p90/p99/p99.9/max in milliseconds, and the count.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.5)),
        "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

/// The same as one table cell.
pub fn latency_cell(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    )
}

/// `n` with thousands separators.
pub fn count(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub struct Report {
    pub scenario: &'static str,
    pub params: Value,
    pub results: Value,
    /// The table: figure, value.
    pub rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(scenario: &'static str, params: Value) -> Report {
        Report {
            scenario,
            params,
            results: json!({}),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push((figure.into(), value.into()));
    }

    pub fn print(&self) {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        println!("starling bench {}", self.scenario);
        for (figure, value) in &self.rows {
            println!("  {figure:<w$}  {value}");
        }
    }

    pub fn record(&self) -> Value {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "scenario": self.scenario,
            "params": self.params,
            "results": self.results,
            "machine": {
                "cores": cores,
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "starling_version": env!("CARGO_PKG_VERSION"),
            },
            "timestamp": rfc3339(secs),
        })
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(&self.record())
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        std::fs::write(path, text + "\n")
            .map_err(BenchError::io(format!("cannot write {}", path.display())))
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_counts() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_359_600), "2026-11-22T15:00:00Z");
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
    }

    #[test]
    fn latency_is_ordered() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us).expect("in bounds");
        }
        let v = latency_json(&h);
        assert!(v["p50"].as_f64() <= v["p99"].as_f64());
        assert_eq!(v["count"], 1000);
    }
}
