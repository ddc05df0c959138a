//! Measuring and showing: latency histograms (HDR, microsecond resolution), medians, progress bars
//! that appear only when stderr is a terminal, and the summary a scenario prints.

use std::io::IsTerminal;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

/// Latencies recorded in microseconds with three significant digits (values above an hour are
/// recorded as an hour).
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // 1 µs to 1 hour: far wider than any latency here, so nothing saturates.
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.record_n(d, 1);
    }

    /// `n` events that each took `d` (the runtimes of one heartbeat call).
    pub fn record_n(&mut self, d: Duration, n: u64) {
        let us: u64 = d.as_micros().try_into().unwrap_or(u64::MAX);
        self.0.saturating_record_n(us.max(1), n);
    }

    /// A latency taken from two wall clocks (e.g. the server's `enqueued_at`); negative values
    /// (clock noise) count as zero.
    pub fn record_chrono(&mut self, d: chrono::TimeDelta) {
        self.record_micros(d.num_microseconds().unwrap_or(i64::MAX).max(0) as u64);
    }

    fn record_micros(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("auto-resizing histograms merge");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The median of some durations, in milliseconds.
pub fn median_ms(samples: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

/// Events per second, or 0 for an empty interval.
pub fn per_sec(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A progress bar on stderr when it is a terminal; a hidden one otherwise (logs, pipes, CI).
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{prefix:>12} [{bar:32}] {pos}/{len} {per_sec} {msg}"
    } else {
        "{prefix:>12} {spinner} {pos} {per_sec} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A scenario's outcome: human-readable lines, then (with `--json`) one JSON object as the last
/// line of stdout.
pub struct Summary {
    pub lines: Vec<String>,
    pub json: Map<String, Value>,
}

impl Summary {
    pub fn new(title: String) -> Self {
        Self {
            lines: vec![title],
            json: Map::new(),
        }
    }

    pub fn line(&mut self, s: String) {
        self.lines.push(s);
    }

    /// Adds a number to the JSON object, rounded to 0.01 so the line stays readable.
    pub fn num(&mut self, key: &str, v: f64) {
        let rounded = (v * 100.0).round() / 100.0;
        self.json.insert(key.to_owned(), Value::from(rounded));
    }

    pub fn int(&mut self, key: &str, v: u64) {
        self.json.insert(key.to_owned(), Value::from(v));
    }

    pub fn print(&self, json: bool) {
        for l in &self.lines {
            println!("{l}");
        }
        if json {
            println!("{}", Value::Object(self.json.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(median_ms(&[d(3), d(1), d(2)]), 2.0);
        assert_eq!(median_ms(&[d(4), d(1), d(2), d(3)]), 2.5);
    }

    #[test]
    fn quantiles_are_in_milliseconds() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        assert!((l.ms(0.5) - 50.0).abs() < 0.1, "{}", l.ms(0.5));
        assert!((l.ms(0.99) - 99.0).abs() < 0.1, "{}", l.ms(0.99));
    }
}
