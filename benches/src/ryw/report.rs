//! The tables printed at the end and the JSON file.

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::{KEPT_ON_PRIMARY, WAITS};
use super::scenarios::ScenarioResult;
use super::Scenario;

/// Everything the JSON file holds.
#[derive(Serialize)]
pub struct Report<'a> {
    pub pgsplit_binary: String,
    /// `git describe --always --dirty` of the workspace, when it answers.
    pub git_describe: Option<String>,
    /// UTC, ISO 8601.
    pub date: String,
    pub unix_time: u64,
    pub postgres: String,
    pub seconds_per_scenario: u32,
    pub modes: &'a [String],
    pub results: &'a [ScenarioResult],
    /// Modes that could not be measured, and why.
    pub problems: &'a [String],
}

/// One markdown table per scenario, a row per mode, each followed by
/// every `pgsplit_ryw_*` counter's growth (new counters show up there).
pub fn tables(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    for scenario in Scenario::ALL {
        let rows: Vec<&ScenarioResult> =
            results.iter().filter(|r| r.scenario == scenario).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}\n", heading(scenario));
        out.push_str(
            "| mode | replica share of reads | reads on replicas | reads on primary \
             | kept_on_primary | waits | TPS | writer TPS | violations | errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &rows {
            out.push_str(&row(r));
        }
        for r in &rows {
            let _ = writeln!(out, "  {} ryw counters: {}", r.mode, ryw_line(r));
        }
    }
    out
}

fn heading(scenario: Scenario) -> String {
    let what = match scenario {
        Scenario::OwnWrites => "4 clients: INSERT a row, then SELECT it (autocommit)",
        Scenario::RoAfterRw => "4 clients: INSERT in a transaction, then SELECT it READ ONLY",
        Scenario::LoadSameUserReaders => "2 tpcb-like writers + 2 -S readers, same user",
        Scenario::LoadOtherUserReaders => "2 tpcb-like writers + 2 -S readers as `other`",
    };
    format!("{} ({what})", scenario.name())
}

fn row(r: &ScenarioResult) -> String {
    let d = &r.delta;
    let share = d
        .replica_share()
        .map_or("-".to_owned(), |s| format!("{s:.1}%"));
    let writers = r.client("writers").and_then(|c| c.tps);
    let violations = match (r.scenario.probes(), r.violations()) {
        (false, 0) => "-".to_owned(),
        (_, 0) => "0".to_owned(),
        (_, n) => format!("**{n}**"),
    };
    format!(
        "| {} | {share} | {} | {} | {} | {} | {} | {} | {violations} | {} |\n",
        r.mode,
        d.reads_on_replicas,
        d.reads_on_primary,
        d.ryw(KEPT_ON_PRIMARY),
        d.ryw(WAITS),
        tps(r.main_tps()),
        tps(writers),
        r.errors()
    )
}

fn tps(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

fn ryw_line(r: &ScenarioResult) -> String {
    if r.delta.ryw.is_empty() {
        return "none exported".to_owned();
    }
    let parts: Vec<String> = r
        .delta
        .ryw
        .iter()
        .map(|(k, v)| format!("{k} +{v}"))
        .collect();
    parts.join(", ")
}

/// Problems worth shouting about: violations are read-your-writes bugs.
pub fn alarms(results: &[ScenarioResult]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in results {
        if r.violations() > 0 {
            lines.push(format!(
                "READ-YOUR-WRITES VIOLATION: {} in {} mode: {} read(s) missed the row their client had just written",
                r.scenario.name(),
                r.mode,
                r.violations()
            ));
        }
        for c in r.clients.iter().filter(|c| c.error.is_some()) {
            let error = c.error.as_deref().unwrap_or_default();
            lines.push(format!(
                "{} / {} / {}: {error}",
                r.scenario.name(),
                r.mode,
                c.role
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ryw::clients::ClientRun;
    use crate::ryw::metrics::Delta;

    fn result(violations: u64) -> ScenarioResult {
        let mut delta = Delta {
            reads_on_replicas: 1,
            reads_on_primary: 3,
            ..Delta::default()
        };
        delta.ryw.insert(KEPT_ON_PRIMARY.into(), 3);
        ScenarioResult {
            mode: "causal".into(),
            scenario: Scenario::OwnWrites,
            delta,
            clients: vec![ClientRun {
                role: "probe",
                user: "postgres".into(),
                clients: 4,
                tps: Some(812.4),
                transactions: 4000,
                violations,
                errors: 0,
                exit_code: Some(0),
                error: None,
            }],
        }
    }

    #[test]
    fn a_row_per_mode_with_the_counters_under_it() {
        let text = tables(&[result(0)]);
        assert!(text.contains("| causal | 25.0% | 1 | 3 | 3 | 0 | 812 | - | 0 | 0 |\n"));
        assert!(text.contains("causal ryw counters: pgsplit_ryw_kept_on_primary_total +3"));
        assert!(!text.contains("ro-after-rw"));
        assert!(alarms(&[result(0)]).is_empty());
    }

    #[test]
    fn violations_are_loud() {
        assert!(tables(&[result(2)]).contains("| **2** |"));
        assert!(alarms(&[result(2)])[0].starts_with("READ-YOUR-WRITES VIOLATION: own-writes"));
    }
}
