//! Read/write routing against a real primary and two streaming replicas.
//! Every assertion reads, from inside the routed statement, which server ran
//! it (`inet_server_port()`), so a misrouted statement cannot pass.

mod balancing;
#[path = "../common/mod.rs"]
mod common;
mod node_local;
mod statements;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use pgsplit_config::Config;
use tokio_postgres::SimpleQueryMessage;

fn primary() -> u16 {
    cluster().port(0)
}

/// Creates a database with a table `items`, replicated to both replicas.
fn database_with_items(name: &str) -> String {
    let db = fresh_database(name);
    cluster()
        .psql(
            0,
            &db,
            "CREATE TABLE items (id int primary key, v text); \
             INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 10) g; \
             CREATE SEQUENCE seq;",
        )
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    db
}

fn config_with(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = routing_only();
    f(&mut c);
    c
}
