//! What a conformance run reports: the printed lines and the JSON file.
//!
//! Which tests differ through a pool is not fixed: it depends on which
//! server connection each request lands on (a `currval` on a connection
//! that never ran the `nextval`) and on timing (a read on a replica that
//! has not replayed yet). With several rounds, a mode's line names every
//! test that differed in any round, with how often.

use serde::Serialize;

use super::compare::Difference;
use super::Mode;

/// One pg_regress run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// `direct`, `transaction`, `session-2`, `direct-again`...
    pub name: String,
    /// pg_regress exited normally (0 or 1) before the deadline.
    pub complete: bool,
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// Tests whose result differed from `expected/` (pg_regress's verdict).
    pub failed_vs_expected: Vec<String>,
    /// Tests whose psql exited with an error or a signal.
    pub abnormal_exits: Vec<String>,
}

/// One round of a mode: its run and how it differed from the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct RoundSummary {
    pub run: RunSummary,
    pub differ: Vec<Difference>,
}

/// A test that differed in at least one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub test: String,
    /// In how many rounds.
    pub rounds: usize,
    /// From the first round it differed in.
    pub first_change: Option<String>,
}

/// Every round of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct ModeSummary {
    pub mode: Mode,
    pub label: &'static str,
    pub differ: Vec<Tally>,
    pub rounds: Vec<RoundSummary>,
}

/// The JSON file.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// `postgres --version` of the servers.
    pub postgres: String,
    /// Debian version of the server package the suite was fetched for.
    pub suite_version: String,
    /// `pg_regress --version` (the client package: psql comes with it).
    pub pg_regress: String,
    pub pgsplit_binary: Option<String>,
    pub tests: usize,
    pub output_dir: String,
    pub finished_at_unix: u64,
    pub total_seconds: f64,
    pub direct: &'a RunSummary,
    pub modes: &'a [ModeSummary],
    pub problems: &'a [String],
}

/// The tests that differed in any round, in schedule order.
pub fn tally(tests: &[String], rounds: &[RoundSummary]) -> Vec<Tally> {
    tests
        .iter()
        .filter_map(|test| {
            let hits: Vec<&Difference> = rounds
                .iter()
                .filter_map(|r| r.differ.iter().find(|d| &d.test == test))
                .collect();
            let first = hits.first()?;
            Some(Tally {
                test: test.clone(),
                rounds: hits.len(),
                first_change: first.first_change.clone(),
            })
        })
        .collect()
}

/// `transaction pooling: 3 of 217 differ: date, sequence, stats`; over
/// several rounds, `... differ in 1 or more of 3 rounds: date (3/3), ...`.
pub fn differ_line(m: &ModeSummary, total: usize) -> String {
    let rounds = m.rounds.len();
    let names: Vec<String> = m
        .differ
        .iter()
        .map(|t| match rounds {
            1 => t.test.clone(),
            _ => format!("{} ({}/{rounds})", t.test, t.rounds),
        })
        .collect();
    let mut line = format!("{}: {} of {total} differ", m.label, names.len());
    if rounds > 1 {
        line.push_str(&format!(" in 1 or more of {rounds} rounds"));
    }
    if !names.is_empty() {
        line.push_str(": ");
        line.push_str(&names.join(", "));
    }
    for (i, round) in m.rounds.iter().enumerate() {
        if let Some(note) = incomplete_note(&round.run) {
            line.push_str(&format!(" [round {}{note}]", i + 1));
        }
    }
    line
}

/// `direct: 0 of 217 differ from expected/`, the baseline's own standing.
pub fn expected_line(run: &RunSummary, total: usize) -> String {
    let failed = &run.failed_vs_expected;
    let mut line = format!(
        "{}: {} of {total} differ from expected/",
        run.name,
        failed.len()
    );
    if !failed.is_empty() {
        line.push_str(": ");
        line.push_str(&failed.join(", "));
    }
    line
}

/// Said of a run that did not finish: its missing tests count as
/// differing, so the reader must know why.
pub fn incomplete_note(run: &RunSummary) -> Option<String> {
    if run.complete {
        return None;
    }
    Some(match run.exit_code {
        Some(code) => format!(": pg_regress exited with {code}, see its log"),
        None => format!(": killed after {:.0}s, results are partial", run.seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regress::compare::Change;

    fn difference(test: &str) -> Difference {
        Difference {
            test: test.into(),
            change: Change::Output,
            first_change: Some(format!("-{test}")),
            diff_file: format!("/out/diffs/transaction/{test}.diff"),
        }
    }

    fn run(failed: &[&str], complete: bool, exit_code: Option<i32>) -> RunSummary {
        RunSummary {
            name: "direct".into(),
            complete,
            exit_code,
            seconds: 61.4,
            failed_vs_expected: failed.iter().map(|s| s.to_string()).collect(),
            abnormal_exits: Vec::new(),
        }
    }

    fn mode(rounds: Vec<RoundSummary>) -> ModeSummary {
        let tests = ["date", "guc", "sequence"].map(String::from);
        ModeSummary {
            mode: Mode::Transaction,
            label: "transaction pooling",
            differ: tally(&tests, &rounds),
            rounds,
        }
    }

    fn round(differ: &[&str]) -> RoundSummary {
        RoundSummary {
            run: run(&[], true, Some(1)),
            differ: differ.iter().map(|t| difference(t)).collect(),
        }
    }

    #[test]
    fn one_round_prints_the_names() {
        let m = mode(vec![round(&["sequence", "date"])]);
        assert_eq!(
            differ_line(&m, 217),
            "transaction pooling: 2 of 217 differ: date, sequence"
        );
        let clean = mode(vec![round(&[])]);
        assert_eq!(
            differ_line(&clean, 217),
            "transaction pooling: 0 of 217 differ"
        );
    }

    #[test]
    fn several_rounds_count_each_test() {
        let m = mode(vec![round(&["date"]), round(&["date", "sequence"])]);
        assert_eq!(m.differ[1].first_change.as_deref(), Some("-sequence"));
        assert_eq!(
            differ_line(&m, 217),
            "transaction pooling: 2 of 217 differ in 1 or more of 2 rounds: \
             date (2/2), sequence (1/2)"
        );
    }

    #[test]
    fn the_baseline_against_expected() {
        assert_eq!(
            expected_line(&run(&["copy"], true, Some(1)), 217),
            "direct: 1 of 217 differ from expected/: copy"
        );
        assert_eq!(
            expected_line(&run(&[], true, Some(0)), 217),
            "direct: 0 of 217 differ from expected/"
        );
    }

    #[test]
    fn an_unfinished_run_says_why() {
        assert_eq!(incomplete_note(&run(&[], true, Some(1))), None);
        let mut killed = round(&[]);
        killed.run = run(&[], false, None);
        assert!(differ_line(&mode(vec![killed]), 217)
            .ends_with("[round 1: killed after 61s, results are partial]"));
        assert!(incomplete_note(&run(&[], false, Some(2)))
            .unwrap()
            .contains("exited with 2"));
    }
}
