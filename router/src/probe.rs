#[test]
#[ignore]
fn perf_probe() {
    use std::hint::black_box;
    use std::time::Instant;
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    let n = 2_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        black_box(crate::hint::leading_hint(black_box(sql)));
    }
    println!("hint {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        black_box(crate::normalize::cache_key(black_box(sql)));
    }
    println!("key {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let mut l = crate::lex::Lexer::new(black_box(sql));
        while let Some(x) = l.next() {
            black_box(x);
        }
    }
    println!("lex {:?}", t.elapsed() / n);
    let c = crate::cache::Cache::new(1 << 20);
    let t = Instant::now();
    for _ in 0..n {
        black_box(c.hash(None, black_box(sql)));
    }
    println!("hash {:?}", t.elapsed() / n);
    use std::hash::BuildHasher;
    let hb = hashbrown::DefaultHashBuilder::default();
    let t = Instant::now();
    for _ in 0..n {
        black_box(hb.hash_one(black_box(sql)));
    }
    println!("hash str {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        black_box(hb.hash_one(black_box(sql.as_bytes())));
    }
    println!("hash bytes {:?}", t.elapsed() / n);
    let h = c.hash(None, sql);
    c.insert(
        h,
        None,
        sql,
        true,
        std::sync::Arc::new(crate::Analysis {
            route: crate::Route::Replica,
            hint: None,
            parsed: true,
            effects: Default::default(),
            unknown_functions: vec![],
            statement_count: 1,
        }),
    );
    let t = Instant::now();
    for _ in 0..n {
        black_box(c.get(h, None, black_box(sql)));
    }
    println!("get {:?}", t.elapsed() / n);
    let m = std::sync::Mutex::new(0u64);
    let t = Instant::now();
    for _ in 0..n {
        *m.lock().unwrap() += 1;
    }
    println!("mutex {:?}", t.elapsed() / n);
}
