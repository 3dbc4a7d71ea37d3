//! pgsplit's Prometheus page, fetched with a plain HTTP/1.0 GET (one
//! request per scenario does not need an HTTP client library), and what
//! changed between two scrapes.
//!
//! Series are looked up by name and a missing one reads as 0, so a counter
//! renamed or added in pgsplit costs a zero here, not a failed run; every
//! `pgsplit_ryw_*` series is reported as found, so new ones show up
//! without a change here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

/// Prefix of the read-your-writes counters, all reported.
pub const RYW_PREFIX: &str = "pgsplit_ryw_";
pub const KEPT_ON_PRIMARY: &str = "pgsplit_ryw_kept_on_primary_total";
pub const WAITS: &str = "pgsplit_ryw_waits_total";

/// One scrape: every sample, keyed by its series as printed
/// (`name{labels}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot(BTreeMap<String, f64>);

/// `GET /metrics` on `addr`.
pub fn scrape(addr: SocketAddr) -> Result<Snapshot, String> {
    let fail = |e: std::io::Error| format!("metrics at {addr}: {e}");
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(fail)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("metrics at {addr}: no HTTP header in the reply"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        return Err(format!("metrics at {addr}: {status}"));
    }
    Ok(Snapshot::parse(body))
}

impl Snapshot {
    /// Prometheus text format: `series value` lines, comments skipped.
    pub fn parse(text: &str) -> Snapshot {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(char::is_whitespace)?;
                Some((series.trim().to_owned(), value.parse().ok()?))
            });
        Snapshot(samples.collect())
    }

    /// The sample of `series`, 0 when absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The samples of `name`, by their `backend` label.
    pub fn by_backend(&self, name: &str) -> BTreeMap<String, f64> {
        let labelled = |(series, v): (&String, &f64)| {
            let labels = series.strip_prefix(name)?.strip_prefix('{')?;
            let backend = labels.split_once("backend=\"")?.1.split_once('"')?.0;
            Some((backend.to_owned(), *v))
        };
        self.0.iter().filter_map(labelled).collect()
    }

    /// Every series whose name starts with `prefix`, labels included.
    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .keys()
            .filter(move |k| k.starts_with(prefix))
            .map(String::as_str)
    }

    /// The backends writes go to: `pgsplit_backend_primary` 1, else (the
    /// gauge gone) the one the config names `primary`.
    fn primaries(&self) -> Vec<String> {
        let flagged: Vec<String> = self
            .by_backend("pgsplit_backend_primary")
            .into_iter()
            .filter(|(_, v)| *v == 1.0)
            .map(|(b, _)| b)
            .collect();
        match flagged.is_empty() {
            true => vec!["primary".to_owned()],
            false => flagged,
        }
    }

    /// pgsplit has found its primary and both replicas answer with a WAL
    /// position, so reads can be balanced: measuring earlier would count
    /// reads sent to the primary only because the replicas were unknown.
    pub fn ready(&self, backends: usize) -> bool {
        let flagged = self.by_backend("pgsplit_backend_primary");
        let up = self.by_backend("pgsplit_backend_up");
        let positions = self.by_backend("pgsplit_wal_position_bytes");
        flagged.values().filter(|v| **v == 1.0).count() == 1
            && up.len() == backends
            && up.values().all(|v| *v == 1.0)
            && positions.values().all(|v| *v > 0.0)
    }
}

/// What pgsplit routed between two scrapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Delta {
    pub reads_on_replicas: u64,
    pub reads_on_primary: u64,
    pub writes: u64,
    /// Every `pgsplit_ryw_*` series found in either scrape.
    pub ryw: BTreeMap<String, u64>,
}

impl Delta {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Delta {
        let grew = |series: &str| (after.get(series) - before.get(series)).max(0.0) as u64;
        let primaries = after.primaries();
        let mut delta = Delta::default();
        for backend in after.by_backend("pgsplit_reads_total").keys() {
            let reads = grew(&format!("pgsplit_reads_total{{backend=\"{backend}\"}}"));
            match primaries.contains(backend) {
                true => delta.reads_on_primary += reads,
                false => delta.reads_on_replicas += reads,
            }
        }
        let writes = after.by_backend("pgsplit_writes_total");
        delta.writes = writes
            .keys()
            .map(|b| grew(&format!("pgsplit_writes_total{{backend=\"{b}\"}}")))
            .sum();
        for series in before
            .with_prefix(RYW_PREFIX)
            .chain(after.with_prefix(RYW_PREFIX))
        {
            delta.ryw.insert(series.to_owned(), grew(series));
        }
        delta
    }

    /// The replicas' share of all reads, in percent; `None` without reads.
    pub fn replica_share(&self) -> Option<f64> {
        let total = self.reads_on_replicas + self.reads_on_primary;
        (total > 0).then(|| 100.0 * self.reads_on_replicas as f64 / total as f64)
    }

    /// A read-your-writes counter, 0 when pgsplit does not export it.
    pub fn ryw(&self, series: &str) -> u64 {
        self.ryw.get(series).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(reads: [u64; 3], kept: u64, extra: &str) -> Snapshot {
        Snapshot::parse(&format!(
            "# HELP pgsplit_reads_total Requests.\n# TYPE pgsplit_reads_total counter\n\
             pgsplit_reads_total{{backend=\"primary\"}} {}\n\
             pgsplit_reads_total{{backend=\"replica1\"}} {}\n\
             pgsplit_reads_total{{backend=\"replica2\"}} {}\n\
             pgsplit_writes_total{{backend=\"primary\"}} 7\n\
             pgsplit_backend_primary{{backend=\"primary\"}} 0\n\
             pgsplit_backend_primary{{backend=\"replica1\"}} 1\n\
             pgsplit_backend_primary{{backend=\"replica2\"}} 0\n\
             pgsplit_ryw_kept_on_primary_total {kept}\n{extra}",
            reads[0], reads[1], reads[2]
        ))
    }

    #[test]
    fn reads_split_by_the_primary_gauge_not_the_name() {
        let before = page([1, 10, 100], 5, "");
        let after = page([2, 30, 400], 9, "pgsplit_ryw_new_total 3\n");
        let d = Delta::between(&before, &after);
        // replica1 is flagged as the primary (a failover happened).
        assert_eq!((d.reads_on_primary, d.reads_on_replicas), (20, 301));
        assert_eq!(d.writes, 0);
        assert_eq!(d.ryw(KEPT_ON_PRIMARY), 4);
        // A series that appeared counts from 0; a missing one reads 0.
        assert_eq!(d.ryw("pgsplit_ryw_new_total"), 3);
        assert_eq!(d.ryw(WAITS), 0);
        assert!((d.replica_share().unwrap() - 100.0 * 301.0 / 321.0).abs() < 1e-9);
    }

    #[test]
    fn without_the_gauge_the_backend_named_primary_is_it() {
        let bare =
            |n| Snapshot::parse(&format!("pgsplit_reads_total{{backend=\"primary\"}} {n}\n"));
        let d = Delta::between(&bare(1), &bare(4));
        assert_eq!((d.reads_on_primary, d.reads_on_replicas), (3, 0));
        assert_eq!(Delta::default().replica_share(), None);
    }

    #[test]
    fn ready_once_one_primary_and_every_backend_is_up() {
        let gauges = |primary: [u8; 3], up: [u8; 3]| {
            let mut s = String::new();
            for (i, b) in ["primary", "replica1", "replica2"].iter().enumerate() {
                s += &format!(
                    "pgsplit_backend_primary{{backend=\"{b}\"}} {}\n",
                    primary[i]
                );
                s += &format!("pgsplit_backend_up{{backend=\"{b}\"}} {}\n", up[i]);
                s += &format!("pgsplit_wal_position_bytes{{backend=\"{b}\"}} 99\n");
            }
            Snapshot::parse(&s)
        };
        assert!(gauges([1, 0, 0], [1, 1, 1]).ready(3));
        assert!(!gauges([0, 0, 0], [1, 1, 1]).ready(3));
        assert!(!gauges([1, 0, 0], [1, 0, 1]).ready(3));
        assert!(!gauges([1, 0, 0], [1, 1, 1]).ready(4));
    }
}
