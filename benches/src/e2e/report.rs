//! Turning raw runs into the per-cell summary, the markdown table and the
//! JSON file that keeps every measurement.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::pgbench::Summary;
use super::{median, Cell};

/// One pgbench run against one target.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    #[serde(flatten)]
    pub cell: Cell,
    pub round: u32,
    /// 0-based place of this target in its round; the order rotates each
    /// round so no target always runs right after a given other one.
    pub position: usize,
    pub target: String,
    pub summary: Option<Summary>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub failures: u64,
    /// utime+stime of the proxy (tree) over the run, in clock ticks.
    pub proxy_cpu_ticks: Option<u64>,
    pub proxy_cpu_us_per_txn: Option<f64>,
}

/// A cell a target was not run on, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    #[serde(flatten)]
    pub cell: Cell,
    pub target: String,
    pub reason: String,
}

/// One line of the result table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub cell: Cell,
    pub target: String,
    pub rounds: usize,
    pub median_tps: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    /// This target's median TPS over direct's median TPS.
    pub tps_ratio_to_direct: Option<f64>,
    pub median_proxy_cpu_us_per_txn: Option<f64>,
    pub failures: u64,
    pub skipped: Option<String>,
}

/// µs of CPU per transaction from a tick delta.
pub fn cpu_us_per_txn(ticks: u64, ticks_per_sec: u64, transactions: u64) -> Option<f64> {
    (transactions > 0 && ticks_per_sec > 0)
        .then(|| ticks as f64 * 1e6 / ticks_per_sec as f64 / transactions as f64)
}

pub fn summarize(cells: &[Cell], targets: &[&str], runs: &[Run], skips: &[Skip]) -> Vec<Row> {
    let mut rows = Vec::new();
    for cell in cells {
        let mut direct_tps = None;
        for &target in targets {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.cell == *cell && r.target == target)
                .collect();
            let ok: Vec<&Summary> = mine.iter().filter_map(|r| r.summary.as_ref()).collect();
            let tps = median(&ok.iter().map(|s| s.tps).collect::<Vec<_>>());
            if target == "direct" {
                direct_tps = tps;
            }
            let latency = (!ok.is_empty())
                .then(|| ok.iter().map(|s| s.latency_ms).sum::<f64>() / ok.len() as f64);
            let cpu: Vec<f64> = mine.iter().filter_map(|r| r.proxy_cpu_us_per_txn).collect();
            let skipped = skips
                .iter()
                .find(|s| s.cell == *cell && s.target == target)
                .map(|s| s.reason.clone());
            rows.push(Row {
                cell: *cell,
                target: target.to_owned(),
                rounds: mine.len(),
                median_tps: tps,
                mean_latency_ms: latency,
                tps_ratio_to_direct: match (tps, direct_tps) {
                    (Some(t), Some(d)) if d > 0.0 => Some(t / d),
                    _ => None,
                },
                median_proxy_cpu_us_per_txn: median(&cpu),
                failures: mine.iter().map(|r| r.failures).sum(),
                skipped,
            });
        }
    }
    rows
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | mode | clients | target | TPS (median) | latency ms (mean) | TPS vs direct | proxy CPU µs/txn (median) | failures |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    let num =
        |v: Option<f64>, digits: usize| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
    for r in rows {
        let c = &r.cell;
        if let Some(why) = &r.skipped {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | skipped: {why} | | | | |",
                c.workload, c.mode, c.clients, r.target
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
            c.workload,
            c.mode,
            c.clients,
            r.target,
            num(r.median_tps, 0),
            num(r.mean_latency_ms, 3),
            num(r.tps_ratio_to_direct, 2),
            num(r.median_proxy_cpu_us_per_txn, 1),
            r.failures,
            if r.failures > 0 { " ⚠" } else { "" },
        );
    }
    s
}

/// A target as found at start-up.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub name: String,
    pub measured: bool,
    pub version: String,
    /// Why a peer was skipped, or which modes it could not run.
    pub note: Option<String>,
}

/// What the run was asked to do.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub scale: u32,
    pub duration_s: u32,
    pub rounds: u32,
    pub warmup_s: u32,
    pub replicas: usize,
    pub clients: Vec<u32>,
    pub workloads: Vec<String>,
    pub modes: Vec<String>,
    pub pgsplit_binary: String,
    /// TLS on both hops (`--tls`).
    pub tls: bool,
}

/// The JSON file: everything needed to recheck the table.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub machine: &'a Machine,
    pub settings: &'a Settings,
    pub targets: &'a [TargetInfo],
    /// False when the time limit or a dead proxy cut the run short.
    pub complete: bool,
    pub problems: &'a [String],
    pub summary: &'a [Row],
    pub runs: &'a [Run],
}

/// Whatever about this machine could explain a number.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub postgres_version: String,
    pub pgbench_version: String,
    pub clock_ticks_per_second: u64,
    pub date_utc: String,
}

impl Machine {
    pub fn probe(postgres_version: String, pgbench_version: String, hz: u64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: kernel.trim().to_owned(),
            postgres_version,
            pgbench_version,
            clock_ticks_per_second: hz,
            date_utc: utc_now(),
        }
    }
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds, using Howard Hinnant's
/// days-to-civil algorithm (no date crate for one timestamp).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Mode, Workload};
    use super::*;

    fn cell() -> Cell {
        Cell {
            workload: Workload::SelectOnly,
            mode: Mode::Simple,
            clients: 16,
        }
    }

    fn run(target: &str, tps: f64, cpu: Option<f64>) -> Run {
        Run {
            cell: cell(),
            round: 0,
            position: 0,
            target: target.into(),
            summary: Some(Summary {
                tps,
                latency_ms: 1000.0 / tps,
                transactions: 1000,
                failed: 0,
            }),
            exit_code: Some(0),
            error: None,
            failures: 0,
            proxy_cpu_ticks: None,
            proxy_cpu_us_per_txn: cpu,
        }
    }

    #[test]
    fn ratio_is_median_over_median() {
        let runs = [
            run("direct", 100.0, None),
            run("direct", 300.0, None),
            run("direct", 200.0, None),
            run("pgsplit", 50.0, Some(10.0)),
            run("pgsplit", 150.0, Some(30.0)),
            run("pgsplit", 100.0, Some(20.0)),
        ];
        let rows = summarize(&[cell()], &["direct", "pgsplit"], &runs, &[]);
        assert_eq!(rows[0].median_tps, Some(200.0));
        assert_eq!(rows[1].tps_ratio_to_direct, Some(0.5));
        assert_eq!(rows[1].median_proxy_cpu_us_per_txn, Some(20.0));
        assert_eq!(rows[0].median_proxy_cpu_us_per_txn, None);
        // Latency is the mean over rounds: (20 + 6.667 + 10) / 3.
        let table = markdown(&rows);
        assert!(table
            .contains("| select-only | simple | 16 | pgsplit | 100 | 12.222 | 0.50 | 20.0 | 0 |"));
    }

    #[test]
    fn skipped_cells_say_why() {
        let skip = Skip {
            cell: cell(),
            target: "pgbouncer".into(),
            reason: "too old".into(),
        };
        let rows = summarize(&[cell()], &["pgbouncer"], &[], &[skip]);
        assert_eq!(rows[0].skipped.as_deref(), Some("too old"));
        assert!(markdown(&rows).contains("skipped: too old"));
    }

    #[test]
    fn cpu_per_transaction() {
        // 250 ticks at 100 Hz = 2.5 s over 100 000 transactions = 25 µs.
        assert_eq!(cpu_us_per_txn(250, 100, 100_000), Some(25.0));
        assert_eq!(cpu_us_per_txn(250, 100, 0), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
