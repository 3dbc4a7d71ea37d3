//! Logins with credentials looked up in PostgreSQL (`[auth_query]`): no
//! password in pgsplit's config, the client's own proof reused for the
//! servers, and the servers see the client's role.

use std::sync::OnceLock;
use std::time::Duration;

use pgsplit_config::{AuthMethod, AuthQuery, Config, Secret, User};

use super::*;

const APP: &str = "aq_app";
const APP_PASSWORD: &str = "aq-app-pw";
/// Runs the SECURITY DEFINER lookup function and nothing else.
const LOOKUP: &str = "aq_lookup";
const LOOKUP_PASSWORD: &str = "aq-lookup-pw";
const LOOKUP_QUERY: &str = "SELECT usename, passwd FROM pgsplit_auth.lookup($1)";

/// The roles and the lookup function, made once per test binary, with
/// every replica caught up.
fn roles() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let c = cluster();
        let sql = format!(
            "CREATE ROLE {APP} LOGIN PASSWORD '{APP_PASSWORD}';
             CREATE ROLE aq_change LOGIN PASSWORD 'first';
             CREATE ROLE aq_nologin NOLOGIN PASSWORD 'nologin';
             CREATE ROLE aq_expired LOGIN PASSWORD 'expired' VALID UNTIL '2000-01-01';
             CREATE ROLE {LOOKUP} LOGIN PASSWORD '{LOOKUP_PASSWORD}';
             CREATE SCHEMA pgsplit_auth;
             CREATE FUNCTION pgsplit_auth.lookup(role text)
               RETURNS TABLE (usename name, passwd text)
               LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
               AS $$ SELECT usename, passwd FROM pg_shadow
                      WHERE usename = role AND (valuntil IS NULL OR valuntil > now()) $$;
             REVOKE ALL ON FUNCTION pgsplit_auth.lookup(text) FROM PUBLIC;
             GRANT USAGE ON SCHEMA pgsplit_auth TO {LOOKUP};
             GRANT EXECUTE ON FUNCTION pgsplit_auth.lookup(text) TO {LOOKUP};"
        );
        c.psql(0, "postgres", &sql).expect("create the roles");
        c.wait_for_replay(Duration::from_secs(30)).unwrap();
    });
}

/// The shared config with TLS for clients, lookups as the superuser, and
/// `extra` users.
fn lookup_config(extra: Vec<User>) -> Config {
    roles();
    let mut config = routing_only();
    let c = certs();
    config.tls.client_cert_file = Some(c.cert.clone());
    config.tls.client_key_file = Some(c.key.clone());
    config.auth_query = AuthQuery {
        user: Some("postgres".into()),
        password: Some(Secret::new(PASSWORD)),
        ..AuthQuery::default()
    };
    config.users.extend(extra);
    config
}

fn passwordless(name: &str, auth: AuthMethod) -> User {
    User {
        name: name.into(),
        password: None,
        auth,
        ..User::default()
    }
}

/// A database `user` may write to, with table `t (who text)`.
fn writable_database(name: &str, user: &str) -> String {
    let db = fresh_database(name);
    let sql = format!("CREATE TABLE t (who text); GRANT ALL ON t TO {user}");
    cluster().psql(0, &db, &sql).unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    db
}

fn as_user(proxy: &pgsplit::ProxyHandle, db: &str, user: &str, password: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname={db} user={user} password={password}",
        proxy.local_addr().port()
    )
}

/// `(current_user, session_user, port)` of a read and of a write.
async fn roles_seen(client: &tokio_postgres::Client) -> [(String, String, u16); 2] {
    let read = row(
        client,
        "SELECT current_user, session_user, inet_server_port()",
    )
    .await;
    let write = row(
        client,
        "INSERT INTO t VALUES (current_user) RETURNING who, session_user, inet_server_port()",
    )
    .await;
    [read, write].map(|r| (r[0].clone(), r[1].clone(), r[2].parse().unwrap()))
}

#[track_caller]
fn assert_served_as(seen: &[(String, String, u16); 2], role: &str) {
    for (current, session, _) in seen {
        assert_eq!(
            (current.as_str(), session.as_str()),
            (role, role),
            "{seen:?}"
        );
    }
    assert_replica(seen[0].2, "the read");
    assert_primary(seen[1].2, "the write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_password_logs_in_with_the_one_postgresql_holds() {
    let config = lookup_config(vec![passwordless(APP, AuthMethod::ScramSha256)]);
    assert!(config.user(APP).unwrap().password.is_none());
    let proxy = start_proxy_with(config).await;
    let db = writable_database("aq_named", APP);

    let client = connect_as(&proxy, APP, APP_PASSWORD, &db).await.unwrap();
    assert_served_as(&roles_seen(&client).await, APP);

    // Over TLS with channel binding: SCRAM-SHA-256-PLUS, and its proof
    // still logs in to the servers.
    let bound = format!(
        "{} {} channel_binding=require",
        as_user(&proxy, &db, APP, APP_PASSWORD),
        verify_full(&certs().ca)
    );
    let (ok, out) = psql(&bound, "SELECT current_user, inet_server_port()");
    assert!(ok, "{out}");
    let (user, port) = out.trim().split_once('|').unwrap();
    assert_eq!(user, APP);
    assert_replica(port.parse().unwrap(), "a read after a bound login");

    // A wrong password, and a role with no entry and no wildcard.
    let e = connect_as(&proxy, APP, "wrong", &db).await.err().unwrap();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let e = connect_as(&proxy, "aq_change", "first", &db)
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // The right one still works after those (nothing was cached wrongly).
    let again = connect_as(&proxy, APP, APP_PASSWORD, &db).await.unwrap();
    assert_eq!(scalar(&again, "SELECT current_user").await, APP);
    proxy.shutdown().await;
}

/// The documented alternative to a superuser: a SECURITY DEFINER function
/// that only the lookup role may run, and the wildcard entry. With
/// `auth = "md5"`, a role stored as md5 logs in by md5 and one stored as a
/// SCRAM verifier by SCRAM, as PostgreSQL itself does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wildcard_entry_logs_roles_in_through_a_security_definer_function() {
    let mut config = lookup_config(vec![passwordless("*", AuthMethod::Md5)]);
    config.auth_query = AuthQuery {
        user: Some(LOOKUP.into()),
        password: Some(Secret::new(LOOKUP_PASSWORD)),
        query: LOOKUP_QUERY.into(),
        ..AuthQuery::default()
    };
    // The shared config names md5user itself: drop that entry, so the
    // wildcard serves it.
    config.users.retain(|u| u.name != pgsplit_cluster::MD5_USER);
    let proxy = start_proxy_with(config).await;
    let db = writable_database("aq_wildcard", &format!("{APP}, md5user"));

    let scram = connect_as(&proxy, APP, APP_PASSWORD, &db).await.unwrap();
    assert_served_as(&roles_seen(&scram).await, APP);
    let md5 = pgsplit_cluster::MD5_USER;
    let client = connect_as(&proxy, md5, pgsplit_cluster::MD5_PASSWORD, &db)
        .await
        .unwrap();
    assert_served_as(&roles_seen(&client).await, md5);

    for (user, password) in [
        ("nobody_at_all", "x"),
        ("aq_nologin", "nologin"),
        ("aq_expired", "expired"),
        (md5, "wrong"),
        (APP, "wrong"),
    ] {
        let e = connect_as(&proxy, user, password, &db).await.err().unwrap();
        assert_eq!(sqlstate(&e), "28P01", "{user}: {e}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_is_looked_up_again() {
    let config = lookup_config(vec![passwordless("aq_change", AuthMethod::ScramSha256)]);
    let proxy = start_proxy_with(config).await;
    let db = writable_database("aq_change", "aq_change");
    let first = connect_as(&proxy, "aq_change", "first", &db).await.unwrap();
    assert_served_as(&roles_seen(&first).await, "aq_change");
    drop(first);

    let c = cluster();
    c.psql(0, "postgres", "ALTER ROLE aq_change PASSWORD 'second'")
        .unwrap();
    c.wait_for_replay(Duration::from_secs(30)).unwrap();
    // Pooled connections logged in with the old password: end them, so the
    // next session's must log in with what the new password proves.
    for i in 0..c.nodes().len() {
        let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'aq_change'";
        c.psql(i, "postgres", kill).unwrap();
    }
    // The cached verifier is the old one: at most one attempt fails, and
    // drops it.
    let mut attempts = 0;
    let second = loop {
        attempts += 1;
        match connect_as(&proxy, "aq_change", "second", &db).await {
            Ok(client) => break client,
            Err(e) if attempts == 1 => assert_eq!(sqlstate(&e), "28P01", "{e}"),
            Err(e) => panic!("the new password is refused again: {e}"),
        }
    };
    assert_served_as(&roles_seen(&second).await, "aq_change");
    let e = connect_as(&proxy, "aq_change", "first", &db)
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28P01", "the old password still logs in: {e}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_fails_says_so_and_configured_users_log_in() {
    let mut config = lookup_config(vec![passwordless(APP, AuthMethod::ScramSha256)]);
    config.auth_query.password = Some(Secret::new("not the password"));
    let proxy = start_proxy_with(config).await;
    let e = connect_as(&proxy, APP, APP_PASSWORD, "postgres")
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28000", "{e}");
    let message = e.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("could not look up the password of user \"aq_app\"")
            && message.contains("password authentication failed for user \"postgres\""),
        "{message}"
    );
    let hint = e
        .as_db_error()
        .unwrap()
        .hint()
        .unwrap_or_default()
        .to_owned();
    assert!(hint.contains("[auth_query]"), "{hint}");
    // Users with a configured password do not depend on lookups.
    let client = connect(&proxy, "postgres").await;
    assert_eq!(scalar(&client, "SELECT current_user").await, "postgres");
    proxy.shutdown().await;
}
