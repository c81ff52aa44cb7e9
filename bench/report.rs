//! The end of a run: a human table, and with --json one JSON object on stdout.

use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::stats::{self, Stats};

/// Broker CPU accounting around a run, when --broker-pid was given.
pub struct CpuProbe {
    broker_pid: Option<u32>,
    broker_start_s: Option<f64>,
    self_start_s: f64,
}

impl CpuProbe {
    pub fn start(broker_pid: Option<u32>) -> CpuProbe {
        let broker_start_s = broker_pid.and_then(stats::process_cpu_seconds);
        if let (Some(pid), None) = (broker_pid, broker_start_s) {
            say!("warning: cannot read /proc/{pid}/stat; broker CPU will not be reported");
        }
        CpuProbe {
            broker_pid,
            broker_start_s,
            self_start_s: stats::self_cpu_seconds(),
        }
    }

    /// (broker CPU seconds, our CPU seconds) since `start`.
    pub fn finish(&self) -> (Option<f64>, f64) {
        let broker = match (self.broker_pid, self.broker_start_s) {
            (Some(pid), Some(start)) => stats::process_cpu_seconds(pid).map(|end| end - start),
            _ => None,
        };
        (broker, stats::self_cpu_seconds() - self.self_start_s)
    }
}

pub struct Report {
    pub workload: &'static str,
    pub elapsed_s: f64,
    pub records: u64,
    pub bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub latency: Histogram<u64>,
    /// What the latency measures, for the table.
    pub latency_label: &'static str,
    pub broker_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
    /// Workload-specific fields, added to the JSON object and the table as they are.
    pub extra: Map<String, Value>,
}

impl Report {
    pub fn from_stats(
        workload: &'static str,
        latency_label: &'static str,
        stats: &Stats,
        elapsed_s: f64,
        cpu: &CpuProbe,
    ) -> Report {
        let (broker_cpu_s, client_cpu_s) = cpu.finish();
        Report {
            workload,
            elapsed_s,
            records: stats.records.load(Ordering::Relaxed),
            bytes: stats.bytes.load(Ordering::Relaxed),
            requests: stats.requests.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            error_samples: stats.error_samples(),
            latency: stats.merged_histogram(),
            latency_label,
            broker_cpu_s,
            client_cpu_s,
            extra: Map::new(),
        }
    }

    fn per_gb(&self, cpu_s: f64) -> Option<f64> {
        (self.bytes > 0).then(|| cpu_s / (self.bytes as f64 / 1e9))
    }

    pub fn to_json(&self) -> Value {
        let h = &self.latency;
        let secs = self.elapsed_s.max(1e-9);
        let mut obj = json!({
            "workload": self.workload,
            "elapsed_s": self.elapsed_s,
            "records": self.records,
            "bytes": self.bytes,
            "requests": self.requests,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "msgs_per_s": self.records as f64 / secs,
            "mb_per_s": self.bytes as f64 / secs / 1e6,
            "latency_measures": self.latency_label,
            "latency_samples": h.len(),
            "latency_us": {
                "p50": h.value_at_quantile(0.50), "p90": h.value_at_quantile(0.90),
                "p99": h.value_at_quantile(0.99), "p99_9": h.value_at_quantile(0.999),
                "max": h.max(), "mean": h.mean(),
            },
            "broker_cpu_s": self.broker_cpu_s,
            "cpu_s_per_gb": self.broker_cpu_s.and_then(|c| self.per_gb(c)),
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_s_per_gb": self.per_gb(self.client_cpu_s),
        });
        let map = obj.as_object_mut().expect("object");
        // The exact command makes a saved result reproducible.
        let command: Vec<String> = std::env::args().collect();
        map.insert("command".into(), json!(command.join(" ")));
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        obj
    }

    pub fn print_table(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let secs = self.elapsed_s.max(1e-9);
        let h = &self.latency;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        writeln!(out, "\n== sable-bench {} ==", self.workload)?;
        writeln!(out, "{:<22} {:.2} s", "elapsed", self.elapsed_s)?;
        writeln!(
            out,
            "{:<22} {} ({:.0} msg/s)",
            "records",
            self.records,
            self.records as f64 / secs
        )?;
        writeln!(
            out,
            "{:<22} {} ({:.1} MB/s)",
            "bytes",
            self.bytes,
            self.bytes as f64 / secs / 1e6
        )?;
        writeln!(out, "{:<22} {}", "requests", self.requests)?;
        writeln!(out, "{:<22} {}", "errors", self.errors)?;
        writeln!(
            out,
            "latency ({}), ms, {} samples:",
            self.latency_label,
            h.len()
        )?;
        writeln!(
            out,
            "  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        )?;
        if let Some(c) = self.broker_cpu_s {
            let per_gb = self.per_gb(c).map_or("-".into(), |v| format!("{v:.2}"));
            writeln!(out, "{:<22} {c:.2} s ({per_gb} CPU-s/GB)", "broker cpu")?;
        }
        writeln!(out, "{:<22} {:.2} s", "client cpu", self.client_cpu_s)?;
        for (k, v) in &self.extra {
            writeln!(out, "{k:<22} {v}")?;
        }
        for e in &self.error_samples {
            writeln!(out, "error sample: {e}")?;
        }
        Ok(())
    }

    /// Table on stdout, or table on stderr and JSON on stdout with --json. Fails when stdout
    /// cannot take the result.
    pub fn emit(&self, json: bool) -> std::io::Result<()> {
        use std::io::Write as _;
        if json {
            let _ = self.print_table(&mut std::io::stderr());
            writeln!(std::io::stdout(), "{}", self.to_json())
        } else {
            self.print_table(&mut std::io::stdout())
        }
    }
}
