//! Which tests' result files differ between two runs, and their diffs.
//!
//! A result file (`results/<test>.out`) is everything psql printed for the
//! test's script: statements, rows, notices, errors. Byte equality is the
//! test, as for pg_regress, but against the direct run's file rather than
//! `expected/`. The diffs are written with `diff -u` (which pg_regress
//! itself needs, so it is installed) and labelled by run, not by path.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// How a test's output differs from the baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Both runs wrote a result file and the files differ.
    Output,
    /// Only the baseline has one: the run was killed, or the test never started.
    MissingInRun,
    /// Only the compared run has one.
    MissingInBase,
    /// Neither has one.
    MissingInBoth,
}

/// A differing test, with where its diff is and the first line that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub test: String,
    pub change: Change,
    /// `-removed` / `+added`: the first changed lines, for a quick reason.
    pub first_change: Option<String>,
    pub diff_file: String,
}

/// Compares two result files (`None`: absent).
pub fn classify(base: Option<&[u8]>, run: Option<&[u8]>) -> Option<Change> {
    match (base, run) {
        (Some(a), Some(b)) if a == b => None,
        (Some(_), Some(_)) => Some(Change::Output),
        (Some(_), None) => Some(Change::MissingInRun),
        (None, Some(_)) => Some(Change::MissingInBase),
        (None, None) => Some(Change::MissingInBoth),
    }
}

/// The tests of `tests` whose `results/<test>.out` differ between the two
/// run directories, in schedule order.
pub fn differing(tests: &[String], base_dir: &Path, run_dir: &Path) -> Vec<(String, Change)> {
    let read = |dir: &Path, test: &str| fs::read(result_file(dir, test)).ok();
    tests
        .iter()
        .filter_map(|t| {
            let change = classify(read(base_dir, t).as_deref(), read(run_dir, t).as_deref())?;
            Some((t.clone(), change))
        })
        .collect()
}

fn result_file(run_dir: &Path, test: &str) -> std::path::PathBuf {
    run_dir.join("results").join(format!("{test}.out"))
}

/// Writes `<diff_dir>/<test>.diff` for every differing test. `labels` name
/// the two runs in the diff headers (`direct`, `transaction`).
pub fn write_diffs(
    found: &[(String, Change)],
    dirs: (&Path, &Path),
    labels: (&str, &str),
    diff_dir: &Path,
) -> Result<Vec<Difference>, String> {
    fs::create_dir_all(diff_dir).map_err(|e| format!("{}: {e}", diff_dir.display()))?;
    let mut out = Vec::new();
    for (test, change) in found {
        let text = match change {
            Change::Output => unified_diff(test, dirs, labels)?,
            other => format!("no result file to compare: {other:?}\n"),
        };
        let path = diff_dir.join(format!("{test}.diff"));
        fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push(Difference {
            test: test.clone(),
            change: *change,
            first_change: first_change(&text),
            diff_file: path.display().to_string(),
        });
    }
    Ok(out)
}

fn unified_diff(test: &str, dirs: (&Path, &Path), labels: (&str, &str)) -> Result<String, String> {
    let label = |run: &str| format!("{run}/results/{test}.out");
    let out = Command::new("diff")
        .arg("-u")
        .args(["--label", &label(labels.0), "--label", &label(labels.1)])
        .arg(result_file(dirs.0, test))
        .arg(result_file(dirs.1, test))
        .output()
        .map_err(|e| format!("cannot run diff: {e}"))?;
    // diff exits 1 when the files differ, 2 on trouble.
    match out.status.code() {
        Some(0 | 1) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => Err(format!(
            "diff of {test} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The first removed and the first added line of a unified diff (either
/// may be missing), e.g. `-1999-01-08 / +01-08-1999`.
pub fn first_change(diff: &str) -> Option<String> {
    let mut lines = diff.lines().skip_while(|l| !l.starts_with("@@"));
    lines.next()?; // the first hunk's header
    let mut removed = None;
    let mut added = None;
    for line in lines.take_while(|l| !l.starts_with("@@")) {
        if line.starts_with('-') && removed.is_none() {
            removed = Some(line);
        } else if line.starts_with('+') && added.is_none() {
            added = Some(line);
        } else if line.starts_with(' ') && (removed.is_some() || added.is_some()) {
            break;
        }
    }
    let parts: Vec<&str> = [removed, added].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join(" / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_files_do_not_differ_and_absence_is_named() {
        assert_eq!(classify(Some(b"a"), Some(b"a")), None);
        assert_eq!(classify(Some(b"a"), Some(b"b")), Some(Change::Output));
        assert_eq!(classify(Some(b"a"), None), Some(Change::MissingInRun));
        assert_eq!(classify(None, Some(b"a")), Some(Change::MissingInBase));
        assert_eq!(classify(None, None), Some(Change::MissingInBoth));
    }

    #[test]
    fn first_change_of_a_hunk() {
        let diff = "--- direct/results/date.out\n+++ transaction/results/date.out\n\
                    @@ -10,7 +10,7 @@\n SELECT d FROM t;\n-    d\n+ 01-08-1999\n \n-(1 row)\n";
        assert_eq!(first_change(diff).as_deref(), Some("-    d / + 01-08-1999"));
        let only_added = "@@ -1,2 +1,3 @@\n a\n+ERROR:  currval of sequence\n b\n";
        assert_eq!(
            first_change(only_added).as_deref(),
            Some("+ERROR:  currval of sequence")
        );
        assert_eq!(first_change("no result file to compare\n"), None);
    }

    #[test]
    fn diffs_are_written_per_test_with_run_labels() {
        let base = std::env::temp_dir().join(format!("pgsplit-regress-cmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        for (run, text) in [("direct", "a\nb\n"), ("session", "a\nc\n")] {
            fs::create_dir_all(base.join(run).join("results")).unwrap();
            fs::write(base.join(run).join("results/t1.out"), text).unwrap();
            fs::write(base.join(run).join("results/t2.out"), "same\n").unwrap();
        }
        let tests = ["t1", "t2", "t3"].map(String::from);
        let (d, s) = (base.join("direct"), base.join("session"));
        let found = differing(&tests, &d, &s);
        assert_eq!(
            found,
            [
                ("t1".into(), Change::Output),
                ("t3".into(), Change::MissingInBoth)
            ]
        );
        let written =
            write_diffs(&found, (&d, &s), ("direct", "session"), &base.join("diffs")).unwrap();
        let diff = fs::read_to_string(&written[0].diff_file).unwrap();
        assert!(
            diff.starts_with("--- direct/results/t1.out\n+++ session/results/t1.out\n"),
            "{diff}"
        );
        assert_eq!(written[0].first_change.as_deref(), Some("-b / +c"));
        fs::remove_dir_all(&base).unwrap();
    }
}
