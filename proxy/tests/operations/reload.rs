//! Reloading under load: SIGHUP to the binary while pgbench runs, and
//! `RELOAD` on the admin console, with a valid and an invalid file.

use super::binary::Binary;
use super::*;

/// `pool_size` of every row of `SHOW POOLS` for `database`.
async fn pool_sizes(proxy: std::net::SocketAddr, database: &str) -> Vec<String> {
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=pgbouncer",
        proxy.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("console login");
    tokio::spawn(connection);
    named_rows(&client, "SHOW POOLS")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r["database"].starts_with(&format!("{database}@")))
        .map(|r| r["pool_size"].clone())
        .collect()
}

/// The md5 user's client password, and a changed one.
fn users(password: &str) -> String {
    format!(
        "[[users]]\nname = \"{}\"\npassword = \"{password}\"\nserver_password = \"{}\"\nauth = \"md5\"\n",
        pgsplit_cluster::MD5_USER,
        pgsplit_cluster::MD5_PASSWORD
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_pgbench_changes_pool_size_and_a_password_and_refuses_a_bad_file() {
    let db = fresh_database("reload_sighup");
    let pgsplit = Binary::start(&format!("[pool]\npool_size = 3\n{}", users("before")), None).await;
    let bench = super::pgbench_through(pgsplit.addr, &db, 4, 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pool_sizes(pgsplit.addr, &db).await.iter().all(|s| s == "3"));

    // A larger pool, a new password for the md5 user, a new listen
    // address (which needs a restart): SIGHUP.
    let original = std::fs::read_to_string(&pgsplit.config).unwrap();
    let changed = original
        .replace("pool_size = 3", "pool_size = 6")
        .replace("password = \"before\"", "password = \"after\"")
        .replacen("listen = \"127.0.0.1:", "listen = \"127.0.0.2:", 1);
    std::fs::write(&pgsplit.config, &changed).unwrap();
    pgsplit.hangup();
    let resized = eventually(Duration::from_secs(5), || async {
        let sizes = pool_sizes(pgsplit.addr, &db).await;
        !sizes.is_empty() && sizes.iter().all(|s| s == "6")
    })
    .await;
    assert!(resized, "{:?}", pool_sizes(pgsplit.addr, &db).await);
    let md5 = |password: &'static str| {
        let addr = pgsplit.addr;
        let db = db.clone();
        async move {
            let conn = format!(
                "host=127.0.0.1 port={} user={} password={password} dbname={db}",
                addr.port(),
                pgsplit_cluster::MD5_USER
            );
            tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .map(|_| ())
        }
    };
    let old = md5("before").await.unwrap_err();
    assert_eq!(
        old.as_db_error().map(|e| e.code().code()),
        Some("28P01"),
        "{old}"
    );
    md5("after").await.expect("the new password logs in");

    // A file that cannot be used: nothing changes.
    std::fs::write(
        &pgsplit.config,
        changed.replace("pool_size = 6", "pool_size = 6\npool_sise = 9"),
    )
    .unwrap();
    pgsplit.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pool_sizes(pgsplit.addr, &db).await.iter().all(|s| s == "6"));
    md5("after").await.expect("still the reloaded password");

    let out = bench.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("number of failed transactions: 0"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = tokio::task::spawn_blocking(move || pgsplit.stop())
        .await
        .unwrap();
    assert!(log.contains("SIGHUP: configuration reloaded; applied to new sessions and the pools: users, pool; these need a restart and keep their running values: listen"), "{log}");
    assert!(
        log.contains("the configuration was not reloaded") && log.contains("pool.pool_sise"),
        "{log}"
    );
    println!(
        "reload under pgbench: {}",
        stdout
            .lines()
            .find(|l| l.contains("processed"))
            .unwrap_or("")
    );
}

/// `RELOAD` on the console answers with what changed, or F0000 naming
/// the key of a bad file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_the_console_reports_what_changed_or_why_not() {
    let path = std::env::temp_dir().join(format!("pgsplit-reload-{}.toml", std::process::id()));
    let mut config = config();
    config.listen = "127.0.0.1:0".into();
    std::fs::write(
        &path,
        config
            .to_masked_toml()
            .replace("\"********\"", &format!("\"{PASSWORD}\"")),
    )
    .unwrap();
    let proxy = start_proxy_with(Config::load(Some(&path)).expect("the file loads")).await;
    proxy.core().source.set(Some(path.clone()));
    let console = connect(&proxy, "pgbouncer").await;
    let unchanged = console.simple_query("RELOAD").await.unwrap();
    assert!(matches!(
        unchanged.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(_))
    ));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("[timeouts]", "[timeouts]\nbogus = 1")).unwrap();
    let e = console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(sqlstate(&e), "F0000", "{e}");
    let detail = e
        .as_db_error()
        .and_then(|d| d.detail())
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("timeouts.bogus"), "{detail}");
    proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
}
