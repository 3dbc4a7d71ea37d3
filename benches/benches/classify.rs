//! Nanoseconds per statement classification: the cached path the proxy
//! takes for every query, the uncached paths behind it, and the token fast
//! path on its own.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgsplit_router::{Classifier, ClassifierConfig};

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
const PGBENCH_SELECT_LITERAL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48271;";
const PGBENCH_UPDATE: &str = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;";
const CTE_JOIN: &str = "WITH recent AS (SELECT o.id, o.customer_id, o.total FROM orders o \
     WHERE o.created_at > now() - interval '7 days') \
     SELECT c.name, r.total, p.title FROM recent r \
     JOIN customers c ON c.id = r.customer_id \
     JOIN order_lines l ON l.order_id = r.id \
     JOIN products p ON p.id = l.product_id \
     WHERE c.region = $1 ORDER BY r.total DESC LIMIT 50";

fn cached(c: &mut Criterion) {
    let cl = Classifier::new(ClassifierConfig::default());
    let mut g = c.benchmark_group("cached");
    for (name, sql) in [
        ("pgbench_select", PGBENCH_SELECT),
        ("pgbench_select_literal", PGBENCH_SELECT_LITERAL),
        ("cte_3way_join", CTE_JOIN),
    ] {
        cl.classify(sql);
        g.bench_function(name, |b| b.iter(|| cl.classify(black_box(sql))));
    }
    g.finish();
}

fn uncached(c: &mut Criterion) {
    let cl = Classifier::new(ClassifierConfig::default());
    let mut g = c.benchmark_group("uncached");
    g.bench_function("pgbench_select", |b| {
        b.iter(|| cl.classify_uncached(black_box(PGBENCH_SELECT)))
    });
    g.bench_function("pgbench_select_parser_only", |b| {
        b.iter(|| cl.classify_parsed(black_box(PGBENCH_SELECT)))
    });
    g.bench_function("cte_3way_join", |b| {
        b.iter(|| cl.classify_uncached(black_box(CTE_JOIN)))
    });
    g.bench_function("cte_3way_join_parser_only", |b| {
        b.iter(|| cl.classify_parsed(black_box(CTE_JOIN)))
    });
    g.finish();
}

fn fast_path(c: &mut Criterion) {
    let cl = Classifier::new(ClassifierConfig::default());
    let mut g = c.benchmark_group("fast_path");
    for (name, sql) in [
        ("pgbench_select", PGBENCH_SELECT),
        ("pgbench_update", PGBENCH_UPDATE),
        ("begin", "BEGIN;"),
    ] {
        assert!(
            cl.fast_path(sql).is_some(),
            "{sql} should take the fast path"
        );
        g.bench_function(name, |b| b.iter(|| cl.fast_path(black_box(sql))));
    }
    g.finish();
}

criterion_group!(benches, cached, uncached, fast_path);
criterion_main!(benches);
