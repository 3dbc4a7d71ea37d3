//! The Debian packages building the suite's modules needs, installed with apt.
//!
//! Everything is pinned to the version of the installed server: the suite's
//! expected output belongs to one release, and `apt-get install` of a
//! development package without a version would pull the newest one and,
//! through its dependencies, upgrade the server and client under everyone's
//! feet. An install that would replace any installed package is refused
//! with the command to run by hand instead.

use std::path::Path;
use std::process::Command;

use super::run_tool;

/// The installed server's Debian package and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub major: u32,
    /// e.g. `postgresql-15`: the binary package, also the source package.
    pub package: String,
    /// e.g. `15.18-0+deb12u1`.
    pub version: String,
    /// Version of `postgresql-client-<major>`, which ships psql and
    /// pg_regress; `None` when not installed.
    pub client_version: Option<String>,
}

impl Installed {
    /// Finds the package of the server in `bindir`.
    pub fn probe(bindir: &Path) -> Result<Installed, String> {
        let banner = run_tool(
            Command::new(bindir.join("postgres")).arg("--version"),
            "postgres --version",
        )?;
        let major = major_version(&banner)
            .ok_or_else(|| format!("cannot read a major version in {banner:?}"))?;
        let package = format!("postgresql-{major}");
        let version = dpkg_version(&package).ok_or_else(|| {
            format!(
                "{} is not from a Debian package ({package} is not installed); \
                 this runner fetches the suite with apt",
                bindir.display()
            )
        })?;
        let client_version = dpkg_version(&format!("postgresql-client-{major}"));
        Ok(Installed {
            major,
            package,
            version,
            client_version,
        })
    }
}

/// `15` from `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub fn major_version(banner: &str) -> Option<u32> {
    let word = banner
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Installed version of `package`, `None` when it is not installed.
pub fn dpkg_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}|${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once('|')?;
    (out.status.success() && status.ends_with(" installed")).then(|| version.to_owned())
}

/// Installs what building the modules needs: a C compiler, `dpkg-source`,
/// and the server headers of exactly the server's version.
pub fn ensure_build_packages(server: &Installed) -> Result<(), String> {
    let dev = format!("postgresql-server-dev-{}", server.major);
    let mut wanted = Vec::new();
    let pinned = Some(server.version.as_str());
    if dpkg_version(&dev).as_deref() != pinned {
        wanted.push(format!("{dev}={}", server.version));
        // The headers package needs libpq-dev, from the same source: left
        // to apt, a newer one would upgrade libpq5 with it.
        if dpkg_version("libpq-dev").is_none() && dpkg_version("libpq5").as_deref() == pinned {
            wanted.push(format!("libpq-dev={}", server.version));
        }
    }
    for (program, package) in [("gcc", "gcc"), ("dpkg-source", "dpkg-dev")] {
        if !on_path(program) {
            wanted.push(package.to_owned());
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    install(&wanted)
}

fn install(packages: &[String]) -> Result<(), String> {
    let by_hand = format!("apt-get install {}", packages.join(" "));
    if !is_root() {
        return Err(format!("missing packages; run as root: {by_hand}"));
    }
    let mut simulate = apt_get();
    simulate
        .args(["install", "-s", "-y", "--no-install-recommends"])
        .args(packages);
    let plan = run_tool(&mut simulate, "apt-get install -s")?;
    let replaced = replaced_packages(&plan);
    if !replaced.is_empty() {
        return Err(format!(
            "`{by_hand}` would also replace installed packages ({}); not doing that \
             behind your back. Install matching versions yourself, then run again",
            replaced.join(", ")
        ));
    }
    eprintln!("installing {}...", packages.join(" "));
    let mut cmd = apt_get();
    cmd.args(["install", "-y", "--no-install-recommends"])
        .args(packages);
    run_tool(&mut cmd, "apt-get install").map(drop)
}

/// Packages an `apt-get -s` plan upgrades or downgrades: its `Inst` lines
/// show the installed version in brackets, `Inst libpq5 [15.18-0] (15.20-0 ...)`.
pub fn replaced_packages(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|rest| {
            let (name, tail) = rest.split_once(' ')?;
            let (old, tail) = tail.strip_prefix('[')?.split_once(']')?;
            let new = tail.trim().strip_prefix('(')?.split_whitespace().next()?;
            Some(format!("{name} {old} -> {new}"))
        })
        .collect()
}

pub(super) fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    // Waits for another apt instead of failing on its lock at once.
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-o", "DPkg::Lock::Timeout=120"]);
    cmd
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_from_banners() {
        let debian = "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)";
        assert_eq!(major_version(debian), Some(15));
        assert_eq!(major_version("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(major_version("postgres"), None);
    }

    #[test]
    fn a_plan_that_upgrades_the_client_is_caught() {
        let plan = "NOTE: This is only a simulation!\n\
            Inst libpq5 [15.18-0+deb12u1] (15.20-0+deb12u1 Debian-Security:12/stable-security [amd64])\n\
            Inst postgresql-server-dev-15 (15.18-0+deb12u1 Debian:12.10/stable [amd64])\n\
            Conf libpq5 (15.20-0+deb12u1 Debian-Security:12/stable-security [amd64])\n";
        assert_eq!(
            replaced_packages(plan),
            ["libpq5 15.18-0+deb12u1 -> 15.20-0+deb12u1"]
        );
    }
}
