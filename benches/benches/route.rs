//! The per-request routing decision outside the classifier: choosing a
//! reader among the servers (what every read pays), and electing the
//! primary from health reports (what every health check pays).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgsplit_router::balance::{Balancer, Candidate, PrimaryReads, Strategy};
use pgsplit_router::topology::{elect, Memory, NodeReport, PgRole};
use pgsplit_router::{Classifier, ClassifierConfig};

fn candidates() -> [Candidate; 3] {
    let node = |index, is_primary| Candidate {
        index,
        is_primary,
        usable: true,
        weight: 1,
        active: 3,
    };
    [node(0, true), node(1, false), node(2, false)]
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for (name, strategy) in [
        ("pick_round_robin", Strategy::RoundRobin),
        ("pick_least_connections", Strategy::LeastConnections),
        ("pick_random", Strategy::Random),
    ] {
        let balancer = Balancer::new(strategy, PrimaryReads::Fallback);
        let servers = candidates();
        g.bench_function(name, |b| {
            b.iter(|| balancer.pick(black_box(&servers), 0x9e37_79b9))
        });
    }
    // Classify (cached) and pick: the whole decision for a pgbench -S query.
    let classifier = Classifier::new(ClassifierConfig::default());
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    classifier.classify(sql);
    let balancer = Balancer::new(Strategy::RoundRobin, PrimaryReads::Fallback);
    let servers = candidates();
    g.bench_function("classify_cached_and_pick", |b| {
        b.iter(|| {
            let a = classifier.classify(black_box(sql));
            (a.route, balancer.pick(&servers, 1))
        })
    });
    let reports = [
        NodeReport {
            up: true,
            detached: false,
            pg_role: PgRole::Primary,
            timeline: 3,
            system_id: 7,
        },
        NodeReport {
            up: true,
            detached: false,
            pg_role: PgRole::Standby,
            timeline: 0,
            system_id: 7,
        },
        NodeReport {
            up: false,
            detached: false,
            pg_role: PgRole::Standby,
            timeline: 0,
            system_id: 7,
        },
    ];
    let mut memory = Memory::default();
    g.bench_function("elect_3_nodes", |b| {
        b.iter(|| elect(black_box(&reports), &mut memory))
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
