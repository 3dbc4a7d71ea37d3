//! `read_your_writes = "user"`: a session reads what earlier sessions of
//! the same user and database wrote (a client that reconnects, psql's
//! `\c`), and nothing is promised about other users' writes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_mode_covers_a_reconnecting_client_and_no_one_else() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_user");
    tables(&db, &["u"]);
    let md5 = pgsplit_cluster::MD5_USER;
    cluster()
        .psql(0, &db, &format!("GRANT SELECT ON u TO {md5}"))
        .unwrap();
    set_lag(300);
    let proxy = start_proxy_with(proxy_config(Mode::User)).await;
    let other = connect_as(&proxy, md5, pgsplit_cluster::MD5_PASSWORD, &db)
        .await
        .unwrap();
    let (mut missed, mut other_missed) = (0, 0);
    for id in 0..40 {
        // Write, hang up, connect again as the same user and read.
        let writer = connect(&proxy, &db).await;
        writer
            .simple_query(&format!("INSERT INTO u VALUES ({id})"))
            .await
            .unwrap();
        drop(writer);
        let again = connect(&proxy, &db).await;
        let count = format!("SELECT count(*) FROM u WHERE id = {id}");
        missed += usize::from(row(&again, &count).await[0] == "0");
        other_missed += usize::from(row(&other, &count).await[0] == "0");
    }
    assert_eq!(
        missed, 0,
        "a reconnecting client did not see its own writes"
    );
    assert!(
        other_missed > 0,
        "another user's session is not covered, so with 300 ms of lag it must miss"
    );
    // Not by sending everything to the primary: once the replicas have
    // replayed, a new session of the writer reads from them again.
    let back = eventually(Duration::from_secs(5), || async {
        let c = connect(&proxy, &db).await;
        is_replica(port_of(&c, "SELECT inet_server_port()").await)
    })
    .await;
    assert!(back, "user mode never read from a replica again");
    proxy.shutdown().await;
    set_lag(0);
}
