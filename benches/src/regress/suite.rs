//! The suite on disk: a cache that survives between runs (the unpacked
//! source and the built modules, per server version), and per invocation a
//! copy the `postgres` user can read.
//!
//! The cache lives in root's home by default, which the servers and
//! pg_regress (both `postgres`) cannot enter, hence the copy: a few MB of
//! SQL, expected output and data files, cheap next to a run.
//!
//! Every cache entry is made in a scratch directory and renamed into place
//! once complete, so a run killed half-way (a download, gcc) leaves nothing
//! that a later run would mistake for a finished entry.

use std::fs;
use std::path::{Path, PathBuf};

use super::apt::{self, Installed};
use super::{build, source};
use crate::e2e::child::Owner;

/// What `pg_regress` reads from `src/test/regress`.
const SUITE_FILES: [&str; 5] = ["sql", "expected", "data", "parallel_schedule", "resultmap"];

/// The suite of the installed server, complete in the cache.
#[derive(Debug)]
pub struct Suite {
    pub server: Installed,
    /// `src/test/regress` of the unpacked source.
    pub regress_dir: PathBuf,
    /// `regress.so`, `autoinc.so`, `refint.so`.
    pub lib_dir: PathBuf,
}

/// The copy one invocation runs from.
#[derive(Clone, Debug)]
pub struct Staged {
    /// pg_regress's `--inputdir`: sql/, expected/, data/, the schedule.
    pub input_dir: PathBuf,
    /// pg_regress's `--dlpath`.
    pub lib_dir: PathBuf,
}

/// `$XDG_CACHE_HOME/pgsplit-regress`, else `~/.cache/pgsplit-regress`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pgsplit-regress")
}

impl Suite {
    /// The suite for the server in `bindir`, fetched and built on first use.
    pub fn obtain(cache: &Path, bindir: &Path) -> Result<Suite, String> {
        let server = Installed::probe(bindir)?;
        fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        let key = format!("{}-{}", server.package, server.version);
        let tree = cache.join(format!("source-{key}"));
        let lib_dir = cache.join(format!("lib-{key}"));
        if !tree.is_dir() {
            apt::ensure_build_packages(&server)?;
            source::fetch_source(&server, &cache.join(".download"), &tree)?;
        }
        if !lib_dir.is_dir() {
            apt::ensure_build_packages(&server)?;
            let scratch = cache.join(".build");
            let _ = fs::remove_dir_all(&scratch);
            build::build_modules(bindir, &tree, &scratch)?;
            commit(&scratch, &lib_dir)?;
        }
        Ok(Suite {
            server,
            regress_dir: tree.join("src/test/regress"),
            lib_dir,
        })
    }

    /// Copies what the runs read into `dest` (emptied first), owned by
    /// `owner` so the servers and pg_regress can read it.
    pub fn stage(&self, dest: &Path, owner: Option<Owner>) -> Result<Staged, String> {
        let _ = fs::remove_dir_all(dest);
        let staged = Staged {
            input_dir: dest.join("regress"),
            lib_dir: dest.join("lib"),
        };
        for name in SUITE_FILES {
            copy_tree(
                &self.regress_dir.join(name),
                &staged.input_dir.join(name),
                owner,
            )?;
        }
        copy_tree(&self.lib_dir, &staged.lib_dir, owner)?;
        chown(dest, owner)?;
        Ok(staged)
    }
}

/// Moves a finished scratch directory into its final place.
fn commit(scratch: &Path, dest: &Path) -> Result<(), String> {
    fs::rename(scratch, dest)
        .map_err(|e| format!("moving {} to {}: {e}", scratch.display(), dest.display()))
}

/// Copies a file or a directory tree, owned by `owner`, modes kept (the
/// source's are 0644/0755, readable by everyone).
pub fn copy_tree(from: &Path, to: &Path, owner: Option<Owner>) -> Result<(), String> {
    let err = |e: std::io::Error| format!("copying {} to {}: {e}", from.display(), to.display());
    if from.is_dir() {
        fs::create_dir_all(to).map_err(err)?;
        for entry in fs::read_dir(from).map_err(err)? {
            let entry = entry.map_err(err)?;
            copy_tree(&entry.path(), &to.join(entry.file_name()), owner)?;
        }
    } else {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(err)?;
        }
        fs::copy(from, to).map_err(err)?;
    }
    chown(to, owner)
}

/// Makes `path` belong to `owner`; nothing to do when we are not root.
pub fn chown(path: &Path, owner: Option<Owner>) -> Result<(), String> {
    match owner {
        Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
            .map_err(|e| format!("chown {}: {e}", path.display())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_nested_trees_and_files() {
        let base =
            std::env::temp_dir().join(format!("pgsplit-regress-copy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("from/sql/deep")).unwrap();
        fs::write(base.join("from/sql/deep/a.sql"), "SELECT 1;\n").unwrap();
        fs::write(base.join("from/schedule"), "test: a\n").unwrap();
        copy_tree(&base.join("from"), &base.join("to"), None).unwrap();
        let copied = fs::read_to_string(base.join("to/sql/deep/a.sql")).unwrap();
        assert_eq!(copied, "SELECT 1;\n");
        assert!(base.join("to/schedule").is_file());
        fs::remove_dir_all(&base).unwrap();
    }
}
