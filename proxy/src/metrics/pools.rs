//! The metrics to alert on: failed logins, protocol errors, refusals,
//! retried reads and fenced writes (`crate::events`), each pool's use, and
//! how long checkouts waited for a server connection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::backend::pool::{PoolTotals, WAIT_BUCKETS};
use crate::shared::Shared;

pub(super) fn render(s: &Shared, out: &mut String) {
    events(s, out);
    pools(s, out);
    waits(s, out);
}

fn events(s: &Shared, out: &mut String) {
    let e = &s.events;
    for (name, help, value) in [
        ("pgsplit_auth_failures_total", "Logins refused for a wrong password, an unknown user or a role without a usable password.", &e.auth_failures),
        ("pgsplit_protocol_errors_total", "Client connections closed for breaking the protocol.", &e.protocol_errors),
        ("pgsplit_retried_reads_total", "Reads sent again to another server after theirs failed before any reply reached the client.", &e.retried_reads),
        ("pgsplit_fenced_writes_total", "Writes the server believed primary refused as read-only (it had been demoted); retried on the new primary when nothing had reached the client.", &e.fenced_writes),
    ] {
        let v = value.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let name = "pgsplit_refused_sessions_total";
    let _ = writeln!(
        out,
        "# HELP {name} Sessions pgsplit refused or ended itself, by reason.\n# TYPE {name} counter"
    );
    for (reason, v) in e.refusals() {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {v}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A pool's samples of one gauge: (the `state` label if any, value).
type PoolSamples = Vec<(Option<&'static str>, usize)>;

fn pools(s: &Shared, out: &mut String) {
    let reports = s.pools.report();
    let series =
        |out: &mut String,
         name: &str,
         help: &str,
         value: &dyn Fn(&crate::backend::pool::PoolReport) -> PoolSamples| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for p in &reports {
                let backend = s.topology.backends[p.backend].name();
                for (state, v) in value(p) {
                    let state = state
                        .map(|st| format!(",state=\"{st}\""))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{name}{{backend=\"{}\",database=\"{}\",user=\"{}\"{state}}} {v}",
                        label(backend),
                        label(&p.database),
                        label(&p.user)
                    );
                }
            }
        };
    series(
        out,
        "pgsplit_pool_connections",
        "Server connections of the pool, checked out (active) or idle.",
        &|p| {
            let active = p.status.open.saturating_sub(p.status.idle);
            vec![(Some("active"), active), (Some("idle"), p.status.idle)]
        },
    );
    series(
        out,
        "pgsplit_pool_size",
        "Most server connections the pool may open (pool.pool_size).",
        &|p| vec![(None, p.status.max)],
    );
    series(
        out,
        "pgsplit_pool_waiting_clients",
        "Sessions waiting for a connection of the pool now.",
        &|p| vec![(None, p.waiting)],
    );
}

/// Per backend: how long checkouts waited for a server connection. Most
/// find one idle and wait 0; only those that had to wait are timed.
fn waits(s: &Shared, out: &mut String) {
    let mut per_backend: BTreeMap<usize, PoolTotals> = BTreeMap::new();
    for p in s.pools.report() {
        per_backend
            .entry(p.backend.index())
            .or_default()
            .add(p.totals);
    }
    let name = "pgsplit_server_wait_seconds";
    let _ = writeln!(out, "# HELP {name} Time a request waited for a server connection of the backend (0 when one was idle).\n# TYPE {name} histogram");
    for (i, t) in per_backend {
        let backend = label(s.topology.backends[crate::topology::BackendId::nth(i)].name());
        let immediate = t.assignments.saturating_sub(t.waited);
        for (bound, waited) in WAIT_BUCKETS.iter().zip(t.waits) {
            let _ = writeln!(
                out,
                "{name}_bucket{{backend=\"{backend}\",le=\"{bound}\"}} {}",
                immediate + waited
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{backend=\"{backend}\",le=\"+Inf\"}} {}",
            t.assignments
        );
        let _ = writeln!(
            out,
            "{name}_sum{{backend=\"{backend}\"}} {}",
            t.waited_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "{name}_count{{backend=\"{backend}\"}} {}",
            t.assignments
        );
    }
}
