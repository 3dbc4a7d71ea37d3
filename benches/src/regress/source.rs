//! The server's source package, fetched with `apt-get source` and
//! unpacked with `dpkg-source`, and the `deb-src` entries that needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::apt::{apt_get, is_root, Installed};
use super::run_tool;

/// Our `deb-src` entries, when the system has none (Debian images usually
/// ship binary entries only).
pub const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/pgsplit-deb-src.sources";

/// Downloads and unpacks the server's source package into `dest` (which
/// must not exist). Everything happens in `work`, emptied first and removed
/// after: dpkg-source also leaves a copy of the upstream tarball next to
/// the tree it unpacks, and the tree is renamed into `dest` only once whole.
pub fn fetch_source(server: &Installed, work: &Path, dest: &Path) -> Result<(), String> {
    ensure_deb_src()?;
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let spec = format!("{}={}", server.package, server.version);
    eprintln!("downloading the source of {spec}...");
    let download = || {
        let mut cmd = apt_get();
        cmd.args(["source", "--download-only", &spec])
            .current_dir(work);
        run_tool(&mut cmd, "apt-get source")
    };
    if download().is_err() {
        // Stale package lists are the usual cause; a second failure is real.
        run_tool(apt_get().arg("update"), "apt-get update")?;
        download().map_err(|e| {
            format!("{e}\n(the archive may no longer carry {spec}; upgrade the server to a version it has)")
        })?;
    }
    let dsc = find_dsc(work)?;
    let tree = work.join("tree");
    run_tool(
        Command::new("dpkg-source").arg("-x").arg(&dsc).arg(&tree),
        "dpkg-source -x",
    )?;
    fs::rename(&tree, dest)
        .map_err(|e| format!("moving {} to {}: {e}", tree.display(), dest.display()))?;
    let _ = fs::remove_dir_all(work);
    Ok(())
}

fn find_dsc(dir: &Path) -> Result<PathBuf, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "dsc"))
        .ok_or_else(|| format!("apt-get source left no .dsc in {}", dir.display()))
}

/// Adds Debian's `deb-src` entries (and refreshes the lists) when no
/// source entry is configured.
fn ensure_deb_src() -> Result<(), String> {
    if configured_sources().iter().any(|text| has_deb_src(text)) {
        return Ok(());
    }
    if !is_root() {
        return Err(
            "no deb-src entry in /etc/apt; add one (or run as root) for `apt-get source`".into(),
        );
    }
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os_field(&os, "VERSION_CODENAME")
        .filter(|_| os_field(&os, "ID").as_deref() == Some("debian"))
        .ok_or("not Debian: add deb-src entries for your distribution by hand")?;
    eprintln!("adding deb-src entries in {DEB_SRC_FILE}...");
    fs::write(DEB_SRC_FILE, deb_src_sources(&codename))
        .map_err(|e| format!("{DEB_SRC_FILE}: {e}"))?;
    run_tool(apt_get().arg("update"), "apt-get update").map(drop)
}

fn configured_sources() -> Vec<String> {
    let mut texts: Vec<String> = fs::read_to_string("/etc/apt/sources.list")
        .into_iter()
        .collect();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let files = dir.flatten().map(|e| e.path());
        let lists = files.filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"));
        texts.extend(lists.filter_map(|p| fs::read_to_string(p).ok()));
    }
    texts
}

/// Whether an apt sources file (one-line `.list` or deb822 `.sources`)
/// has an active source entry.
pub fn has_deb_src(text: &str) -> bool {
    text.lines().map(str::trim).any(|l| {
        l.starts_with("deb-src ")
            || l.strip_prefix("Types:")
                .is_some_and(|t| t.split_whitespace().any(|t| t == "deb-src"))
    })
}

/// deb822 source entries for Debian `codename`, main and security.
pub fn deb_src_sources(codename: &str) -> String {
    let keyring = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg";
    format!(
        "# Added by pgsplit's regression runner, for `apt-get source`.\n\
         Types: deb-src\nURIs: http://deb.debian.org/debian\n\
         Suites: {codename} {codename}-updates\nComponents: main\n{keyring}\n\n\
         Types: deb-src\nURIs: http://deb.debian.org/debian-security\n\
         Suites: {codename}-security\nComponents: main\n{keyring}\n"
    )
}

fn os_field(os_release: &str, key: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let value = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_entries_in_both_formats() {
        assert!(has_deb_src(
            "deb http://x y main\ndeb-src http://x y main\n"
        ));
        assert!(has_deb_src("Types: deb deb-src\nURIs: http://x\n"));
        assert!(!has_deb_src("Types: deb\n# deb-src http://x y main\n"));
        let ours = deb_src_sources("bookworm");
        assert!(has_deb_src(&ours));
        assert!(ours.contains("Suites: bookworm bookworm-updates\n"));
        assert!(ours.contains("Suites: bookworm-security\n"));
    }

    #[test]
    fn os_release_fields() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n";
        assert_eq!(os_field(os, "ID").as_deref(), Some("debian"));
        assert_eq!(
            os_field(os, "VERSION_CODENAME").as_deref(),
            Some("bookworm")
        );
        assert_eq!(os_field(os, "VERSION"), None);
    }
}
