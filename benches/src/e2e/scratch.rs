//! The scratch directory holding the proxies' configs, logs and pgbench
//! output for one benchmark run.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::child::Owner;

/// A private directory for configs and logs, readable by the server owner
/// (the proxies run as that user), removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn create(owner: Option<Owner>) -> Result<Scratch, String> {
        let path = std::env::temp_dir().join(format!("pgsplit-e2e-{}", std::process::id()));
        Scratch::at(path, owner)
    }

    /// At a path of the caller's, emptied first: inside an output directory
    /// that the next run empties, a scratch left by a killed run (no
    /// destructor runs then) does not outlive that next run.
    pub fn at(path: PathBuf, owner: Option<Owner>) -> Result<Scratch, String> {
        let _ = fs::remove_dir_all(&path);
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        chown(&path, owner)?;
        Ok(Scratch(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chown(path: &Path, owner: Option<Owner>) -> Result<(), String> {
    match owner {
        Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
            .map_err(|e| format!("chown {}: {e}", path.display())),
        None => Ok(()),
    }
}

/// Mode 0600: these files hold passwords.
pub fn write(path: &Path, contents: &str, owner: Option<Owner>) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    chown(path, owner)
}
