//! A chaos run drawn as one self-contained SVG timeline (no dependencies, no scripts).
//!
//! x is seconds since the run began. The top panel shows acknowledged publishes and stream
//! deliveries per second; the bottom panel the publish latency (`PubReq` → `PubOk` by `pid`)
//! p50 and max per second on a log scale. Every fault is a translucent band across both
//! panels, colored by kind and labelled (`kill n2`); vertical lines mark `Healed` and
//! `Converged`. The title carries the verdict and the key counts.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::checker::{fault_spans, kind_name, Report};
use super::history::{Event, FaultKind};

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 590.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 200.0;
const TOP1: f64 = 60.0;
const TOP2: f64 = 340.0;
const ACKED_COLOR: &str = "#2ca02c";
const DELIVERED_COLOR: &str = "#1f77b4";
const P50_COLOR: &str = "#555555";
const MAX_COLOR: &str = "#d62728";

/// Escapes text for SVG content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fault_color(k: FaultKind) -> &'static str {
    match k {
        FaultKind::Kill => "#d62728",
        FaultKind::Stop => "#ff7f0e",
        FaultKind::Partition => "#9467bd",
        FaultKind::Term => "#17becf",
    }
}

/// Maps milliseconds since the start to x.
struct XScale {
    duration_ms: f64,
}

impl XScale {
    fn x(&self, t_ms: f64) -> f64 {
        LEFT + (t_ms / self.duration_ms).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
}

/// Per-second series of the run.
struct Buckets {
    acked: Vec<u64>,
    delivered: Vec<u64>,
    latencies: Vec<Vec<u64>>,
}

fn buckets(events: &[Event], duration_ms: u64) -> Buckets {
    let n = (duration_ms / 1000 + 1) as usize;
    let mut b = Buckets {
        acked: vec![0; n],
        delivered: vec![0; n],
        latencies: vec![Vec::new(); n],
    };
    let slot = |t: u64| ((t / 1000) as usize).min(n - 1);
    let mut sent: HashMap<u64, u64> = HashMap::new();
    for e in events {
        match e {
            Event::PubReq { t_ms, pid, .. } => {
                sent.insert(*pid, *t_ms);
            }
            Event::PubOk { t_ms, pid, .. } => {
                b.acked[slot(*t_ms)] += 1;
                if let Some(req) = sent.get(pid) {
                    b.latencies[slot(*t_ms)].push(t_ms.saturating_sub(*req));
                }
            }
            Event::Deliver { t_ms, .. } => b.delivered[slot(*t_ms)] += 1,
            _ => {}
        }
    }
    b
}

/// Polylines through the points, broken where a point is missing.
fn polylines(out: &mut String, points: &[Option<(f64, f64)>], color: &str) {
    for run in points.split(Option::is_none) {
        let coords: Vec<String> = run
            .iter()
            .flatten()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        if !coords.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                coords.join(" ")
            );
        }
    }
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{}</text>"#,
        esc(s)
    );
}

fn legend(out: &mut String, top: f64, items: &[(&str, &str)]) {
    let mut x = WIDTH - RIGHT - 10.0 - 130.0 * items.len() as f64;
    for (color, label) in items {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="4" fill="{color}"/>"#,
            top - 10.0
        );
        text(out, x + 16.0, top - 5.0, "start", 11, label);
        x += 130.0;
    }
}

fn frame(out: &mut String, top: f64, label: &str) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL_H}" fill="none" stroke="#999"/>"##,
        WIDTH - LEFT - RIGHT
    );
    let cy = top + PANEL_H / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="16" y="{cy:.1}" text-anchor="middle" font-size="11" transform="rotate(-90 16 {cy:.1})">{}</text>"#,
        esc(label)
    );
}

/// Panel 1: acked publishes/s and stream deliveries/s (linear).
fn rates(out: &mut String, xs: &XScale, b: &Buckets) {
    frame(out, TOP1, "per second");
    let max = b
        .acked
        .iter()
        .chain(&b.delivered)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for frac in [0.0, 0.5, 1.0] {
        let y = TOP1 + PANEL_H * (1.0 - frac);
        text(
            out,
            LEFT - 4.0,
            y + 4.0,
            "end",
            10,
            &format!("{:.0}", max * frac),
        );
    }
    let y = |v: u64| TOP1 + PANEL_H * (1.0 - v as f64 / max);
    let series = |vals: &[u64]| -> Vec<Option<(f64, f64)>> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| Some((xs.x((i as f64 + 0.5) * 1000.0), y(*v))))
            .collect()
    };
    polylines(out, &series(&b.acked), ACKED_COLOR);
    polylines(out, &series(&b.delivered), DELIVERED_COLOR);
    legend(
        out,
        TOP1,
        &[
            (ACKED_COLOR, "acked publishes/s"),
            (DELIVERED_COLOR, "stream deliveries/s"),
        ],
    );
}

/// Panel 2: publish latency p50 and max per second (log scale, ms).
fn latency(out: &mut String, xs: &XScale, b: &Buckets) {
    frame(out, TOP2, "publish latency ms (log)");
    let top = b
        .latencies
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(10);
    let decades = (top as f64).log10().ceil().max(1.0);
    let y = |v: u64| TOP2 + PANEL_H * (1.0 - (v.max(1) as f64).log10() / decades);
    let mut tick = 1u64;
    for _ in 0..=(decades as u32) {
        let ty = y(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#eee"/>"##,
            WIDTH - RIGHT
        );
        text(out, LEFT - 4.0, ty + 4.0, "end", 10, &tick.to_string());
        tick = tick.saturating_mul(10);
    }
    let mut p50 = Vec::with_capacity(b.latencies.len());
    let mut max = Vec::with_capacity(b.latencies.len());
    for (i, lats) in b.latencies.iter().enumerate() {
        let x = xs.x((i as f64 + 0.5) * 1000.0);
        let mut sorted = lats.clone();
        sorted.sort_unstable();
        p50.push(sorted.get(sorted.len() / 2).map(|v| (x, y(*v))));
        max.push(sorted.last().map(|v| (x, y(*v))));
    }
    polylines(out, &p50, P50_COLOR);
    polylines(out, &max, MAX_COLOR);
    legend(
        out,
        TOP2,
        &[(P50_COLOR, "p50 latency"), (MAX_COLOR, "max latency")],
    );
}

/// Fault bands across both panels, and the Healed / Converged markers.
fn faults_and_markers(out: &mut String, xs: &XScale, events: &[Event]) {
    let bottom = TOP2 + PANEL_H;
    for (i, f) in fault_spans(events).into_iter().enumerate() {
        let x0 = xs.x(f.start_ms as f64);
        let x1 = xs.x(f.end_ms.unwrap_or(xs.duration_ms as u64) as f64);
        let _ = writeln!(
            out,
            r#"<rect class="fault" data-kind="{}" x="{x0:.1}" y="{TOP1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.15"/>"#,
            kind_name(f.kind),
            (x1 - x0).max(1.0),
            bottom - TOP1,
            fault_color(f.kind)
        );
        // Staggered so that labels of faults close in time do not overlap.
        let y = TOP1 + 14.0 + (i % 3) as f64 * 12.0;
        text(out, x0 + 2.0, y, "start", 10, &f.label());
    }
    for e in events {
        // Labelled between the panels, left of the line, on rows of their own.
        let (t, label, color, row) = match e {
            Event::Healed { t_ms } => (*t_ms, "healed".to_string(), "#2ca02c", 0.0),
            Event::Converged { t_ms, ok, .. } => (
                *t_ms,
                format!("converged{}", if *ok { "" } else { " (failed)" }),
                "#1f77b4",
                1.0,
            ),
            _ => continue,
        };
        let x = xs.x(t as f64);
        let _ = writeln!(
            out,
            r#"<line class="marker" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{color}" stroke-dasharray="4 3"/>"#,
            TOP1
        );
        let y = TOP1 + PANEL_H + 16.0 + row * 14.0;
        text(out, x - 3.0, y, "end", 10, &label);
    }
}

fn x_axis(out: &mut String, xs: &XScale) {
    let secs = (xs.duration_ms / 1000.0).ceil().max(1.0) as u64;
    let step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600]
        .into_iter()
        .find(|s| secs / s <= 12)
        .unwrap_or(1200);
    let y = TOP2 + PANEL_H + 16.0;
    for s in (0..=secs).step_by(step as usize) {
        text(
            out,
            xs.x(s as f64 * 1000.0),
            y,
            "middle",
            10,
            &s.to_string(),
        );
    }
    text(
        out,
        WIDTH / 2.0,
        y + 18.0,
        "middle",
        11,
        "seconds since start",
    );
}

/// The verdict with the key counts, and the count of every check.
fn title(report: &Report) -> (String, String) {
    let s = &report.summary;
    let headline = format!(
        "Starling chaos run: {} | {:.1} s, publishes {} (acked {}, failed {}), \
         stream deliveries {}, consumer deliveries {}, faults {}",
        if report.passed() { "PASS" } else { "FAIL" },
        s.duration_ms as f64 / 1000.0,
        s.publishes_sent,
        s.publishes_acked,
        s.publishes_failed,
        s.deliveries,
        s.consumer_deliveries,
        s.faults_by_kind.values().sum::<u64>(),
    );
    let checks: Vec<String> = report
        .checks
        .iter()
        .map(|c| {
            let count = if c.skipped {
                "skipped".to_string()
            } else {
                c.count.to_string()
            };
            format!("{} {count}", c.name)
        })
        .collect();
    (headline, checks.join(" · "))
}

/// The run as an SVG document.
pub fn timeline(events: &[Event], report: &Report) -> String {
    let xs = XScale {
        duration_ms: report.summary.duration_ms.max(1) as f64,
    };
    let b = buckets(events, report.summary.duration_ms);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let color = if report.passed() {
        "#2ca02c"
    } else {
        "#d62728"
    };
    let (headline, checks) = title(report);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="13" font-weight="bold" fill="{color}">{}</text>"#,
        esc(&headline)
    );
    text(&mut out, LEFT, 34.0, "start", 11, &checks);
    faults_and_markers(&mut out, &xs, events);
    rates(&mut out, &xs, &b);
    latency(&mut out, &xs, &b);
    x_axis(&mut out, &xs);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::checker::{check, Bounds};
    use crate::chaos::history::FaultEnd;

    #[test]
    fn timeline_is_escaped_svg_with_one_band_per_fault() {
        let events = vec![
            Event::PubReq {
                t_ms: 100,
                pid: 1,
                client: "p".into(),
                node: "a<b".into(),
                via: crate::chaos::history::Transport::Http,
                topic: "t".into(),
                id: "i1".into(),
            },
            Event::PubOk {
                t_ms: 130,
                pid: 1,
                topic: "t".into(),
                id: "i1".into(),
                epoch: "E".into(),
                offset: 1,
                duplicate: false,
            },
            Event::Fault {
                t_ms: 1_000,
                kind: FaultKind::Kill,
                nodes: vec!["a<b".into()],
            },
            Event::Fault {
                t_ms: 1_500,
                kind: FaultKind::Partition,
                nodes: vec!["n2&n3".into()],
            },
            Event::FaultEnd {
                t_ms: 2_000,
                end: FaultEnd::Restart,
                nodes: vec!["a<b".into()],
            },
            Event::Healed { t_ms: 2_500 },
            Event::Converged {
                t_ms: 3_000,
                ok: true,
                detail: String::new(),
            },
            Event::FinalMeta {
                topic: "t".into(),
                epoch: "E".into(),
                first: 1,
                head: 1,
            },
            Event::FinalLog {
                topic: "t".into(),
                epoch: "E".into(),
                offset: 1,
                id: "i1".into(),
            },
        ];
        let report = check(
            &events,
            &Bounds {
                convergence_ms: 30_000,
                majority_faults: false,
            },
        );
        let svg = timeline(&events, &report);
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="fault""#).count(), 2);
        assert_eq!(svg.matches(r#"class="marker""#).count(), 2);
        assert!(svg.contains("kill a&lt;b"));
        assert!(svg.contains("partition n2&amp;n3"));
        assert!(!svg.contains("a<b"));
        assert!(svg.contains("PASS"));
        // Every tag that opens is closed: the text is well-formed enough for a browser.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}
