//! The statement classifier (fast path, parser, keyword scan, normalizer and
//! verdict cache) and the session/admin command recognizers, on arbitrary
//! bytes read as text (lossy UTF-8; NUL bytes separate statements that
//! share one classifier and its cache).
//!
//! Invariants (the crate's documented rules): no panic; a cached verdict
//! equals a fresh one for the same text, whatever filled the cache before
//! (cache keys blank literals, so a literal must never change a verdict);
//! unparsed text without a hint goes to the primary; when the fast path
//! answers and the parser parses, both say the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsplit_router::{admin, session_cmd, Classifier, ClassifierConfig, Route};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let c = Classifier::new(ClassifierConfig {
        read_functions: vec!["reader".into()],
        write_functions: vec!["writer".into(), "s.w".into()],
        cache_bytes: 1 << 20,
        ..ClassifierConfig::default()
    });
    for sql in text.split('\0').take(8) {
        let fresh = c.classify_uncached(sql);
        let cached = c.classify(sql);
        assert_eq!(*cached, fresh, "cache disagrees for {sql:?}");
        assert_eq!(*c.classify(sql), fresh, "second lookup of {sql:?}");
        if !fresh.parsed && fresh.hint.is_none() {
            assert_eq!(fresh.route, Route::Primary, "unparsed {sql:?}");
        }
        if let Some(fast) = c.fast_path(sql) {
            let parsed = c.classify_parsed(sql);
            if parsed.parsed {
                assert_eq!(fast, parsed, "fast path and parser disagree on {sql:?}");
            }
        }
        let _ = session_cmd::session_command(sql);
        let _ = admin::parse_admin(sql);
    }
});
