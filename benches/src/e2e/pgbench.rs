//! Running `pgbench` against one target and reading its summary.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

use super::child::{clean_command, die_with_parent, wait_deadline};
use super::{Cell, Workload};

/// What pgbench printed at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// `tps = X (without initial connection time)`: connection setup is
    /// excluded so a proxy's login cost does not blur its per-query cost.
    pub tps: f64,
    pub latency_ms: f64,
    pub transactions: u64,
    /// `number of failed transactions` (pgbench 15+; 0 when absent).
    pub failed: u64,
}

/// Parses pgbench's closing summary; `None` if the key lines are missing
/// (pgbench died before printing them).
pub fn parse_summary(out: &str) -> Option<Summary> {
    let mut s = Summary::default();
    let (mut tps, mut latency, mut txns) = (false, false, false);
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            // pgbench 14+ prints one tps line; older ones print "including"
            // and "excluding connections establishing": take the latter.
            if rest.contains("without initial connection") || rest.contains("excluding") {
                s.tps = first_number(rest)?;
                tps = true;
            }
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            s.latency_ms = first_number(rest)?;
            latency = true;
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed: ")
        {
            // With -t the value reads "N/M"; with -T just "N".
            s.transactions = first_number(rest)? as u64;
            txns = true;
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            s.failed = first_number(rest)? as u64;
        }
    }
    (tps && latency && txns).then_some(s)
}

fn first_number(text: &str) -> Option<f64> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// How to reach a target and what to run on it.
pub struct Pgbench {
    pub program: PathBuf,
    pub user: String,
    pub password: String,
    pub dbname: String,
    /// libpq's sslmode for every run.
    pub sslmode: &'static str,
    /// Where stdout/stderr go: files, not pipes, so thousands of error lines
    /// from a failing run can never block pgbench on a full pipe.
    pub scratch: PathBuf,
}

/// One finished run: the parsed summary, or why there is none.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub summary: Option<Summary>,
    pub exit_code: Option<i32>,
    /// Tail of stderr when the run failed in any way.
    pub error: Option<String>,
}

impl Outcome {
    pub fn failures(&self) -> u64 {
        match &self.summary {
            Some(s) if self.error.is_none() => s.failed,
            Some(s) => s.failed.max(1),
            None => 1,
        }
    }
}

impl Pgbench {
    /// `pgbench -i -s scale` directly on `port`; minutes at large scales.
    pub fn init(&self, port: u16, scale: u32) -> Result<(), String> {
        let args = vec![
            "-i".to_owned(),
            "-s".to_owned(),
            scale.to_string(),
            "-q".to_owned(),
        ];
        let timeout = Duration::from_secs(120 + 30 * u64::from(scale));
        let out = self.spawn(port, &args, timeout)?;
        match out.exit_code {
            Some(0) => Ok(()),
            _ => Err(format!(
                "pgbench -i -s {scale} failed: {}",
                out.error.unwrap_or_default()
            )),
        }
    }

    /// Runs `cell` for `secs` seconds against `port`.
    pub fn run(&self, port: u16, cell: &Cell, secs: u32) -> Result<Outcome, String> {
        let mut args: Vec<String> = vec![
            // -n: the orchestrator vacuums directly on the primary, so the
            // proxy under test is not timed doing maintenance.
            "-n".into(),
            format!("--client={}", cell.clients),
            format!("--jobs={}", cell.threads()),
            format!("--time={secs}"),
            format!("--protocol={}", cell.mode),
        ];
        if cell.workload == Workload::SelectOnly {
            args.push("--select-only".into());
        }
        // A healthy run ends on time; the margin covers connection setup
        // and a slow shutdown, and a hung proxy is killed rather than waited on.
        let timeout = Duration::from_secs(u64::from(secs) + 60);
        self.spawn(port, &args, timeout)
    }

    fn spawn(&self, port: u16, args: &[String], timeout: Duration) -> Result<Outcome, String> {
        let out_path = self.scratch.join("pgbench.out");
        let err_path = self.scratch.join("pgbench.err");
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cmd = clean_command(&self.program);
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", &self.user])
            .args(args)
            .arg(&self.dbname)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", self.sslmode)
            .stdout(Stdio::from(file(&out_path)?))
            .stderr(Stdio::from(file(&err_path)?));
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let status = wait_deadline(&mut child, timeout);
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        let summary = parse_summary(&stdout);
        let exit_code = status.and_then(|s| s.code());
        let error = match (status, &summary) {
            (None, _) => Some(format!(
                "killed after {}s; {}",
                timeout.as_secs(),
                tail(&stderr)
            )),
            (Some(s), Some(_)) if s.success() => None,
            (Some(s), _) => Some(format!("pgbench exited with {s}; {}", tail(&stderr))),
        };
        Ok(Outcome {
            summary,
            exit_code,
            error,
        })
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(5);
    match lines[start..].join(" | ") {
        s if s.is_empty() => "no stderr output".to_owned(),
        s => format!("stderr: {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgbench 15.18, `-n -c 16 -j 2 -T 5 -M prepared -S` through pgsplit.
    const PG15: &str = include_str!("testdata/pgbench15_select_prepared.txt");

    #[test]
    fn parses_pg15_summary() {
        let s = parse_summary(PG15).unwrap();
        assert!(s.tps > 0.0 && s.latency_ms > 0.0, "{s:?}");
        assert!(s.transactions > 0);
        assert_eq!(s.failed, 0);
    }

    #[test]
    fn parses_failures_and_pg13_tps() {
        let out = "number of transactions actually processed: 1000/1000\n\
                   number of failed transactions: 7 (0.700%)\n\
                   latency average = 1.250 ms\n\
                   tps = 790.1 (including connections establishing)\n\
                   tps = 800.5 (excluding connections establishing)\n";
        let s = parse_summary(out).unwrap();
        assert_eq!((s.transactions, s.failed), (1000, 7));
        assert_eq!((s.tps, s.latency_ms), (800.5, 1.25));
    }

    #[test]
    fn missing_lines_mean_no_summary() {
        assert_eq!(parse_summary("pgbench: error: connection refused\n"), None);
        assert_eq!(
            parse_summary("tps = 10 (without initial connection time)\n"),
            None
        );
    }

    #[test]
    fn a_failed_run_counts_at_least_once() {
        let ok = Outcome {
            summary: parse_summary(PG15),
            exit_code: Some(0),
            error: None,
        };
        assert_eq!(ok.failures(), 0);
        let aborted = Outcome {
            error: Some("pgbench exited with 2".into()),
            ..ok.clone()
        };
        assert_eq!(aborted.failures(), 1);
        let dead = Outcome {
            summary: None,
            ..aborted
        };
        assert_eq!(dead.failures(), 1);
    }
}
