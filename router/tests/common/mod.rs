//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::OnceLock;

use pgsplit_router::{Analysis, Classifier, ClassifierConfig, Effects, Route};

/// One classifier per test binary, so the cached path gets exercised too.
pub fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(|| Classifier::new(ClassifierConfig::default()))
}

/// Classifies uncached, and checks that the cached path says the same.
pub fn classify(sql: &str) -> Analysis {
    let c = classifier();
    let a = c.classify_uncached(sql);
    assert_eq!(*c.classify(sql), a, "cached verdict differs for {sql:?}");
    assert_eq!(*c.classify(sql), a, "cache hit differs for {sql:?}");
    a
}

#[track_caller]
pub fn assert_route(sql: &str, want: Route) -> Analysis {
    let a = classify(sql);
    assert_eq!(a.route, want, "{sql:?} -> {a:?}");
    a
}

#[track_caller]
pub fn replica(sql: &str) -> Analysis {
    let a = assert_route(sql, Route::Replica);
    assert!(a.parsed, "{sql:?} should be understood: {a:?}");
    a
}

#[track_caller]
pub fn primary(sql: &str) -> Analysis {
    assert_route(sql, Route::Primary)
}

/// Primary with no session effects and no unknown functions.
#[track_caller]
pub fn plain_primary(sql: &str) {
    let a = primary(sql);
    assert_eq!(a.effects, Effects::default(), "{sql:?}");
}

/// Replica with no effects and no unknown functions.
#[track_caller]
pub fn plain_replica(sql: &str) {
    let a = replica(sql);
    assert_eq!(a.effects, Effects::default(), "{sql:?}");
    assert!(a.unknown_functions.is_empty(), "{sql:?} -> {a:?}");
}

/// Effects with only the named flag set, built by the caller.
pub fn fx(f: impl FnOnce(&mut Effects)) -> Effects {
    let mut e = Effects::default();
    f(&mut e);
    e
}
