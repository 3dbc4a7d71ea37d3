//! Parsing and running console commands: PgBouncer's `SHOW ...`, `PAUSE`,
//! `RESUME`, `SHUTDOWN`, `RELOAD`, and pgsplit's own (`SHOW pool_nodes`,
//! `PGSPLIT ...`).

use std::sync::Arc;

use pgsplit_protocol::encode::ErrorInfo;
use pgsplit_router::admin::parse_admin;

use super::table::{Reply, Table};
use super::{stats, views};
use crate::shared::Shared;

/// The views `SHOW` knows, for the error that lists them.
const VIEWS: &[&str] = &[
    "POOLS",
    "STATS",
    "STATS_TOTALS",
    "STATS_AVERAGES",
    "CLIENTS",
    "SERVERS",
    "DATABASES",
    "USERS",
    "CONFIG",
    "LISTS",
    "VERSION",
    "STATE",
    "pool_nodes",
    "pool_version",
];

pub async fn run(shared: &Arc<Shared>, sql: &str, is_admin: bool) -> Reply {
    let newest = shared.newest();
    let shared = &newest;
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        [] => Reply::Empty,
        ["SHOW", view] => match show(shared, view) {
            Some(table) => Reply::Rows(table),
            None => pgsplit_command(shared, text, is_admin).await,
        },
        ["PAUSE"] => action(shared, "PAUSE", is_admin).await,
        ["RESUME"] => action(shared, "RESUME", is_admin).await,
        ["SHUTDOWN"] | ["SHUTDOWN", "WAIT_FOR_SERVERS"] => {
            action(shared, "SHUTDOWN", is_admin).await
        }
        ["RELOAD"] => action(shared, "RELOAD", is_admin).await,
        ["PAUSE" | "RESUME" | "SUSPEND" | "KILL" | "DISABLE" | "ENABLE" | "RECONNECT" | "WAIT_CLOSE", ..]
        | ["SHUTDOWN", _] => Reply::Error(
            ErrorInfo::error(
                "0A000",
                format!("pgsplit admin console: {text} is not supported"),
            )
            .hint("PAUSE, RESUME and SHUTDOWN act on every database at once; SUSPEND, KILL, DISABLE, ENABLE, RECONNECT and WAIT_CLOSE are not available."),
        ),
        _ => pgsplit_command(shared, text, is_admin).await,
    }
}

/// PgBouncer's views by name (any case).
fn show(shared: &Shared, view: &str) -> Option<Table> {
    Some(match view {
        "POOLS" => views::pools(shared),
        "STATS" => stats::stats(shared),
        "STATS_TOTALS" => stats::stats_totals(shared),
        "STATS_AVERAGES" => stats::stats_averages(shared),
        "CLIENTS" => views::clients(shared),
        "SERVERS" => views::servers(shared),
        "DATABASES" => views::databases(shared),
        "USERS" => views::users(shared),
        "CONFIG" => views::config(shared),
        "LISTS" => views::lists(shared),
        "VERSION" => views::version(),
        "STATE" => views::state(shared),
        _ => return None,
    })
}

/// PAUSE, RESUME and SHUTDOWN, as `PGSPLIT PAUSE` and the others run them.
async fn action(shared: &Arc<Shared>, verb: &'static str, is_admin: bool) -> Reply {
    let command = match verb {
        "PAUSE" => pgsplit_router::admin::AdminCommand::Pause,
        "RESUME" => pgsplit_router::admin::AdminCommand::Resume,
        "RELOAD" => pgsplit_router::admin::AdminCommand::Reload,
        _ => pgsplit_router::admin::AdminCommand::Shutdown,
    };
    match crate::admin::run(shared, command, is_admin).await {
        crate::admin::Outcome::Done { note, .. } => Reply::Done(verb, note),
        crate::admin::Outcome::Error(e) => Reply::Error(e),
        crate::admin::Outcome::Rows { .. } => unreachable!("actions return no rows"),
    }
}

/// pgsplit's own commands work here too.
async fn pgsplit_command(shared: &Arc<Shared>, text: &str, is_admin: bool) -> Reply {
    match parse_admin(text) {
        Some(Ok(cmd)) => match crate::admin::run(shared, cmd, is_admin).await {
            crate::admin::Outcome::Rows { columns, rows } => {
                let mut table = Table::new(
                    &columns
                        .iter()
                        .map(|c| (*c, super::Column::Text))
                        .collect::<Vec<_>>(),
                );
                table.rows = rows;
                Reply::Rows(table)
            }
            crate::admin::Outcome::Done { tag, note } => Reply::Done(tag, note),
            crate::admin::Outcome::Error(e) => Reply::Error(e),
        },
        Some(Err(message)) => Reply::Error(ErrorInfo::error("42601", message)),
        None => Reply::Error(
            ErrorInfo::error(
                "42601",
                format!("pgsplit admin console: invalid command {text:?}"),
            )
            .hint(format!(
                "This is pgsplit's admin console, not a database: try SHOW {}, PAUSE, RESUME or SHUTDOWN.",
                VIEWS.join(" | ")
            )),
        ),
    }
}
