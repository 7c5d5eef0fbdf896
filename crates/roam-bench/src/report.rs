//! The results: rows of summaries grouped in sections, targets checked,
//! printed as a table and written as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::stats::Summary;

/// One measured thing.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub unit: &'static str,
    /// Median, p90, min and max, in `unit`. For a rate, p90 is the rate
    /// of the p90 (slow) time, so lower than the median.
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
    /// Against the section's reference row (see [`Section::ratio`]).
    pub ratio: Option<f64>,
    /// Runs killed at the time limit (not in the figures).
    pub stalled: usize,
    /// The raw samples (seconds for times, bytes or counts otherwise), in
    /// the order they were taken.
    pub raw: Summary,
}

impl Row {
    /// Times, shown in milliseconds; `None` for a run that stalled.
    pub fn time(label: impl Into<String>, samples: &[Option<Duration>]) -> Row {
        let s: Vec<f64> = samples
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect();
        let raw = Summary::of(&s);
        Row {
            label: label.into(),
            unit: "ms",
            median: raw.median * 1e3,
            p90: raw.p90 * 1e3,
            min: raw.min * 1e3,
            max: raw.max * 1e3,
            n: raw.n,
            ratio: None,
            stalled: samples.iter().filter(|t| t.is_none()).count(),
            raw,
        }
    }

    /// Times to move `bytes`, shown as MB/s (10^6 bytes per second).
    pub fn rate(label: impl Into<String>, bytes: u64, samples: &[Option<Duration>]) -> Row {
        let mut row = Row::time(label, samples);
        let r = |secs: f64| bytes as f64 / secs / 1e6;
        let raw = &row.raw;
        (row.median, row.p90, row.min, row.max) =
            (r(raw.median), r(raw.p90), r(raw.max), r(raw.min));
        row.unit = "MB/s";
        row
    }

    /// Plain values, shown divided by `scale`.
    pub fn values(label: impl Into<String>, unit: &'static str, scale: f64, v: &[f64]) -> Row {
        let raw = Summary::of(v);
        Row {
            label: label.into(),
            unit,
            median: raw.median / scale,
            p90: raw.p90 / scale,
            min: raw.min / scale,
            max: raw.max / scale,
            n: raw.n,
            ratio: None,
            stalled: 0,
            raw,
        }
    }
}

/// A group of rows measured side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    /// What the ratio column means, if there is one.
    pub ratio: Option<&'static str>,
    pub rows: Vec<Row>,
}

impl Section {
    /// A section whose ratios are each row's median over row `reference`'s.
    pub fn with_ratios(
        title: impl Into<String>,
        ratio: &'static str,
        reference: usize,
        mut rows: Vec<Row>,
    ) -> Section {
        let base = rows[reference].median;
        for r in &mut rows {
            r.ratio = Some(r.median / base);
        }
        Section {
            title: title.into(),
            ratio: Some(ratio),
            rows,
        }
    }
}

/// A target of the issue, and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    pub target: String,
    /// `None` when it could not be measured.
    pub pass: Option<bool>,
    pub note: Option<String>,
}

impl Check {
    pub fn below(what: &str, value: f64, unit: &'static str, limit: f64) -> Check {
        Check {
            what: what.into(),
            value: Some(value),
            unit,
            target: format!("< {limit} {unit}"),
            pass: Some(value < limit),
            note: None,
        }
    }

    pub fn at_least(what: &str, value: f64, unit: &'static str, limit: f64) -> Check {
        Check {
            what: what.into(),
            value: Some(value),
            unit,
            target: format!(">= {limit} {unit}"),
            pass: Some(value >= limit),
            note: None,
        }
    }

    pub fn none_stalled(what: &str, stalled: usize) -> Check {
        Check {
            what: what.into(),
            value: Some(stalled as f64),
            unit: "runs",
            target: "0 runs".into(),
            pass: Some(stalled == 0),
            note: None,
        }
    }

    pub fn not_measured(what: &str, target: String, why: &str) -> Check {
        Check {
            what: what.into(),
            value: None,
            unit: "",
            target,
            pass: None,
            note: Some(why.into()),
        }
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub notes: Vec<String>,
    pub sections: Vec<Section>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// /proc/loadavg when the run started: how busy the machine was.
    pub loadavg: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A number with three significant digits or so.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

const LABEL: usize = 50;

impl Report {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "roam-bench, {}: {} cpus ({}), kernel {}, load average {} at start",
            self.date, m.cpus, m.cpu_model, m.kernel, m.loadavg
        );
        for n in &self.notes {
            let _ = writeln!(o, "  {n}");
        }
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(o, "\n{}. {}", i + 1, s.title);
            let _ = writeln!(
                o,
                "   {:LABEL$} {:>9} {:>9} {:>9} {:>9} {:>4}  {}",
                "",
                "median",
                "p90",
                "min",
                "max",
                "n",
                s.ratio.unwrap_or("")
            );
            for r in &s.rows {
                let mut ratio = r.ratio.map(|x| format!("{}x", num(x))).unwrap_or_default();
                if r.stalled > 0 {
                    ratio.push_str(&format!("  [{} stalled, killed]", r.stalled));
                }
                let _ = writeln!(
                    o,
                    "   {:LABEL$} {:>9} {:>9} {:>9} {:>9} {:>4}  {ratio}",
                    format!("{} ({})", r.label, r.unit),
                    num(r.median),
                    num(r.p90),
                    num(r.min),
                    num(r.max),
                    r.n
                );
            }
        }
        let _ = writeln!(o, "\ntargets (from issues 2, 3 and 4)");
        for c in &self.checks {
            let value = c
                .value
                .map(|v| match c.unit {
                    "runs" => format!("{v} runs"),
                    unit => format!("{} {unit}", num(v)),
                })
                .unwrap_or_else(|| "-".into());
            let verdict = match c.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a",
            };
            let _ = writeln!(
                o,
                "   {:LABEL$} {:>14}  target {:<14} {verdict}{}",
                c.what,
                value,
                c.target,
                c.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        o
    }
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
    }

    #[test]
    fn rates_turn_slow_times_into_low_rates() {
        let t = [Some(1), Some(2), None, Some(4)].map(|s| s.map(Duration::from_secs));
        let r = Row::rate("x", 4_000_000, &t);
        assert_eq!((r.median, r.min, r.max), (2.0, 1.0, 4.0));
        assert!(r.p90 < r.median);
        assert_eq!((r.n, r.stalled), (3, 1));
    }

    #[test]
    fn ratios_are_over_the_reference() {
        let a = Row::time("a", &[Some(Duration::from_millis(2))]);
        let b = Row::time("b", &[Some(Duration::from_millis(10))]);
        let s = Section::with_ratios("t", "x", 0, vec![a, b]);
        assert_eq!(s.rows[1].ratio, Some(5.0));
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(num(0.4567), "0.457");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(f64::NAN), "-");
    }
}
