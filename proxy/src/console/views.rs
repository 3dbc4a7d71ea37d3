//! PgBouncer's `SHOW` views, with its column names and types, built from
//! what pgsplit knows. A PgBouncer "database" is a pool's target: here a
//! database on one backend, named `database@backend`, so each replica's
//! share is a row of its own and exporters keyed by database never see
//! two rows with one name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::table::{v, Column, Table};
use super::target;
use crate::backend::pool::PoolReport;
use crate::lifecycle::State;
use crate::shared::Shared;
use crate::topology::BackendId;

use Column::{Int4, Int8, Text};

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
    // Pids are unique per server only.
    let idle: BTreeSet<(BackendId, i32)> = shared
        .pools
        .report()
        .into_iter()
        .flat_map(|p| p.idle_pids.into_iter().map(move |pid| (p.backend, pid)))
        .collect();
    for b in shared.topology.backends.iter() {
        let mut servers = b.addr.live.servers();
        servers.sort_by_key(|s| s.pid);
        for s in servers {
            let state = if idle.contains(&(b.id, s.pid)) {
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
            // An int4 column, as PgBouncer's.
            v(cfg.pool.server_lifetime.as_secs().min(i32::MAX as u64)),
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
        let changeable = if crate::reload::changeable(&key) {
            "yes"
        } else {
            "no"
        };
        t.push(vec![v(&key), v(value), default, v(changeable)]);
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
