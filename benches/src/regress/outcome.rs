//! pg_regress's own verdicts (result file against `expected/`), read from
//! its report (`regression.out`). PostgreSQL 15 prints one line per test:
//!
//! ```text
//! test tablespace                   ... ok          239 ms
//! parallel group (20 tests):  varchar char name ...
//!      boolean                      ... FAILED       42 ms
//!      int2                         ... ok           38 ms (test process exited with exit code 2)
//! ```
//!
//! (PostgreSQL 16 switched to TAP output; this runner is for 15.)

use serde::Serialize;

/// How one test's result file compared with its expected output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Failed,
    /// Failed, but listed as ignorable in the schedule.
    FailedIgnored,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestOutcome {
    pub test: String,
    pub verdict: Verdict,
    /// psql exited with an error or a signal (a crash, a lost connection).
    pub abnormal_exit: bool,
}

/// Every test line of a report, in order; other lines are skipped.
pub fn parse(report: &str) -> Vec<TestOutcome> {
    report.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TestOutcome> {
    let line = line.trim_start();
    let line = line.strip_prefix("test ").unwrap_or(line);
    let (name, rest) = line.split_once(" ... ")?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    // "failed (ignored)" before "FAILED": neither is a prefix of the other,
    // but the order keeps the intent readable.
    let verdict = if rest.starts_with("failed (ignored)") {
        Verdict::FailedIgnored
    } else if rest.starts_with("FAILED") {
        Verdict::Failed
    } else if rest.starts_with("ok") {
        Verdict::Ok
    } else {
        return None;
    };
    Some(TestOutcome {
        test: name.to_owned(),
        verdict,
        abnormal_exit: rest.contains("(test process "),
    })
}

/// Tests that did not pass against `expected/`.
pub fn failed(outcomes: &[TestOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.verdict != Verdict::Ok)
        .map(|o| o.test.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
============== dropping database \"regression\"         ==============
DROP DATABASE
============== running regression test queries        ==============
test tablespace                   ... ok          239 ms
parallel group (20 tests):  varchar char name boolean int2
     boolean                      ... FAILED       42 ms
     char                         ... ok           31 ms
     int2                         ... ok           38 ms (test process exited with exit code 2)
     random                       ... failed (ignored)       12 ms
test event_trigger                ... ok          101 ms

=======================
 2 of 5 tests failed.
=======================
";

    #[test]
    fn every_test_line_with_its_verdict() {
        let got = parse(REPORT);
        let names: Vec<&str> = got.iter().map(|o| o.test.as_str()).collect();
        assert_eq!(
            names,
            [
                "tablespace",
                "boolean",
                "char",
                "int2",
                "random",
                "event_trigger"
            ]
        );
        assert_eq!(got[1].verdict, Verdict::Failed);
        assert_eq!(got[4].verdict, Verdict::FailedIgnored);
        assert!(got[3].abnormal_exit && !got[2].abnormal_exit);
        assert_eq!(failed(&got), ["boolean", "random"]);
    }

    #[test]
    fn a_line_cut_short_by_a_kill_is_skipped() {
        // pg_regress killed at the deadline leaves "name ... " unfinished.
        assert!(parse("     boolean                      ... ").is_empty());
        assert!(parse("parallel group (2 tests):  a b").is_empty());
    }
}
