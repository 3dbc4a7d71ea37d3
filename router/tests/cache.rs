//! The shared verdict cache: keys, counters, byte bound, bypasses.

use std::sync::Arc;

use pgsplit_router::{Classifier, ClassifierConfig, Hint, Route};

fn fresh(cache_bytes: usize) -> Classifier {
    Classifier::new(ClassifierConfig {
        cache_bytes,
        ..ClassifierConfig::default()
    })
}

#[test]
fn hits_are_counted_and_shared() {
    let c = fresh(1 << 20);
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    let a = c.classify(sql);
    let b = c.classify(sql);
    assert!(Arc::ptr_eq(&a, &b), "a hit returns the cached verdict");
    let st = c.cache_stats();
    assert_eq!((st.hits, st.misses, st.entries), (1, 1, 1));
    assert!(st.bytes > sql.len() as u64);
}

#[test]
fn comments_whitespace_and_literals_share_an_entry() {
    let c = fresh(1 << 20);
    let first = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
    for sql in [
        "/* trace_id=abc */ SELECT abalance FROM pgbench_accounts WHERE aid = 2",
        "SELECT abalance\n  FROM pgbench_accounts -- app=x\n WHERE aid = 3",
        "  SELECT abalance FROM pgbench_accounts WHERE aid = 48271  ",
    ] {
        assert!(Arc::ptr_eq(&first, &c.classify(sql)), "{sql:?}");
    }
    let st = c.cache_stats();
    assert_eq!((st.hits, st.misses, st.entries), (3, 1, 1));
}

#[test]
fn hints_are_part_of_the_key() {
    let c = fresh(1 << 20);
    let plain = c.classify("SELECT 1");
    let hinted = c.classify("/* pgsplit:primary */ SELECT 1");
    assert_eq!(plain.route, Route::Replica);
    assert_eq!(hinted.route, Route::Primary);
    assert_eq!(hinted.hint, Some(Hint::Primary));
    let again = c.classify("/*pgsplit:primary*/ SELECT 1");
    assert!(Arc::ptr_eq(&hinted, &again));
    assert_eq!(c.cache_stats().entries, 2);
}

#[test]
fn different_statements_do_not_collide() {
    let c = fresh(1 << 20);
    assert_eq!(c.classify("SELECT * FROM t").route, Route::Replica);
    assert_eq!(
        c.classify("SELECT * FROM t FOR UPDATE").route,
        Route::Primary
    );
    assert_eq!(c.classify("SELECT \"nextval\"('s')").route, Route::Primary);
    assert_eq!(c.classify("SELECT \"nextvax\"('s')").route, Route::Replica);
    assert!(!c.classify("SET LOCAL a = 1").effects.set_session);
    assert!(c.classify("SET a = 1").effects.set_session);
}

#[test]
fn raw_text_cannot_match_a_blanked_key() {
    let c = fresh(1 << 20);
    assert_eq!(c.classify("SELECT 1").route, Route::Replica);
    assert_eq!(c.classify("SELECT 'x'").route, Route::Replica);
    // The same bytes as the blanked keys, sent as real text.
    for sql in ["SELECT \u{1}", "SELECT \u{2}"] {
        let a = c.classify(sql);
        assert_eq!(a.route, Route::Primary, "{sql:?}");
        assert!(!a.parsed);
    }
}

#[test]
fn verbatim_text_is_found_without_normalising() {
    let c = fresh(1 << 20);
    let a = c.classify("/* app */  SELECT a FROM t WHERE b = $1");
    let b = c.classify("SELECT a FROM t WHERE b = $1");
    assert!(Arc::ptr_eq(&a, &b));
    let st = c.cache_stats();
    assert_eq!((st.hits, st.misses, st.entries), (1, 1, 1));
}

#[test]
fn prepared_text_with_constants_gets_an_alias() {
    let c = fresh(1 << 20);
    let sql = "SELECT * FROM t WHERE a = $1 AND status = 'active' LIMIT 50";
    let a = c.classify(sql);
    let b = c.classify(sql);
    assert!(Arc::ptr_eq(&a, &b));
    // The alias and the literal-free key both point at one verdict.
    let st = c.cache_stats();
    assert_eq!((st.hits, st.misses, st.entries), (1, 1, 2));
    // Interpolated literals get no alias.
    c.classify("SELECT * FROM t WHERE a = 1");
    c.classify("SELECT * FROM t WHERE a = 2");
    assert_eq!(c.cache_stats().entries, 3);
}

#[test]
fn byte_bound_evicts() {
    let budget = 64 << 10;
    let c = fresh(budget);
    for i in 0..5_000 {
        let sql = format!("SELECT col_{i} FROM table_{i} WHERE id = $1");
        assert_eq!(c.classify(&sql).route, Route::Replica);
    }
    let st = c.cache_stats();
    assert!(st.bytes <= budget as u64, "{st:?}");
    assert!(st.entries > 0 && st.entries < 5_000, "{st:?}");
    assert_eq!(st.misses, 5_000);
    // Recently used entries survive a flood of one-off statements.
    let hot = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    c.classify(hot);
    for i in 0..200 {
        c.classify(hot);
        c.classify(&format!("SELECT other_{i} FROM t"));
    }
    let before = c.cache_stats().hits;
    c.classify(hot);
    assert_eq!(c.cache_stats().hits, before + 1);
}

#[test]
fn oversized_entries_are_not_cached() {
    let c = fresh(16 << 10);
    let sql = format!("SELECT {} FROM t", "a, ".repeat(2_000) + "b");
    assert_eq!(c.classify(&sql).route, Route::Replica);
    assert_eq!(c.cache_stats().entries, 0);
}

#[test]
fn long_statements_bypass_the_parser_and_the_cache() {
    let c = Classifier::new(ClassifierConfig {
        max_parse_len: 1_000,
        ..ClassifierConfig::default()
    });
    let list = (0..500)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Decided by the token fast path.
    let read = format!("SELECT * FROM t WHERE id IN ({list})");
    let a = c.classify(&read);
    assert_eq!((a.route, a.parsed), (Route::Replica, true));
    let write = format!("INSERT INTO t VALUES ({list})");
    assert_eq!(c.classify(&write).route, Route::Primary);
    // Not decidable without the parser: primary, unless hinted.
    let cte = format!("SELECT myfn(a) FROM t WHERE id IN ({list})");
    let a = c.classify(&cte);
    assert_eq!((a.route, a.parsed), (Route::Primary, false));
    let a = c.classify(&format!("/* pgsplit:replica */ {cte}"));
    assert_eq!(a.route, Route::Replica);
    let a = c.classify(&format!(
        "/* pgsplit:replica */ WITH d AS (DELETE FROM t RETURNING 1) SELECT {list}"
    ));
    assert_eq!(a.route, Route::Primary);
    // Effects still come from the keyword scan.
    let a = c.classify(&format!("SET search_path = x; SELECT {list}; LISTEN ch"));
    assert!(a.effects.set_session && a.effects.pins_session);
    assert_eq!(a.statement_count, 3);
    let st = c.cache_stats();
    assert_eq!((st.entries, st.hits), (0, 0));
    assert_eq!(st.misses, 6);
}

#[test]
fn disabled_cache() {
    let c = fresh(0);
    c.classify("SELECT 1");
    c.classify("SELECT 1");
    let st = c.cache_stats();
    assert_eq!((st.hits, st.misses, st.entries, st.bytes), (0, 2, 0, 0));
}

#[test]
fn shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
    let c = Arc::new(fresh(1 << 20));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for i in 0..500 {
                    let sql = format!("SELECT a FROM t{} WHERE id = {i}", i % 50);
                    assert_eq!(c.classify(&sql).route, Route::Replica);
                    let w = format!("UPDATE t{t} SET a = {i}");
                    assert_eq!(c.classify(&w).route, Route::Primary);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = c.cache_stats();
    assert_eq!(st.hits + st.misses, 4_000);
    assert!(st.entries <= 54, "{st:?}");
}
