//! Locating the PostgreSQL server binaries.
//!
//! Debian splits client and server: `pg_config --bindir` may answer
//! `/usr/bin`, which has `psql` but no `initdb`, while the server lives in
//! `/usr/lib/postgresql/<major>/bin`. So every candidate is checked for the
//! full set of tools before it is accepted.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ClusterError;

/// Tools the harness runs; a directory missing any of them is useless.
const REQUIRED: [&str; 5] = ["initdb", "pg_ctl", "postgres", "pg_basebackup", "psql"];

/// Oldest major version whose `pg_basebackup -R` writes the
/// `postgresql.auto.conf`/`standby.signal` layout the harness relies on.
const MIN_MAJOR: u32 = 13;

/// Environment variable that overrides the search.
const BINDIR_ENV: &str = "PGSPLIT_PG_BINDIR";

/// Finds a directory holding PostgreSQL 13+ server binaries.
///
/// Order: `$PGSPLIT_PG_BINDIR`, `pg_config --bindir`, the highest
/// `/usr/lib/postgresql/<major>/bin` (Debian), the highest
/// `/usr/pgsql-<major>/bin` (RHEL), `/usr/local/pgsql/bin`, then `$PATH`.
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    let mut rejected = Vec::new();
    for dir in candidates() {
        match check(&dir) {
            Ok(()) => return Ok(dir),
            Err(why) => rejected.push(format!("{}: {why}", dir.display())),
        }
    }
    let detail = if rejected.is_empty() {
        "no candidate directories".to_owned()
    } else {
        format!("tried {}", rejected.join("; "))
    };
    Err(ClusterError::NoBinaries(detail))
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        // An explicit override is the only candidate: silently falling back
        // would hide a typo.
        return vec![PathBuf::from(dir)];
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !dir.is_empty() {
            dirs.push(PathBuf::from(dir));
        }
    }
    dirs.extend(versioned(Path::new("/usr/lib/postgresql"), "", "bin"));
    dirs.extend(versioned(Path::new("/usr"), "pgsql-", "bin"));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// `<parent>/<prefix><major>/<sub>` for every numeric major, highest first.
fn versioned(parent: &Path, prefix: &str, sub: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let major = name.strip_prefix(prefix)?.parse::<u32>().ok()?;
            Some((major, e.path().join(sub)))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().map(|(_, dir)| dir).collect()
}

fn check(dir: &Path) -> Result<(), String> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|tool| !dir.join(tool).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join(", ")));
    }
    // `postgres --version` is answered before the refuse-to-run-as-root
    // check, so this works for any user.
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run postgres --version: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_major(&text) {
        Some(major) if major >= MIN_MAJOR => Ok(()),
        Some(major) => Err(format!("PostgreSQL {major} is older than {MIN_MAJOR}")),
        None => Err(format!("unrecognised version {:?}", text.trim())),
    }
}

/// Major version from `postgres (PostgreSQL) 15.6 (Debian 15.6-0+deb12u1)`.
fn parse_major(version: &str) -> Option<u32> {
    let rest = version.split("PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_major;

    #[test]
    fn parses_release_and_development_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.6 (Debian 15.6-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }
}
