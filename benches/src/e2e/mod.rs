//! End-to-end comparison of pgsplit with a direct connection and peer
//! proxies (PgBouncer, pgpool-II), driven by `pgbench` against a real local
//! primary with streaming replicas.
//!
//! The `e2e` binary orchestrates; this module holds the parts worth testing
//! on their own:
//! - [`measure`]: one pgbench run plus the proxy's CPU over it;
//! - [`pgbench`]: running pgbench with a deadline and parsing its summary;
//! - [`procstat`]: proxy CPU time from `/proc`;
//! - [`targets`] and [`configs`]: spawning proxies as children that die
//!   with us, and their configuration files;
//! - [`scratch`]: the private directory for configs and logs;
//! - [`report`]: medians, the markdown table and the JSON file.

pub mod child;
pub mod configs;
pub mod idle;
pub mod measure;
pub mod pgbench;
pub mod procstat;
pub mod report;
pub mod scratch;
pub mod targets;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

/// The workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// The pgsplit binary to measure: `given`, else the workspace's release
/// build, which must exist.
pub fn pgsplit_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let root = workspace_root();
    let binary = given.unwrap_or_else(|| root.join("target/release/pgsplit"));
    if !binary.is_file() {
        return Err(format!(
            "no pgsplit binary at {}; build it with `cargo build --release -p pgsplit` \
             in {} (or pass --pgsplit PATH)",
            binary.display(),
            root.display()
        ));
    }
    Ok(binary)
}

/// Writes `value` as pretty JSON, creating the directory.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// A pgbench built-in script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `pgbench -S`: one primary-key SELECT per transaction.
    SelectOnly,
    /// The default TPC-B-like script: three UPDATEs, a SELECT, an INSERT.
    TpcbLike,
}

/// pgbench's `-M`: how each statement travels on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One Query message per statement.
    Simple,
    /// Unnamed Parse/Bind/Execute/Sync for every statement.
    Extended,
    /// Named statements parsed once per connection, then Bind/Execute.
    Prepared,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::SelectOnly, Workload::TpcbLike];

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::SelectOnly => "select-only",
            Workload::TpcbLike => "tpcb-like",
        }
    }
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Simple, Mode::Extended, Mode::Prepared];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended",
            Mode::Prepared => "prepared",
        }
    }
}

fn parse_named<T: Copy>(all: &[T], name: &str, as_str: fn(T) -> &'static str) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|v| as_str(*v) == name)
        .ok_or_else(|| {
            let known: Vec<_> = all.iter().map(|v| as_str(*v)).collect();
            format!(
                "unknown value {name:?}; expected one of {}",
                known.join(", ")
            )
        })
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(&Workload::ALL, s, Workload::as_str)
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(&Mode::ALL, s, Mode::as_str)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One benchmark configuration; every target is measured on every cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub workload: Workload,
    pub mode: Mode,
    pub clients: u32,
}

impl Cell {
    /// Every combination, workload-major, in the order given.
    pub fn grid(workloads: &[Workload], modes: &[Mode], clients: &[u32]) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &workload in workloads {
            for &mode in modes {
                for &clients in clients {
                    cells.push(Cell {
                        workload,
                        mode,
                        clients,
                    });
                }
            }
        }
        cells
    }

    /// pgbench worker threads: one per core at most, since pgbench, the
    /// proxy and the servers share this machine's two cores.
    pub fn threads(&self) -> u32 {
        self.clients.clamp(1, 2)
    }
}

/// Median of the finite values, `None` when there are none; the mean of
/// the two middle values for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.as_str().parse::<Workload>(), Ok(w));
        }
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        assert!("select"
            .parse::<Workload>()
            .unwrap_err()
            .contains("select-only"));
    }

    #[test]
    fn threads_capped_at_two() {
        let cell = |clients| Cell {
            workload: Workload::SelectOnly,
            mode: Mode::Simple,
            clients,
        };
        assert_eq!(cell(1).threads(), 1);
        assert_eq!(cell(16).threads(), 2);
    }
}
