//! Results: percentiles, median/min/max over runs, and the output of every scenario
//! (a markdown table for `BENCHMARKS.md` and one JSON line for machines).

use std::time::Duration;

use serde_json::{Value, json};

use crate::sys;

/// The `p`-th percentile (0–100) of sorted values; 0 when empty.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Median, min and max of one figure over several runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[v.len() - 1] }
    }

    /// `median (min–max)` with `digits` decimals.
    pub(crate) fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            return format!("{:.digits$}", self.median);
        }
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median, self.min, self.max)
    }

    pub(crate) fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

/// Microseconds as a float.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A scenario's result: a markdown table and a JSON document.
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) headers: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) notes: Vec<String>,
    pub(crate) json: Vec<Value>,
}

impl Report {
    pub(crate) fn new(scenario: &'static str, headers: &[&str]) -> Report {
        Report {
            scenario,
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
            json: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>, json: Value) {
        self.rows.push(cells);
        self.json.push(json);
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Prints the markdown table, the notes, then one JSON line.
    pub(crate) fn print(&self, command: &str) {
        println!();
        println!("### {}", self.scenario);
        println!();
        println!(
            "Machine: {} CPUs ({}), load average {:.2} at the end.",
            sys::cpus(),
            sys::cpu_model(),
            sys::loadavg()
        );
        println!();
        println!("| {} |", self.headers.join(" | "));
        println!("|{}|", self.headers.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        println!();
        for n in &self.notes {
            println!("- {n}");
        }
        println!();
        println!("Reproduce: `{command}`");
        println!();
        let doc = json!({
            "scenario": self.scenario,
            "cpus": sys::cpus(),
            "cpu_model": sys::cpu_model(),
            "loadavg": sys::loadavg(),
            "command": command,
            "results": self.json,
        });
        println!("{doc}");
    }
}
