//! The `/metrics` page in Prometheus text format, from the counters
//! sessions already keep (atomics, so serving a scrape costs the sessions
//! nothing). Served by `crate::http`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod pools;

use crate::lifecycle::State;
use crate::shared::Shared;
use crate::topology::Backend;

/// The metrics page.
pub fn render(s: &Arc<Shared>) -> String {
    let mut out = String::new();
    let per_backend =
        |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&Backend) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for b in s.topology.backends.iter() {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", b.name(), value(b));
            }
        };
    per_backend(
        &mut out,
        "pgsplit_requests_total",
        "counter",
        "Requests routed to the backend.",
        &|b| b.stats().routed,
    );
    per_backend(
        &mut out,
        "pgsplit_reads_total",
        "counter",
        "Requests routed to the backend as reads.",
        &|b| b.stats().reads,
    );
    per_backend(&mut out, "pgsplit_writes_total", "counter", "Requests routed to the backend because they write, lock, or run in a transaction or pinned session.", &|b| b.stats().writes);
    per_backend(
        &mut out,
        "pgsplit_active_sessions",
        "gauge",
        "Client sessions using a connection to the backend now.",
        &|b| b.stats().active,
    );
    per_backend(
        &mut out,
        "pgsplit_server_connections",
        "gauge",
        "Pooled server connections open to the backend.",
        &|b| s.pools.open_connections(b.id) as u64,
    );
    per_backend(
        &mut out,
        "pgsplit_wal_position_bytes",
        "gauge",
        "Replay position (replicas) or write position (primary); 0 when unknown.",
        &|b| b.node.lsn(),
    );
    let nodes: Vec<_> = s
        .topology
        .backends
        .iter()
        .map(|b| b.node.snapshot())
        .collect();
    per_backend(
        &mut out,
        "pgsplit_backend_up",
        "gauge",
        "1 when the backend answers health checks.",
        &|b| u64::from(nodes[b.id.index()].up),
    );
    per_backend(
        &mut out,
        "pgsplit_backend_detached",
        "gauge",
        "1 when an admin detached the backend (PGSPLIT DETACH).",
        &|b| u64::from(nodes[b.id.index()].detached),
    );
    per_backend(
        &mut out,
        "pgsplit_backend_primary",
        "gauge",
        "1 for the backend writes go to.",
        &|b| u64::from(nodes[b.id.index()].role == pgsplit_router::topology::Role::Primary),
    );
    per_backend(
        &mut out,
        "pgsplit_backend_fenced",
        "gauge",
        "1 when the backend claims to be primary but is fenced (split-brain guard).",
        &|b| u64::from(nodes[b.id.index()].role == pgsplit_router::topology::Role::StalePrimary),
    );
    per_backend(
        &mut out,
        "pgsplit_backend_lag_bytes",
        "gauge",
        "WAL bytes the standby has not replayed yet.",
        &|b| nodes[b.id.index()].lag.bytes,
    );
    let _ = writeln!(out, "# HELP pgsplit_backend_lag_seconds Age of the standby's last replayed transaction while it has WAL left to replay.\n# TYPE pgsplit_backend_lag_seconds gauge");
    for b in s.topology.backends.iter() {
        let _ = writeln!(
            out,
            "pgsplit_backend_lag_seconds{{backend=\"{}\"}} {:.3}",
            b.name(),
            nodes[b.id.index()].lag.millis as f64 / 1000.0
        );
    }
    per_backend(
        &mut out,
        "pgsplit_backend_status_changes_total",
        "counter",
        "Times the backend went up, down, detached or attached.",
        &|b| nodes[b.id.index()].state_changes,
    );
    for (name, help, value) in [
        (
            "pgsplit_ryw_replica_reads_total",
            "Reads load-balanced to a replica.",
            &s.ryw.replica_reads,
        ),
        (
            "pgsplit_ryw_kept_on_primary_total",
            "Reads sent to the primary because no replica had replayed the writes they must see.",
            &s.ryw.kept_on_primary,
        ),
        (
            "pgsplit_ryw_waits_total",
            "Reads that waited (routing.causal_wait) for a replica to catch up.",
            &s.ryw.waits,
        ),
        (
            "pgsplit_ryw_positions_read_total",
            "Commit positions read on the committing connection, for causal sessions whose reads follow their writes.",
            &s.ryw.positions_asked,
        ),
        (
            "pgsplit_ryw_replay_confirmed_total",
            "Reads sent to a replica after asking it for its replay position, which covered the session's writes.",
            &s.ryw.confirmed,
        ),
        (
            "pgsplit_ryw_replay_behind_total",
            "Replicas asked for their replay position before a read that had not replayed the session's writes yet.",
            &s.ryw.behind,
        ),
        (
            "pgsplit_primary_changes_total",
            "Times the primary changed, including to none while the primary is down.",
            &s.topology.control.primary_changes,
        ),
        (
            "pgsplit_promotions_total",
            "Standbys pgsplit promoted (auto_promote or PGSPLIT PROMOTE).",
            &s.topology.control.promotions,
        ),
    ] {
        let value = value.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(out, "# HELP pgsplit_pinned_sessions_total Sessions pinned to their server connection.\n# TYPE pgsplit_pinned_sessions_total counter");
    for (reason, i) in [
        ("unmovable_state", 0),
        ("unreplayable_setting", 1),
        ("unread_query", 2),
    ] {
        let _ = writeln!(
            out,
            "pgsplit_pinned_sessions_total{{reason=\"{reason}\"}} {}",
            s.pins[i].load(Ordering::Relaxed)
        );
    }
    let clients = s.admission.in_use();
    let _ = writeln!(out, "# HELP pgsplit_client_connections Client connections being served.\n# TYPE pgsplit_client_connections gauge\npgsplit_client_connections {clients}");
    let state = s.lifecycle.state();
    let _ = writeln!(out, "# HELP pgsplit_state 1 for what pgsplit is doing: running, paused (PGSPLIT PAUSE), draining (shutting down, transactions finishing) or closing (shutdown_timeout over).\n# TYPE pgsplit_state gauge");
    for s in [
        State::Running,
        State::Paused,
        State::Draining,
        State::Closing,
    ] {
        let _ = writeln!(
            out,
            "pgsplit_state{{state=\"{}\"}} {}",
            s.as_str(),
            u8::from(s == state)
        );
    }
    let buffered = s.buffers.used();
    let _ = writeln!(out, "# HELP pgsplit_client_buffer_bytes Bytes of large client messages being buffered, counted against limits.client_buffer_budget.\n# TYPE pgsplit_client_buffer_bytes gauge\npgsplit_client_buffer_bytes {buffered}");
    pools::render(s, &mut out);
    out
}
