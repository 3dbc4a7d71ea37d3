//! TLS from pgsplit to servers that take TLS logins only.

use std::path::Path;

use pgsplit_config::ServerTls;

use super::*;

fn tls_cluster() -> pgsplit_cluster::Cluster {
    let c = certs();
    pgsplit_cluster::Cluster::start(pgsplit_cluster::ClusterOptions {
        tls: Some(pgsplit_cluster::ServerCert {
            cert_pem: std::fs::read_to_string(&c.cert).unwrap(),
            key_pem: std::fs::read_to_string(&c.key).unwrap(),
            hostssl_only: true,
        }),
        ..Default::default()
    })
    .expect("start a cluster with TLS")
}

/// Whether the connection that ran it is encrypted, and the server's port.
const SSL_AND_PORT: &str =
    "/* pgsplit:replica */ SELECT ssl::text, inet_server_port()::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsplit_reaches_servers_that_take_only_tls_and_verifies_them() {
    let cluster = tokio::task::spawn_blocking(tls_cluster).await.unwrap();
    let with = |mode, ca: &Path| {
        let mut config = pgsplit::demo::config_for(&cluster, "127.0.0.1:0");
        config.tls.server_tls = mode;
        config.tls.server_root_cert_file = Some(ca.to_path_buf());
        config
    };
    let proxy = start_proxy_with(with(ServerTls::VerifyFull, &certs().ca)).await;
    let client = connect(&proxy, "postgres").await;
    let row = |sql: &'static str| {
        let client = &client;
        async move {
            let r = client.simple_query(sql).await.unwrap();
            let row = r
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .expect("a row");
            let port: u16 = row.get(1).unwrap().parse().unwrap();
            (row.get(0).unwrap().to_owned(), port)
        }
    };
    let (ssl, port) = row(SSL_AND_PORT).await;
    assert_eq!(ssl, "true", "the read's server connection is not encrypted");
    assert!(port != cluster.port(0), "the read ran on the primary");
    let hinted = "/* pgsplit:primary */ SELECT ssl::text, inet_server_port()::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let (ssl, port) = row(hinted).await;
    assert_eq!((ssl.as_str(), port), ("true", cluster.port(0)));
    // The health checks reach every server the same way.
    let nodes = client.simple_query("SHOW pool_nodes").await.unwrap();
    let up = nodes
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get("pg_status") == Some("up")))
        .count();
    assert_eq!(up, 3, "{nodes:?}");
    drop(client);
    proxy.shutdown().await;

    // A user with no password in the config, looked up over TLS, logs in
    // to these servers with its own SCRAM proof.
    let mut config = with(ServerTls::VerifyFull, &certs().ca);
    config.auth_query.user = Some("postgres".into());
    config.auth_query.password = Some(pgsplit_config::Secret::new(PASSWORD));
    config.users.push(pgsplit_config::User {
        name: pgsplit_cluster::SCRAM_USER.into(),
        ..Default::default()
    });
    let proxy = start_proxy_with(config).await;
    let user = pgsplit_cluster::SCRAM_USER;
    let client = connect_as(&proxy, user, pgsplit_cluster::SCRAM_PASSWORD, "postgres")
        .await
        .unwrap();
    let sql = "/* pgsplit:replica */ SELECT current_user, ssl::text, inet_server_port()::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let seen = crate::common::row(&client, sql).await;
    assert_eq!(&seen[..2], [user, "true"], "{seen:?}");
    assert!(
        seen[2] != cluster.port(0).to_string(),
        "the read ran on the primary"
    );
    drop(client);
    proxy.shutdown().await;

    // A certificate from a CA pgsplit was not told about: refused, saying why.
    let proxy = start_proxy_with(with(ServerTls::VerifyFull, &certs().other_ca)).await;
    let e = refused(&proxy).await;
    assert_eq!(sqlstate(&e), "08001", "{e}");
    let message = e.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("TLS") && message.contains("certificate"),
        "{message}"
    );
    proxy.shutdown().await;

    // Without TLS, the server's own refusal is relayed.
    let proxy = start_proxy_with(with(ServerTls::Disable, &certs().ca)).await;
    let e = refused(&proxy).await;
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("no encryption"), "{e}");
    proxy.shutdown().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

/// A login through `proxy` that must fail: its error.
async fn refused(proxy: &pgsplit::ProxyHandle) -> tokio_postgres::Error {
    tokio_postgres::connect(
        &conn_string(proxy, "postgres", PASSWORD, "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused")
}
