//! pg_regress's schedule file: which tests the suite has, in order.

/// Test names of a schedule, in file order. A `test:` line lists tests that
/// run together; `ignore:` (an old pg_regress directive) names a test that
/// is run anyway, so it adds none. Anything else but comments and blank
/// lines is an error, as it is for pg_regress.
pub fn parse(text: &str) -> Result<Vec<String>, String> {
    let mut tests = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("ignore:") {
            continue;
        }
        let Some(names) = line.strip_prefix("test:") else {
            return Err(format!(
                "schedule line {}: expected `test: <names>`, got {line:?}",
                number + 1
            ));
        };
        tests.extend(names.split_whitespace().map(str::to_owned));
    }
    if tests.is_empty() {
        return Err("the schedule lists no tests".into());
    }
    Ok(tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_in_file_order() {
        let text = "# comment\n\ntest: tablespace\n\
                    # ----------\n\
                    test: boolean char  name\tvarchar\n\
                    ignore: random\n\
                    test: random\n";
        assert_eq!(
            parse(text).unwrap(),
            ["tablespace", "boolean", "char", "name", "varchar", "random"]
        );
    }

    #[test]
    fn unknown_lines_and_empty_schedules_are_errors() {
        let err = parse("test: a\nfoo: b\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse("# nothing\n").is_err());
    }
}
