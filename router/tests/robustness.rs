//! Garbage, truncated and hostile input: never a panic, never a replica for
//! what was not understood, and the config checker.

use pgsplit_router::{Classifier, ClassifierConfig, ConfigError, Route};

const SEEDS: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "SELECT E'a\\'b', $tag$ x $tag$, U&'d\\0061t' /* c /* nested */ */ FROM t -- end",
    "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; SET LOCAL a = 1; COMMIT",
    "SELECT * FROM t WHERE a IN (SELECT b FROM u FOR UPDATE) AND c = nextval('s')",
    "/* pgsplit:replica */ COPY (SELECT \"x\"\"y\" FROM t) TO STDOUT",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1; FETCH 1 FROM c",
];

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check(c: &Classifier, sql: &str) {
    let a = c.classify_uncached(sql);
    let cached = c.classify(sql);
    assert_eq!(*cached, a, "{sql:?}");
    if !a.parsed && a.hint.is_none() {
        assert_eq!(a.route, Route::Primary, "{sql:?}");
    }
}

#[test]
fn garbage_goes_to_the_primary() {
    let c = Classifier::new(ClassifierConfig::default());
    for sql in [
        "SELEC 1",
        "garbage",
        "SELECT FROM WHERE (((",
        ")))",
        "INSERT",
        "'unterminated",
        "/* unterminated",
        "\"unterminated",
        "$$unterminated",
        "\u{0}\u{1}\u{2}",
        "💥 SELECT",
    ] {
        let a = c.classify_uncached(sql);
        assert_eq!(a.route, Route::Primary, "{sql:?} -> {a:?}");
        // Only the fast path's shape match ("INSERT") may claim to know it.
        assert!(!a.parsed || c.fast_path(sql).is_some(), "{sql:?}");
        check(&c, sql);
    }
}

#[test]
fn truncated_statements_never_panic() {
    let c = Classifier::new(ClassifierConfig::default());
    for seed in SEEDS {
        for (i, _) in seed.char_indices() {
            check(&c, &seed[..i]);
            check(&c, &seed[i..]);
        }
    }
}

#[test]
fn random_input_never_panics() {
    const PIECES: &[&str] = &[
        "SELECT ",
        "INSERT ",
        "WITH ",
        "FOR ",
        "UPDATE ",
        "(",
        ")",
        "'",
        "\"",
        "$$",
        "$1",
        "$a$",
        "/*",
        "*/",
        "--",
        "\n",
        ";",
        ",",
        ".",
        "::",
        "E'",
        "U&'",
        "\\",
        "nextval(",
        "count(",
        "1",
        "1e",
        ".5",
        "x",
        " ",
        "é",
        "\u{0}",
        "/* pgsplit:replica */",
        "BEGIN ",
        "SET ",
        "READ ONLY ",
        "INTO ",
        "TEMP ",
        "FROM ",
        "t",
        "=",
        "*",
    ];
    let c = Classifier::new(ClassifierConfig::default());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..30_000 {
        let n = 1 + rng.below(16);
        let sql: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
        check(&c, &sql);
    }
    for _ in 0..2_000 {
        let n = rng.below(64);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        check(&c, &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let c = Classifier::new(ClassifierConfig::default());
    let deep = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
    let a = c.classify(&deep);
    assert!(a.route == Route::Replica || !a.parsed);
    let deep = format!(
        "SELECT * FROM t WHERE a = {}1{}",
        "abs(".repeat(3_000),
        ")".repeat(3_000)
    );
    c.classify(&deep);
    let comments = format!("{}SELECT 1{}", "/*".repeat(10_000), "*/".repeat(10_000));
    c.classify(&comments);
}

#[test]
fn config_validation() {
    let ok = ClassifierConfig {
        write_functions: vec!["audit.log".into(), "bump".into()],
        read_functions: vec!["my_fn".into()],
        ..ClassifierConfig::default()
    };
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ClassifierConfig::default().cache_bytes, 8 << 20);
    assert_eq!(ClassifierConfig::default().max_parse_len, 64 << 10);
    for bad in ["", "a b", "f()", "a.b.c", ".x", "\"q\""] {
        let cfg = ClassifierConfig {
            read_functions: vec![bad.into()],
            ..ClassifierConfig::default()
        };
        assert!(
            matches!(cfg.validate(), Err(ConfigError::BadFunctionName(..))),
            "{bad:?}"
        );
    }
    let twice = ClassifierConfig {
        write_functions: vec!["f".into()],
        read_functions: vec!["F".into()],
        ..ClassifierConfig::default()
    };
    assert!(matches!(twice.validate(), Err(ConfigError::ListedTwice(_))));
    assert!(twice.validate().unwrap_err().to_string().contains("both"));
}

#[test]
fn literal_values_never_change_a_verdict() {
    // Cache keys blank literals out, so every variant below must be
    // classified exactly as the first one that filled the entry.
    const TEMPLATES: &[&str] = &[
        "SELECT * FROM t WHERE id = {}",
        "SELECT set_config('a', {}, {})",
        "EXPLAIN (ANALYZE {}) SELECT pg_advisory_lock({})",
        "EXPLAIN (ANALYZE {}) DELETE FROM t WHERE a = {}",
        "SET search_path = {}",
        "SET LOCAL statement_timeout = {}",
        "COPY t TO {}",
        "FETCH {} FROM c",
        "SELECT lo_open({}, {})",
        "SELECT * FROM t LIMIT {} OFFSET {}",
        "DECLARE c CURSOR WITH HOLD FOR SELECT {}",
        "SELECT pg_advisory_xact_lock({}); SELECT {}",
        "/* pgsplit:replica */ SELECT nextval({})",
        "SELECT a::varchar({}), a::numeric({}, 2) FROM t",
        "SELECT interval {}, date {}",
        "CREATE FUNCTION f() RETURNS int AS {} LANGUAGE sql",
        "SELECT * FROM t WHERE a IN ({}, {})",
        "COPY t FROM {}",
    ];
    const VALUES: &[&str] = &[
        "1",
        "0",
        "'x'",
        "'off'",
        "'on'",
        "1.5e3",
        "$$y$$",
        "'it''s'",
        ".5",
        "''",
        "$t$z$t$",
        "99999999999999999999",
        "123456789012345678",
        "1e400",
        "5.",
    ];
    let c = Classifier::new(ClassifierConfig::default());
    for tpl in TEMPLATES {
        for (i, a) in VALUES.iter().enumerate() {
            let b = VALUES[(i + 3) % VALUES.len()];
            let sql = tpl.replacen("{}", a, 1).replacen("{}", b, 1);
            check(&c, &sql);
        }
    }
}
