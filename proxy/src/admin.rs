//! pgsplit's own views and commands (`SHOW pool_nodes`, `pool_status`,
//! `pool_pools` in pgpool-II's shape, `PGSPLIT ...`):
//! what they return, independent of how a session sends it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgsplit_protocol::encode::ErrorInfo;
use pgsplit_router::admin::AdminCommand;
use pgsplit_router::topology::{PgRole, Role};

use crate::shared::{LagLimit, Shared};
use crate::topology::BackendId;

/// pgpool-II's columns first, in its order, so scripts written for
/// `SHOW pool_nodes` keep working; pgsplit's own after them.
pub const POOL_NODES_COLUMNS: &[&str] = &[
    "node_id",
    "hostname",
    "port",
    "status",
    "pg_status",
    "lb_weight",
    "role",
    "pg_role",
    "select_cnt",
    "load_balance_node",
    "replication_delay",
    "replication_state",
    "replication_sync_state",
    "last_status_change",
    "timeline",
    "replay_lsn",
    "lag_bytes",
    "lag_seconds",
];

pub const POOL_VERSION_COLUMNS: &[&str] = &["pool_version"];

/// What one admin command returns.
pub enum Outcome {
    Rows {
        columns: &'static [&'static str],
        rows: Vec<Vec<Option<String>>>,
    },
    /// An action's CommandComplete tag, with a note for a NoticeResponse.
    Done {
        tag: &'static str,
        note: Option<String>,
    },
    Error(ErrorInfo),
}

/// The columns a command returns (empty: none), for Describe.
pub fn columns(cmd: &AdminCommand) -> &'static [&'static str] {
    match cmd {
        AdminCommand::ShowPoolNodes => POOL_NODES_COLUMNS,
        AdminCommand::ShowPoolVersion => POOL_VERSION_COLUMNS,
        AdminCommand::ShowPoolStatus => POOL_STATUS_COLUMNS,
        AdminCommand::ShowPoolPools => POOL_POOLS_COLUMNS,
        _ => &[],
    }
}

/// Runs `cmd` for a user who `is_admin` or not.
pub async fn run(shared: &Arc<Shared>, cmd: AdminCommand, is_admin: bool) -> Outcome {
    if cmd.needs_admin() && !is_admin {
        return Outcome::Error(crate::errors::admin_only(cmd.tag()));
    }
    let newest = shared.newest();
    let shared = &newest;
    let node = |name: &str| resolve(shared, name);
    match cmd {
        AdminCommand::ShowPoolNodes => Outcome::Rows {
            columns: POOL_NODES_COLUMNS,
            rows: pool_nodes(shared),
        },
        AdminCommand::ShowPoolVersion => Outcome::Rows {
            columns: POOL_VERSION_COLUMNS,
            rows: vec![vec![Some(format!("pgsplit {}", env!("CARGO_PKG_VERSION")))]],
        },
        AdminCommand::ShowPoolStatus => Outcome::Rows {
            columns: POOL_STATUS_COLUMNS,
            rows: pool_status(shared),
        },
        AdminCommand::ShowPoolPools => Outcome::Rows {
            columns: POOL_POOLS_COLUMNS,
            rows: pool_pools(shared),
        },
        AdminCommand::Detach(ref name) => match node(name) {
            Ok(i) => Outcome::Done {
                tag: cmd.tag(),
                note: crate::health::detach(&shared.topology, i),
            },
            Err(e) => Outcome::Error(e),
        },
        AdminCommand::Attach(ref name) => match node(name) {
            Ok(i) => Outcome::Done {
                tag: cmd.tag(),
                note: crate::health::attach(&shared.topology, i),
            },
            Err(e) => Outcome::Error(e),
        },
        AdminCommand::Accept(ref name) => match node(name) {
            Ok(i) => match crate::health::accept(&shared.topology, i) {
                Ok(note) => Outcome::Done {
                    tag: cmd.tag(),
                    note,
                },
                Err(e) => Outcome::Error(e),
            },
            Err(e) => Outcome::Error(e),
        },
        AdminCommand::Pause => match crate::pause::pause(shared).await {
            Ok(note) => Outcome::Done {
                tag: cmd.tag(),
                note: Some(note),
            },
            Err(e) => Outcome::Error(e),
        },
        AdminCommand::Resume => match crate::pause::resume(shared) {
            Ok(note) => Outcome::Done {
                tag: cmd.tag(),
                note,
            },
            Err(e) => Outcome::Error(e),
        },
        AdminCommand::Reload => match crate::reload::reload(&shared.core) {
            Ok(r) => {
                tracing::info!("RELOAD: {}", r.summary());
                Outcome::Done {
                    tag: cmd.tag(),
                    note: Some(r.summary()),
                }
            }
            Err(e) => Outcome::Error(crate::errors::not_reloaded(&e)),
        },
        AdminCommand::Shutdown => Outcome::Done {
            tag: cmd.tag(),
            note: Some(crate::pause::shutdown(shared)),
        },
        AdminCommand::Promote(ref name) => match node(name) {
            Ok(i) => match crate::health::promote(&shared.topology, i).await {
                Ok(note) => Outcome::Done {
                    tag: cmd.tag(),
                    note: Some(note),
                },
                Err(e) => Outcome::Error(e),
            },
            Err(e) => Outcome::Error(e),
        },
    }
}

/// A node by its configured name or its node_id.
fn resolve(shared: &Shared, name: &str) -> Result<BackendId, ErrorInfo> {
    let backends = &shared.topology.backends;
    backends
        .by_name(name)
        .or_else(|| {
            name.parse()
                .ok()
                .filter(|&i: &usize| i < backends.len())
                .map(BackendId::nth)
        })
        .ok_or_else(|| {
            let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
            crate::errors::no_such_backend(name, &names)
        })
}

fn pool_nodes(s: &Shared) -> Vec<Vec<Option<String>>> {
    let total_weight: u64 = s.config.backends.iter().map(|b| u64::from(b.weight)).sum();
    let limit = LagLimit::from_config(&s.config.health);
    let backends = &s.topology.backends;
    let any_standby_readable = backends.ids().any(|i| s.standby_readable(i, 0, limit));
    let primary = s.primary();
    backends
        .iter()
        .map(|backend| {
            let i = backend.id;
            let n = backend.node.snapshot();
            let b = &s.config.backends[i.index()];
            let standby = n.role == Role::Standby;
            let takes_reads = if Some(i) == primary {
                match s.config.routing.primary_reads {
                    pgsplit_config::PrimaryReads::On => true,
                    pgsplit_config::PrimaryReads::Fallback => !any_standby_readable,
                    pgsplit_config::PrimaryReads::Off => false,
                }
            } else {
                s.standby_readable(i, 0, limit)
            };
            let up = |on: bool| if on { "up" } else { "down" };
            let text = |v: &dyn ToString| Some(v.to_string());
            vec![
                text(&i),
                text(&b.host),
                text(&b.port),
                text(&up(n.up && !n.detached)),
                text(&up(n.up)),
                text(&format!(
                    "{:.6}",
                    f64::from(b.weight) / total_weight.max(1) as f64
                )),
                text(&n.role.as_str()),
                text(&match n.pg_role {
                    PgRole::Primary => "primary",
                    PgRole::Standby => "standby",
                    PgRole::Unknown => "unknown",
                }),
                text(&backend.stats.reads.load(Ordering::Relaxed)),
                text(&takes_reads),
                text(&if standby { n.lag.bytes } else { 0 }),
                text(&if standby {
                    n.replication_state.as_str()
                } else {
                    ""
                }),
                text(&""),
                text(
                    &humantime::format_rfc3339_seconds(n.last_status_change)
                        .to_string()
                        .replace('T', " ")
                        .trim_end_matches('Z'),
                ),
                text(&n.timeline),
                text(&format!("{:X}/{:X}", n.lsn >> 32, n.lsn & 0xffff_ffff)),
                text(&n.lag.bytes),
                text(&format!("{:.3}", n.lag.millis as f64 / 1000.0)),
            ]
        })
        .collect()
}

/// pgpool-II's `SHOW pool_status`: every setting.
pub const POOL_STATUS_COLUMNS: &[&str] = &["item", "value", "description"];

fn pool_status(s: &Shared) -> Vec<Vec<Option<String>>> {
    let defaults: std::collections::HashMap<String, String> = pgsplit_config::Config::default()
        .flat_settings()
        .into_iter()
        .collect();
    s.config
        .flat_settings()
        .into_iter()
        .map(|(key, value)| {
            let description = match defaults.get(&key) {
                Some(d) => format!("default: {d}"),
                None => "no default".to_owned(),
            };
            vec![Some(key), Some(value), Some(description)]
        })
        .collect()
}

/// pgpool-II's `SHOW pool_pools`, in its column order: here one row per
/// server connection, pgsplit's process standing for pgpool's child.
pub const POOL_POOLS_COLUMNS: &[&str] = &[
    "pool_pid",
    "start_time",
    "client_connection_count",
    "pool_id",
    "backend_id",
    "database",
    "username",
    "backend_connection_time",
    "client_connection_time",
    "client_disconnection_time",
    "client_idle_duration",
    "majorversion",
    "minorversion",
    "pool_counter",
    "pool_backendpid",
    "pool_connected",
    "status",
    "load_balance_node",
    "client_host",
    "client_port",
    "statement",
];

fn pool_pools(s: &Shared) -> Vec<Vec<Option<String>>> {
    // Pids are unique per server only.
    let idle: std::collections::HashSet<(BackendId, i32)> = s
        .pools
        .report()
        .into_iter()
        .flat_map(|p| p.idle_pids.into_iter().map(move |pid| (p.backend, pid)))
        .collect();
    let limit = LagLimit::from_config(&s.config.health);
    let pid = std::process::id().to_string();
    let stamp = |t: std::time::SystemTime| {
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_owned()
    };
    let mut rows = Vec::new();
    for b in s.topology.backends.iter() {
        let mut servers = b.addr.live.servers();
        servers.sort_by_key(|c| c.pid);
        let balanced = s.standby_readable(b.id, 0, limit);
        for (i, c) in servers.into_iter().enumerate() {
            let in_use = !idle.contains(&(b.id, c.pid));
            let text = |v: &dyn ToString| Some(v.to_string());
            rows.push(vec![
                text(&pid),
                text(&stamp(c.connected)),
                text(&0),
                text(&i),
                text(&b.id),
                text(&c.database),
                text(&c.user),
                text(&stamp(c.connected)),
                None,
                None,
                text(&0),
                text(&3),
                text(&0),
                text(&0),
                text(&c.pid),
                text(&u8::from(in_use)),
                text(&if in_use { "Execute command" } else { "Idle" }),
                text(&u8::from(balanced)),
                None,
                None,
                None,
            ]);
        }
    }
    rows
}
