//! One measurement: a pgbench run bracketed by readings of the proxy's CPU.

use super::pgbench::Pgbench;
use super::report::{self, Run};
use super::targets::Target;
use super::Cell;

/// Runs `cell` on `target` and records everything about it, failures
/// included: a failed run is data, not an error. Err only when pgbench
/// cannot be started at all.
pub fn measure(
    pgbench: &Pgbench,
    target: &Target,
    cell: &Cell,
    secs: u32,
    hz: u64,
    round: u32,
    position: usize,
) -> Result<Run, String> {
    let before = target.cpu_ticks();
    let outcome = pgbench.run(target.port, cell, secs)?;
    let ticks = match (before, target.cpu_ticks()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let txns = outcome.summary.as_ref().map_or(0, |s| s.transactions);
    Ok(Run {
        cell: *cell,
        round,
        position,
        target: target.name.into(),
        failures: outcome.failures(),
        proxy_cpu_us_per_txn: ticks.and_then(|t| report::cpu_us_per_txn(t, hz, txns)),
        proxy_cpu_ticks: ticks,
        summary: outcome.summary,
        exit_code: outcome.exit_code,
        error: outcome.error,
    })
}

pub fn progress(run: &Run, rounds: u32) -> String {
    let c = &run.cell;
    let mut line = format!(
        "[{}/{rounds}] {:<11} {:<8} c={:<3} {:<9}",
        run.round + 1,
        c.workload.as_str(),
        c.mode.as_str(),
        c.clients,
        run.target
    );
    if let Some(s) = &run.summary {
        line.push_str(&format!(" tps={:>8.0} lat={:.3}ms", s.tps, s.latency_ms));
    }
    if let Some(cpu) = run.proxy_cpu_us_per_txn {
        line.push_str(&format!(" cpu={cpu:.1}µs/txn"));
    }
    if run.failures > 0 {
        line.push_str(&format!(" FAILED x{}", run.failures));
    }
    line
}
