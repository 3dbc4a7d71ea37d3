//! Volatility of user functions, looked up once per database in `pg_proc`.
//!
//! The classifier knows the built-in functions; a user function it cannot
//! place may write (`volatile`) or not (`stable`/`immutable`). The first
//! statement calling it goes to the primary while a background lookup asks
//! the catalog, so no client ever waits for the lookup; later calls follow
//! the answer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Key = (String, String); // (database, function name as written)

#[derive(Default)]
pub struct FunctionCatalog {
    /// true = volatile (or not found): may write, so primary.
    known: Mutex<HashMap<Key, bool>>,
    in_flight: Mutex<HashSet<Key>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    ReadOnly,
    MayWrite,
    /// Some functions are not known yet; the caller should route to the
    /// primary and call [`FunctionCatalog::look_up`] with these.
    Unknown(Vec<String>),
}

/// Where and as whom to run a lookup.
pub struct LookupTarget {
    pub addr: crate::backend::BackendAddr,
    pub timeouts: pgsplit_config::Timeouts,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

impl FunctionCatalog {
    pub fn verdict(&self, database: &str, functions: &[String]) -> Verdict {
        let known = self.known.lock().unwrap();
        let mut unknown = Vec::new();
        let mut may_write = false;
        for f in functions {
            match known.get(&(database.to_owned(), f.clone())) {
                Some(true) => may_write = true,
                Some(false) => {}
                None => unknown.push(f.clone()),
            }
        }
        if may_write {
            Verdict::MayWrite
        } else if unknown.is_empty() {
            Verdict::ReadOnly
        } else {
            Verdict::Unknown(unknown)
        }
    }

    /// Starts a background lookup for functions not already being looked up.
    pub fn look_up(self: &Arc<Self>, target: LookupTarget, functions: Vec<String>) {
        let fresh: Vec<String> = {
            let mut in_flight = self.in_flight.lock().unwrap();
            functions
                .into_iter()
                .filter(|f| in_flight.insert((target.database.clone(), f.clone())))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let catalog = Arc::clone(self);
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(Duration::from_secs(10), query(&target, &fresh)).await;
            let mut known = catalog.known.lock().unwrap();
            match result {
                Ok(Ok(volatile)) => {
                    for (f, v) in fresh.iter().zip(volatile) {
                        known.insert((target.database.clone(), f.clone()), v);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, functions = ?fresh, "function volatility lookup failed; calls keep going to the primary")
                }
                Err(_) => {
                    tracing::warn!(functions = ?fresh, "function volatility lookup timed out")
                }
            }
            let mut in_flight = catalog.in_flight.lock().unwrap();
            for f in &fresh {
                in_flight.remove(&(target.database.clone(), f.clone()));
            }
        });
    }
}

/// For each function: true when any overload is volatile, or none exists
/// (it may live in a schema the lookup cannot see: stay conservative).
async fn query(t: &LookupTarget, functions: &[String]) -> Result<Vec<bool>, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&t.user)
        .dbname(&t.database)
        .application_name("pgsplit function lookup");
    if let Some(p) = &t.password {
        config.password(p);
    }
    let limit = Duration::from_secs(5);
    let client = crate::backend::negotiate::postgres_client(&t.addr, &config, limit, &t.timeouts)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(functions.len());
    for f in functions {
        let (schema, name) = match f.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, f.as_str()),
        };
        let row = client
            .query_one(
                "SELECT coalesce(bool_or(p.provolatile = 'v'), true) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.proname = $1 AND ($2::text IS NULL OR n.nspname = $2)",
                &[&name, &schema],
            )
            .await
            .map_err(|e| e.to_string())?;
        out.push(row.get::<_, bool>(0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_combines_what_is_known() {
        let c = FunctionCatalog::default();
        {
            let mut k = c.known.lock().unwrap();
            k.insert(("db".into(), "reader".into()), false);
            k.insert(("db".into(), "writer".into()), true);
        }
        assert_eq!(c.verdict("db", &["reader".into()]), Verdict::ReadOnly);
        assert_eq!(
            c.verdict("db", &["reader".into(), "writer".into()]),
            Verdict::MayWrite
        );
        assert_eq!(
            c.verdict("db", &["reader".into(), "other".into()]),
            Verdict::Unknown(vec!["other".into()])
        );
        assert_eq!(
            c.verdict("otherdb", &["reader".into()]),
            Verdict::Unknown(vec!["reader".into()]),
            "cached per database"
        );
    }
}
