//! [`Classifier`]: configuration, the cached entry point, and the order in
//! which the fast path, the parser and the keyword scan are tried.

use std::sync::Arc;

use crate::analyze::analyze;
use crate::cache::{Cache, CacheStats};
use crate::fastpath::fast_path;
use crate::functions::FunctionPolicy;
use crate::hint::leading_hint;
use crate::normalize::{cache_key, Key};
use crate::scan::scan;
use crate::verdict::Outcome;
use crate::{Analysis, Hint};

/// Classifier settings. Usually built from pgsplit's configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// Extra functions that must run on the primary (case-insensitive;
    /// `name` matches in any schema, `schema.name` only there). Writers win
    /// over `read_functions` and over the built-in harmless list.
    pub write_functions: Vec<String>,
    /// Extra functions known to be safe on a standby, so they are not
    /// reported in [`Analysis::unknown_functions`]. Same matching rules.
    pub read_functions: Vec<String>,
    /// Upper bound on the verdict cache, in bytes (keys plus an estimate of
    /// each verdict). 0 disables the cache. Default 8 MiB.
    pub cache_bytes: usize,
    /// Query strings longer than this (bytes) are not given to the parser
    /// and never cached: the token fast path may still decide them,
    /// otherwise they go to the primary unless hinted. Default 64 KiB.
    pub max_parse_len: usize,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            write_functions: Vec::new(),
            read_functions: Vec::new(),
            cache_bytes: 8 << 20,
            max_parse_len: 64 << 10,
        }
    }
}

/// A configuration mistake found by [`ClassifierConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A function list holds an empty or malformed name.
    #[error("invalid function name {0:?} in {1}: use `name` or `schema.name`, without quotes, spaces or parentheses")]
    BadFunctionName(String, &'static str),
    /// The same function is listed as both writer and reader.
    #[error("function {0:?} is in both write_functions and read_functions; keep it in one list")]
    ListedTwice(String),
}

impl ClassifierConfig {
    /// Checks the function lists. [`Classifier::new`] accepts any
    /// configuration; call this where configuration is loaded to report
    /// mistakes to the operator.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |names: &[String], list: &'static str| {
            for n in names {
                let ok = !n.is_empty()
                    && n.split('.').count() <= 2
                    && n.split('.').all(|p| {
                        !p.is_empty()
                            && p.bytes().all(|b| {
                                b == b'_' || b == b'$' || b.is_ascii_alphanumeric() || b >= 0x80
                            })
                    });
                if !ok {
                    return Err(ConfigError::BadFunctionName(n.clone(), list));
                }
            }
            Ok(())
        };
        check(&self.write_functions, "write_functions")?;
        check(&self.read_functions, "read_functions")?;
        for w in &self.write_functions {
            if self
                .read_functions
                .iter()
                .any(|r| r.eq_ignore_ascii_case(w))
            {
                return Err(ConfigError::ListedTwice(w.clone()));
            }
        }
        Ok(())
    }
}

/// Decides where each query string may run. `Send + Sync`: share one per
/// pool behind an `Arc`.
pub struct Classifier {
    policy: FunctionPolicy,
    max_parse_len: usize,
    cache: Cache,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("max_parse_len", &self.max_parse_len)
            .field("cache", &self.cache_stats())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Builds a classifier; function names are folded to lower case.
    pub fn new(cfg: ClassifierConfig) -> Self {
        Classifier {
            policy: FunctionPolicy::new(&cfg.write_functions, &cfg.read_functions),
            max_parse_len: cfg.max_parse_len,
            cache: Cache::new(cfg.cache_bytes),
        }
    }

    /// Classifies `sql`, answering from the cache when the same statement
    /// (ignoring comments, whitespace and literal values, but not the hint)
    /// has been seen.
    pub fn classify(&self, sql: &str) -> Arc<Analysis> {
        if sql.len() > self.max_parse_len || !self.cache.enabled() {
            self.cache.note_bypass();
            return Arc::new(self.classify_uncached(sql));
        }
        // Most statements arrive already in normal form (drivers send the
        // same text every time), so try the text as it stands before paying
        // for a lexer pass. A leading comment never starts a key.
        let plain = sql
            .as_bytes()
            .first()
            .is_some_and(|&b| !matches!(b, b'/' | b'-') && !b.is_ascii_whitespace());
        let raw_hash = plain.then(|| self.cache.hash(None, sql));
        if let Some(hit) = raw_hash.and_then(|h| self.cache.get_verbatim(h, sql)) {
            return hit;
        }
        let hint = leading_hint(sql);
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|buf| {
            let Some(key) = cache_key(sql, buf) else {
                self.cache.note_bypass();
                return Arc::new(self.decide(sql, hint));
            };
            self.classify_keyed(sql, hint, key, raw_hash)
        })
    }

    fn classify_keyed(
        &self,
        sql: &str,
        hint: Option<Hint>,
        key: Key<'_>,
        raw_hash: Option<u64>,
    ) -> Arc<Analysis> {
        let hash = self.cache.hash(hint, key.text);
        // Text with `$n` parameters and constant literals (`LIMIT 50`) is a
        // driver's prepared statement, sent again byte for byte: file it
        // under its own text too, so the next lookup needs no lexer pass.
        // Interpolated literals vary per call and would only churn the
        // cache, so they get no alias.
        let alias = raw_hash.filter(|_| !key.verbatim && sql.as_bytes().contains(&b'$'));
        let cached = if raw_hash.is_some() && hint.is_none() && key.text == sql {
            // Same lookup as above: already a miss.
            self.cache.note_miss(hash);
            None
        } else {
            self.cache.get(hash, hint, key.text)
        };
        let analysis = match cached {
            Some(hit) => hit,
            None => {
                // Classify without holding any lock; a concurrent miss on
                // the same text just does the work twice.
                let analysis = Arc::new(self.decide(sql, hint));
                self.cache
                    .insert(hash, hint, key.text, key.verbatim, Arc::clone(&analysis));
                analysis
            }
        };
        if let Some(raw) = alias {
            self.cache
                .insert(raw, None, sql, true, Arc::clone(&analysis));
        }
        analysis
    }

    /// Classifies `sql` without touching the cache.
    pub fn classify_uncached(&self, sql: &str) -> Analysis {
        self.decide(sql, leading_hint(sql))
    }

    /// The token-scan fast path alone (no cache, no parser): `None` when
    /// `sql` is not one of the shapes it decides. For benchmarks and
    /// diagnostics.
    pub fn fast_path(&self, sql: &str) -> Option<Analysis> {
        fast_path(sql, &self.policy).map(|o| o.finish(leading_hint(sql)))
    }

    /// The parser path alone, skipping the fast path (falls back to the
    /// keyword scan if the parser fails). For benchmarks and tests.
    #[doc(hidden)]
    pub fn classify_parsed(&self, sql: &str) -> Analysis {
        let outcome = analyze(sql, &self.policy).unwrap_or_else(|| scan(sql, &self.policy));
        outcome.finish(leading_hint(sql))
    }

    /// Hit, miss and size counters of the verdict cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn decide(&self, sql: &str, hint: Option<Hint>) -> Analysis {
        let outcome: Outcome = match fast_path(sql, &self.policy) {
            Some(o) => o,
            None if sql.len() > self.max_parse_len => scan(sql, &self.policy),
            None => analyze(sql, &self.policy).unwrap_or_else(|| scan(sql, &self.policy)),
        };
        outcome.finish(hint)
    }
}
