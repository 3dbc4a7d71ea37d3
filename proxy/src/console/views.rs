//! PgBouncer's `SHOW` views, with its column names and types, built from
//! what pgsplit knows. A PgBouncer "database" is a pool's target: here a
//! database on one backend, named `database@backend`, so each replica's
//! share is a row of its own and exporters keyed by database never see
//! two rows with one name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::table::{v, Column, Table};
use crate::backend::pool::{PoolReport, PoolTotals};
use crate::lifecycle::State;
use crate::shared::Shared;
use crate::topology::BackendId;

use Column::{Int4, Int8, Numeric, Text};

/// How the console names the pool target for `database` on `backend`.
fn target(shared: &Shared, backend: BackendId, database: &str) -> String {
    format!("{database}@{}", shared.topology.backends[backend].name())
}

fn pool_mode(shared: &Shared) -> &'static str {
    match shared.config.pool.mode {
        pgsplit_config::PoolMode::Session => "session",
        pgsplit_config::PoolMode::Transaction => "transaction",
    }
}

pub fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("backend", Text),
        ("pool_size", Int4),
    ]);
    for p in shared.pools.report() {
        let in_use = p.status.open.saturating_sub(p.status.idle);
        t.push(vec![
            v(target(shared, p.backend, &p.database)),
            v(&p.user),
            // A session holds a server connection exactly while linked.
            v(in_use),
            v(p.waiting),
            v(0),
            v(0),
            v(in_use),
            v(0),
            v(0),
            v(p.status.idle),
            v(0),
            v(0),
            v(0),
            v(p.max_wait.as_secs()),
            v(p.max_wait.subsec_micros()),
            v(pool_mode(shared)),
            None,
            v(shared.topology.backends[p.backend].name()),
            v(p.status.max),
        ]);
    }
    t
}

/// Totals per pool target (over its users), and the last period's.
fn per_target(shared: &Shared) -> BTreeMap<String, (PoolTotals, PoolTotals)> {
    let (last, _) = shared.pools.last_period();
    let mut out: BTreeMap<String, (PoolTotals, PoolTotals)> = BTreeMap::new();
    for p in shared.pools.report() {
        let entry = out
            .entry(target(shared, p.backend, &p.database))
            .or_default();
        entry.0.add(p.totals);
        let key = (p.backend, p.database.clone(), p.user.clone());
        entry.1.add(last.get(&key).copied().unwrap_or_default());
    }
    out
}

/// The counters PgBouncer reports, in its order: (name, total, per
/// second of the last period). Parse, bind and login counts are not
/// kept by pgsplit and read 0; query time is not timed apart from the
/// transaction and reads 0.
fn counters(
    total: &PoolTotals,
    last: &PoolTotals,
    period: Duration,
) -> [(&'static str, u64, u64); 12] {
    let secs = period.as_secs().max(1);
    let per_s = |n: u64| n / secs;
    // PgBouncer's averages of times are per transaction (or query), not
    // per second.
    let per = |n: u64, d: u64| n.checked_div(d).unwrap_or(0);
    [
        (
            "server_assignment_count",
            total.assignments,
            per_s(last.assignments),
        ),
        ("xact_count", total.xacts, per_s(last.xacts)),
        ("query_count", total.queries, per_s(last.queries)),
        ("received", total.sent, per_s(last.sent)),
        ("sent", total.received, per_s(last.received)),
        (
            "xact_time",
            total.assigned_us,
            per(last.assigned_us, last.xacts),
        ),
        ("query_time", 0, 0),
        (
            "wait_time",
            total.wait_us,
            per(last.wait_us, last.assignments),
        ),
        ("client_parse_count", 0, 0),
        ("server_parse_count", 0, 0),
        ("bind_count", 0, 0),
        ("client_login_count", 0, 0),
    ]
}

pub fn stats(shared: &Shared) -> Table {
    let (_, period) = shared.pools.last_period();
    let mut columns: Vec<(&'static str, Column)> = vec![("database", Text)];
    let names = counters(&PoolTotals::default(), &PoolTotals::default(), period).map(|c| c.0);
    let totals: Vec<&'static str> = names.iter().map(|n| total_name(n)).collect();
    let avgs: Vec<&'static str> = names.iter().map(|n| avg_name(n)).collect();
    columns.extend(totals.iter().map(|n| (*n, Numeric)));
    columns.extend(avgs.iter().map(|n| (*n, Numeric)));
    // PgBouncer 1.7's name for the query count, which older exporters read.
    columns.push(("total_requests", Numeric));
    let mut t = Table::new(&columns);
    for (name, (total, last)) in per_target(shared) {
        let c = counters(&total, &last, period);
        let mut row = vec![v(name)];
        row.extend(c.iter().map(|x| v(x.1)));
        row.extend(c.iter().map(|x| v(x.2)));
        row.push(v(total.queries));
        t.push(row);
    }
    t
}

fn total_name(n: &str) -> &'static str {
    match n {
        "server_assignment_count" => "total_server_assignment_count",
        "xact_count" => "total_xact_count",
        "query_count" => "total_query_count",
        "received" => "total_received",
        "sent" => "total_sent",
        "xact_time" => "total_xact_time",
        "query_time" => "total_query_time",
        "wait_time" => "total_wait_time",
        "client_parse_count" => "total_client_parse_count",
        "server_parse_count" => "total_server_parse_count",
        "bind_count" => "total_bind_count",
        _ => "total_client_login_count",
    }
}

fn avg_name(n: &str) -> &'static str {
    match n {
        "server_assignment_count" => "avg_server_assignment_count",
        "xact_count" => "avg_xact_count",
        "query_count" => "avg_query_count",
        "received" => "avg_recv",
        "sent" => "avg_sent",
        "xact_time" => "avg_xact_time",
        "query_time" => "avg_query_time",
        "wait_time" => "avg_wait_time",
        "client_parse_count" => "avg_client_parse_count",
        "server_parse_count" => "avg_server_parse_count",
        "bind_count" => "avg_bind_count",
        _ => "avg_client_login_count",
    }
}

/// `SHOW STATS_TOTALS` and `SHOW STATS_AVERAGES` name their columns
/// without the prefix.
fn short_columns(prefix: &str) -> Vec<(&'static str, Column)> {
    let mut columns = vec![("database", Text)];
    for (name, _, _) in counters(
        &PoolTotals::default(),
        &PoolTotals::default(),
        Duration::ZERO,
    ) {
        let short = match name {
            "received" => "bytes_received",
            "sent" => "bytes_sent",
            n if prefix == "avg" && n.ends_with("parse_count") => {
                if n.starts_with("client") {
                    "avg_client_parse_count"
                } else {
                    "avg_server_parse_count"
                }
            }
            "bind_count" if prefix == "avg" => "avg_bind_count",
            "client_login_count" if prefix == "avg" => "avg_client_login_count",
            n => n,
        };
        columns.push((short, Numeric));
    }
    columns
}

pub fn stats_totals(shared: &Shared) -> Table {
    let mut t = Table::new(&short_columns("total"));
    for (name, (total, last)) in per_target(shared) {
        let mut row = vec![v(name)];
        row.extend(
            counters(&total, &last, Duration::ZERO)
                .iter()
                .map(|x| v(x.1)),
        );
        t.push(row);
    }
    t
}

pub fn stats_averages(shared: &Shared) -> Table {
    let (_, period) = shared.pools.last_period();
    let mut t = Table::new(&short_columns("avg"));
    for (name, (total, last)) in per_target(shared) {
        let mut row = vec![v(name)];
        row.extend(counters(&total, &last, period).iter().map(|x| v(x.2)));
        t.push(row);
    }
    t
}

const SOCKET_COLUMNS: [(&str, Column); 21] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int4),
    ("local_addr", Text),
    ("local_port", Int4),
    ("connect_time", Text),
    ("request_time", Text),
    ("wait", Int4),
    ("wait_us", Int4),
    ("close_needed", Int4),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int4),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int4),
    ("id", Int8),
];

fn time(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| {
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .replace('T', " ")
            .replace('Z', " UTC")
    })
}

pub fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&SOCKET_COLUMNS);
    let mut clients = shared.lifecycle.clients();
    clients.sort_by_key(|c| c.pid);
    for c in clients {
        let (addr, port) = c.addr.map_or((None, None), |a| (v(a.ip()), v(a.port())));
        let (laddr, lport) = c.local.map_or((None, None), |a| (v(a.ip()), v(a.port())));
        t.push(vec![
            v("C"),
            v(&c.user),
            v(&c.database),
            v("none"),
            v("active"),
            addr,
            port,
            laddr,
            lport,
            time(c.connected),
            time(c.connected),
            v(0),
            v(0),
            v(0),
            None,
            None,
            v(c.pid),
            v(if c.tls { "TLS" } else { "" }),
            v(&c.application_name),
            v(0),
            v(c.pid),
        ]);
    }
    t
}

pub fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&SOCKET_COLUMNS);
    let idle: BTreeSet<i32> = shared
        .pools
        .report()
        .into_iter()
        .flat_map(|p| p.idle_pids)
        .collect();
    for b in shared.topology.backends.iter() {
        let mut servers = b.addr.live.servers();
        servers.sort_by_key(|s| s.pid);
        for s in servers {
            let state = if idle.contains(&s.pid) {
                "idle"
            } else {
                "active"
            };
            let (laddr, lport) = s.local.map_or((None, None), |a| (v(a.ip()), v(a.port())));
            t.push(vec![
                v("S"),
                v(&s.user),
                v(target(shared, b.id, &s.database)),
                v("none"),
                v(state),
                v(s.remote.ip()),
                v(s.remote.port()),
                laddr,
                lport,
                time(Some(s.connected)),
                time(Some(s.connected)),
                v(0),
                v(0),
                v(0),
                None,
                None,
                v(s.pid),
                v(if s.tls { "TLS" } else { "" }),
                v(""),
                v(0),
                v(s.pid),
            ]);
        }
    }
    t
}

pub fn databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
        // PgBouncer 1.7's name for reserve_pool_size, which older
        // exporters read.
        ("reserve_pool", Int4),
    ]);
    let mut open: BTreeMap<(BackendId, String), usize> = BTreeMap::new();
    for p in shared.pools.report() {
        *open.entry((p.backend, p.database)).or_default() += p.status.open;
    }
    let mut clients: BTreeMap<String, usize> = BTreeMap::new();
    for c in shared.lifecycle.clients() {
        *clients.entry(c.database.clone()).or_default() += 1;
    }
    let cfg = &shared.config;
    let paused = u8::from(shared.lifecycle.state() == State::Paused);
    for ((backend, database), current) in open {
        let b = &cfg.backends[backend.index()];
        t.push(vec![
            v(target(shared, backend, &database)),
            v(&b.host),
            v(b.port),
            v(&database),
            None,
            v(cfg.pool.pool_size),
            v(cfg.pool.min_idle),
            v(0),
            v(cfg.pool.server_lifetime.as_secs()),
            v(pool_mode(shared)),
            None,
            v(0),
            v(current),
            v(0),
            v(clients.get(&database).copied().unwrap_or(0)),
            v(paused),
            v(u8::from(
                shared.topology.backends[backend].node.is_detached(),
            )),
            v(0),
        ]);
    }
    t
}

pub fn users(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int4),
        ("current_connections", Int4),
        ("max_user_client_connections", Int4),
        ("current_client_connections", Int4),
    ]);
    let reports: Vec<PoolReport> = shared.pools.report();
    let clients = shared.lifecycle.clients();
    for u in &shared.config.users {
        let servers: usize = reports
            .iter()
            .filter(|p| p.user == u.server_user())
            .map(|p| p.status.open)
            .sum();
        let connected = clients.iter().filter(|c| c.user == u.name).count();
        t.push(vec![
            v(&u.name),
            None,
            None,
            None,
            v(0),
            v(servers),
            v(0),
            v(connected),
        ]);
    }
    t
}

pub fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    let defaults: BTreeMap<String, String> = pgsplit_config::Config::default()
        .flat_settings()
        .into_iter()
        .collect();
    for (key, value) in shared.config.flat_settings() {
        let default = defaults.get(&key).cloned();
        // Nothing changes while running until reload exists.
        t.push(vec![v(&key), v(value), default, v("no")]);
    }
    t
}

pub fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", Text), ("items", Int4)]);
    let reports = shared.pools.report();
    let targets: BTreeSet<(BackendId, &str)> = reports
        .iter()
        .map(|p| (p.backend, p.database.as_str()))
        .collect();
    let idle: usize = reports.iter().map(|p| p.status.idle).sum();
    let open: usize = reports.iter().map(|p| p.status.open).sum();
    for (list, items) in [
        ("databases", targets.len()),
        ("users", shared.config.users.len()),
        ("peers", 0),
        ("pools", reports.len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", shared.lifecycle.sessions()),
        ("login_clients", 0),
        ("free_servers", idle),
        ("used_servers", open - idle.min(open)),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.push(vec![v(list), v(items)]);
    }
    t
}

pub fn version() -> Table {
    let mut t = Table::new(&[("version", Text)]);
    t.push(vec![v(format!(
        "pgsplit {} (PgBouncer-compatible admin console)",
        env!("CARGO_PKG_VERSION")
    ))]);
    t
}

pub fn state(shared: &Shared) -> Table {
    let mut t = Table::new(&[("key", Text), ("value", Text)]);
    let s = shared.lifecycle.state();
    let yes = |on: bool| if on { "yes" } else { "no" };
    for (key, on) in [
        ("active", s == State::Running),
        ("paused", s == State::Paused),
        ("suspended", false),
        ("shutting_down", s.is_stopping()),
    ] {
        t.push(vec![v(key), v(yes(on))]);
    }
    t
}
