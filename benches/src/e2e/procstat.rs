//! CPU time consumed by a proxy, read from `/proc/<pid>/stat`.
//!
//! A proxy's cost that matters in production is CPU per query, not TPS on
//! an idle machine: PgDog's users found ~8× PgBouncer's CPU per query only
//! after deploying it. So every proxy run is bracketed by two readings of
//! the proxy's process tree and the difference is divided by the number of
//! transactions pgbench completed.

use std::fs;

/// One process's fields from `/proc/<pid>/stat` that we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// utime + stime + cutime + cstime, in clock ticks. The two `c` fields
    /// hold the time of children this process has already reaped, so a
    /// pgpool child that exits mid-run is not lost from the tree's total;
    /// live children are counted separately, hence no double counting.
    pub ticks: u64,
}

/// Parses one `/proc/<pid>/stat` line. `comm` (field 2) is in parentheses
/// and may itself contain spaces and `)`, so fields are counted from the
/// *last* `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    // After the `)` come fields 3 (state), 4 (ppid), ... so field N is at
    // index N - 3.
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    let ppid = field(4)? as i32;
    let ticks = [field(14)?, field(15)?, field(16)?, field(17)?]
        .iter()
        .map(|&t| t.max(0) as u64)
        .sum();
    Some(ProcStat { pid, ppid, ticks })
}

/// Clock ticks per second (`USER_HZ`), the unit of the stat times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Sums the ticks of `root` and all its descendants in `procs`.
pub fn tree_ticks(procs: &[ProcStat], root: i32) -> u64 {
    let mut total = 0;
    let mut frontier = vec![root];
    let mut seen = Vec::new();
    while let Some(pid) = frontier.pop() {
        if seen.contains(&pid) {
            continue;
        }
        seen.push(pid);
        if let Some(p) = procs.iter().find(|p| p.pid == pid) {
            total += p.ticks;
        }
        frontier.extend(procs.iter().filter(|p| p.ppid == pid).map(|p| p.pid));
    }
    total
}

/// CPU ticks used so far by `pid` (all threads) and, when `with_children`,
/// by every live descendant. Multi-process proxies (pgpool) need the tree;
/// for single-process ones the walk over `/proc` is skipped.
pub fn cpu_ticks(pid: i32, with_children: bool) -> Option<u64> {
    if with_children {
        let procs = all_processes();
        procs
            .iter()
            .any(|p| p.pid == pid)
            .then(|| tree_ticks(&procs, pid))
    } else {
        read_stat(pid).map(|p| p.ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from the benchmark's own pgbouncer (Linux 6.18, 2 threads).
    const PGBOUNCER: &str = "3419 (pgbouncer) S 3322 3419 21809 0 -1 4194560 606 0 1 0 \
        18 30 0 0 20 0 2 0 124787 22028288 2137 18446744073709551615 94413635702784 \
        94413635916425 140723135901424 0 0 0 4096 0 18947 0 0 0 17 0 0 0 0 0 0 \
        94413636086800 94413636099576 94414196285440 140723135907460 140723135907516 \
        140723135907516 140723135909860 0";

    #[test]
    fn parses_times_and_ppid() {
        let p = parse_stat(PGBOUNCER).unwrap();
        assert_eq!(p.pid, 3419);
        assert_eq!(p.ppid, 3322);
        assert_eq!(p.ticks, 18 + 30);
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        let line = "77 (pgpool: wait (for) conn) S 76 77 76 0 -1 0 0 0 0 0 10 20 0 0 20 0";
        let p = parse_stat(line).unwrap();
        assert_eq!((p.pid, p.ppid, p.ticks), (77, 76, 30));
    }

    #[test]
    fn rejects_truncated_lines() {
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn sums_descendants_only() {
        let p = |pid, ppid, ticks| ProcStat { pid, ppid, ticks };
        let procs = [p(10, 1, 5), p(11, 10, 7), p(12, 11, 1), p(13, 1, 100)];
        assert_eq!(tree_ticks(&procs, 10), 13);
        assert_eq!(tree_ticks(&procs, 11), 8);
        assert_eq!(tree_ticks(&procs, 99), 0);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        assert!(cpu_ticks(me, false).is_some());
        assert!(cpu_ticks(me, true).is_some());
        assert!(ticks_per_second() > 0);
    }
}
