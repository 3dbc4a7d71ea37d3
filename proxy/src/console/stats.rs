//! `SHOW STATS`, `SHOW STATS_TOTALS` and `SHOW STATS_AVERAGES`: each
//! pool target's counters in PgBouncer's columns.

use std::collections::BTreeMap;
use std::time::Duration;

use super::table::{v, Column, Table};
use super::target;
use crate::backend::pool::PoolTotals;
use crate::shared::Shared;

use Column::{Numeric, Text};

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
