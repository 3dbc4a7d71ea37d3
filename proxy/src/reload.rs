//! Reloading the configuration (SIGHUP, console `RELOAD`, `PGSPLIT
//! RELOAD`): the file and `PGSPLIT_*` variables are read again and
//! validated as `check-config` does; an invalid result changes nothing.
//! A valid one becomes the generation new sessions start with, the health
//! loop's next round and every pool's size; sessions already running keep
//! the settings they started with. What cannot change while running is
//! kept as it runs and reported as needing a restart.

use std::sync::Arc;

use pgsplit_config::Config;

use crate::shared::{Core, Shared};

/// What a reload changed, and what it left for a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub changed: Vec<&'static str>,
    pub needs_restart: Vec<&'static str>,
}

impl Reloaded {
    /// The line RELOAD tells the client and the log.
    pub fn summary(&self) -> String {
        let changed = if self.changed.is_empty() {
            "nothing changed".to_owned()
        } else {
            format!(
                "applied to new sessions and the pools: {}",
                self.changed.join(", ")
            )
        };
        if self.needs_restart.is_empty() {
            format!("configuration reloaded; {changed}")
        } else {
            format!(
                "configuration reloaded; {changed}; these need a restart and keep their running values: {}",
                self.needs_restart.join(", ")
            )
        }
    }
}

/// The settings a reload cannot change (the prefixes of their keys in
/// `SHOW CONFIG`); `merge` keeps their running values.
const RESTART_ONLY: [&str; 10] = [
    "listen",
    "metrics_listen",
    "worker_threads",
    "log_format",
    "backends",
    "tls",
    "auth_query",
    "limits.max_client_connections",
    "limits.client_buffer_budget",
    "pool.mode",
];

/// Whether a reload changes the setting with this `SHOW CONFIG` key.
pub fn changeable(key: &str) -> bool {
    !RESTART_ONLY.iter().any(|r| {
        key.strip_prefix(r)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// Reads, validates and applies the configuration; `Err` (the same lines
/// `check-config` prints) changes nothing.
pub fn reload(core: &Arc<Core>) -> Result<Reloaded, String> {
    let running = core.current().ok_or("pgsplit is shutting down")?;
    let new = Config::load(core.source.get()?.as_deref()).map_err(|e| e.to_string())?;
    crate::tls::ClientTlsSetup::load(&new.tls).map_err(|e| e.to_string())?;
    crate::tls::ServerTlsSetup::load_all(&new).map_err(|e| e.to_string())?;
    let (applied, outcome) = merge(&running.config, new);
    if !outcome.changed.is_empty() {
        let applied = Arc::new(applied);
        core.topology.set_config(Arc::clone(&applied));
        core.pools.reconfigure(Arc::clone(&applied));
        core.set_current(&Arc::new(Shared::generation(applied, Arc::clone(core))));
    }
    Ok(outcome)
}

/// Reloads and logs the outcome, for SIGHUP.
pub fn on_signal(core: &Arc<Core>) {
    match reload(core) {
        Ok(r) if r.needs_restart.is_empty() => tracing::info!("SIGHUP: {}", r.summary()),
        Ok(r) => tracing::warn!("SIGHUP: {}", r.summary()),
        Err(e) => tracing::error!(
            "SIGHUP: the configuration was not reloaded, nothing changed and every client stays connected:\n{e}"
        ),
    }
}

/// `new` with what cannot change while running put back as it runs, and
/// which sections changed.
fn merge(old: &Config, mut new: Config) -> (Config, Reloaded) {
    let mut out = Reloaded::default();
    macro_rules! restart_only {
        ($($field:ident).+, $name:literal) => {
            if old.$($field).+ != new.$($field).+ {
                out.needs_restart.push($name);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    restart_only!(listen, "listen");
    restart_only!(metrics_listen, "metrics_listen");
    restart_only!(worker_threads, "worker_threads");
    restart_only!(log_format, "log_format");
    restart_only!(backends, "backends");
    restart_only!(tls, "tls");
    restart_only!(auth_query, "auth_query");
    restart_only!(
        limits.max_client_connections,
        "limits.max_client_connections"
    );
    restart_only!(limits.client_buffer_budget, "limits.client_buffer_budget");
    restart_only!(pool.mode, "pool.mode");
    macro_rules! applied {
        ($field:ident, $name:literal) => {
            if old.$field != new.$field {
                out.changed.push($name);
            }
        };
    }
    applied!(users, "users");
    applied!(limits, "limits");
    applied!(timeouts, "timeouts");
    applied!(routing, "routing");
    applied!(pool, "pool");
    applied!(health, "health");
    (new, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let mut c = Config::default();
        c.backends.push(pgsplit_config::Backend {
            name: "a".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            ..Default::default()
        });
        c
    }

    #[test]
    fn settings_that_cannot_change_while_running_keep_their_values() {
        let old = base();
        let mut new = base();
        new.listen = "127.0.0.1:7000".into();
        new.backends[0].port = 5433;
        new.pool.pool_size = 7;
        new.timeouts.query_wait_timeout = std::time::Duration::from_secs(3);
        let (applied, r) = merge(&old, new);
        assert_eq!(r.needs_restart, ["listen", "backends"]);
        assert_eq!(r.changed, ["timeouts", "pool"]);
        assert_eq!(applied.listen, old.listen);
        assert_eq!(applied.backends, old.backends);
        assert_eq!(applied.pool.pool_size, 7);
        assert!(r.summary().contains("need a restart"), "{}", r.summary());
    }

    /// `merge` and `RESTART_ONLY` name the same settings, in one order.
    #[test]
    fn every_restart_only_setting_is_kept_and_listed() {
        let old = base();
        let mut new = base();
        new.listen = "127.0.0.1:7000".into();
        new.metrics_listen = Some("127.0.0.1:9999".into());
        new.worker_threads = 3;
        new.log_format = pgsplit_config::LogFormat::Json;
        new.backends[0].port = 1;
        new.tls.client_tls = Some(pgsplit_config::ClientTls::Disable);
        new.auth_query.database = "other".into();
        new.limits.max_client_connections = 1;
        new.limits.client_buffer_budget = 1 << 21;
        new.pool.mode = pgsplit_config::PoolMode::Session;
        let (applied, r) = merge(&old, new);
        assert_eq!(r.needs_restart, RESTART_ONLY);
        assert_eq!(applied, old, "every one kept its running value");
    }

    #[test]
    fn show_config_says_which_keys_a_reload_changes() {
        assert!(changeable("pool.pool_size") && changeable("users[0].password"));
        assert!(!changeable("listen") && !changeable("backends[1].port"));
        assert!(!changeable("pool.mode") && !changeable("tls.client_tls"));
        assert!(changeable("limits.max_message_size"));
        assert!(!changeable("limits.max_client_connections"));
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let (_, r) = merge(&base(), base());
        assert_eq!(r, Reloaded::default());
        assert_eq!(r.summary(), "configuration reloaded; nothing changed");
    }
}
