//! Cross-field rules that serde cannot express. Every rule runs, so an
//! operator fixes all problems in one edit instead of one per restart.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::secret::{check_scram_verifier, PasswordKind, Secret};
use crate::{AuthMethod, Backend, Config, Problem, RoleHint, User};

/// Below this even a startup packet with a few parameters may not fit.
const MIN_MESSAGE_SIZE: usize = 8192;
/// The wire length field is an Int32, so no frame can be longer.
const MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

pub(crate) fn check(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    check_listen(&config.listen, &mut out);
    if let Some(m) = &config.metrics_listen {
        match m.parse::<SocketAddr>() {
            Err(_) => out.push(Problem::new(
                "metrics_listen",
                format!("{m:?} is not an IP address and port; use e.g. \"127.0.0.1:9187\""),
            )),
            Ok(metrics) => check_ports_apart(&config.listen, metrics, &mut out),
        }
    }
    if config.worker_threads > MAX_THREADS {
        out.push(Problem::new(
            "worker_threads",
            format!(
                "{} threads is more than pgsplit can use (at most {MAX_THREADS}); \
                 0 picks half the CPUs, and one thread serves tens of thousands of queries a second",
                config.worker_threads
            ),
        ));
    }
    check_limits(config, &mut out);
    check_timeouts(config, &mut out);
    check_backends(&config.backends, &mut out);
    check_users(&config.users, config.auth_query.enabled(), &mut out);
    crate::auth_query::check(config, &mut out);
    check_routing(config, &mut out);
    check_pool(config, &mut out);
    check_health(config, &mut out);
    crate::tls::check(config, &mut out);
    out
}

/// More threads than this only add hand-offs between them.
const MAX_THREADS: usize = 1024;

/// The metrics listener cannot share the client port: one of the two
/// would fail to bind at start.
fn check_ports_apart(listen: &str, metrics: SocketAddr, out: &mut Vec<Problem>) {
    let Ok(listen) = listen.parse::<SocketAddr>() else {
        return;
    };
    let overlap = listen.ip() == metrics.ip()
        || listen.ip().is_unspecified()
        || metrics.ip().is_unspecified();
    if listen.port() == metrics.port() && listen.port() != 0 && overlap {
        out.push(Problem::new(
            "metrics_listen",
            format!(
                "{metrics} takes the port clients connect to (listen = \"{listen}\"); \
                 give metrics a port of its own, e.g. \"127.0.0.1:9187\""
            ),
        ));
    }
}

fn check_listen(listen: &str, out: &mut Vec<Problem>) {
    if let Err(e) = listen.parse::<SocketAddr>() {
        out.push(Problem::new(
            "listen",
            format!(
                "{listen:?} is not an IP address and port ({e}); \
                 use e.g. \"0.0.0.0:5432\", \"127.0.0.1:6432\" or \"[::]:5432\" (host names are not resolved)"
            ),
        ));
    }
}

fn check_limits(config: &Config, out: &mut Vec<Problem>) {
    let size = config.limits.max_message_size;
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&size) {
        out.push(Problem::new(
            "limits.max_message_size",
            format!(
                "must be between {MIN_MESSAGE_SIZE} and {MAX_MESSAGE_SIZE} bytes, got {size}; \
                 remove it to use the default of 1073741824 (1 GiB)"
            ),
        ));
    }
    if config.limits.client_buffer_budget < 1 << 20 {
        out.push(Problem::new(
            "limits.client_buffer_budget",
            format!(
                "must be at least 1048576 (1 MiB), got {}; set it to the bytes of client messages pgsplit may buffer at once, e.g. 268435456",
                config.limits.client_buffer_budget
            ),
        ));
    }
    if config.limits.max_client_connections == 0 {
        out.push(Problem::new(
            "limits.max_client_connections",
            "must be at least 1, got 0; set it to the most clients pgsplit should serve at once",
        ));
    }
}

fn check_timeouts(config: &Config, out: &mut Vec<Problem>) {
    let t = &config.timeouts;
    for (name, value) in [
        ("connect", t.connect),
        ("client_startup", t.client_startup),
        ("cancel", t.cancel),
    ] {
        if value == Duration::ZERO {
            out.push(Problem::new(
                format!("timeouts.{name}"),
                "must be greater than zero; use a duration such as \"5s\" or \"500ms\"",
            ));
        }
    }
}

fn check_backends(backends: &[Backend], out: &mut Vec<Problem>) {
    if backends.is_empty() {
        out.push(Problem::new(
            "backends",
            "no backend configured; add a [[backends]] table with name, host and port",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut primary: Option<usize> = None;
    for (i, b) in backends.iter().enumerate() {
        let key = |field: &str| format!("backends[{i}].{field}");
        if b.name.is_empty() {
            out.push(Problem::new(
                key("name"),
                "must not be empty; give each backend a short unique name such as \"primary\" or \"replica1\"",
            ));
        } else if !b
            .name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            // Names end up in metric labels and admin output, where spaces
            // and punctuation need quoting.
            out.push(Problem::new(
                key("name"),
                format!(
                    "{:?} contains characters other than ASCII letters, digits, '_' and '-'; \
                     rename it, e.g. \"replica-1\"",
                    b.name
                ),
            ));
        } else if let Some(first) = first_use(&mut names, &b.name, i) {
            out.push(Problem::new(
                key("name"),
                format!(
                    "{:?} is already used by backends[{first}]; give each backend a unique name",
                    b.name
                ),
            ));
        }
        if b.host.is_empty() {
            out.push(Problem::new(
                key("host"),
                "must not be empty; set it to the host name or IP address of the PostgreSQL server",
            ));
        }
        if b.port == 0 {
            out.push(Problem::new(
                key("port"),
                "must be between 1 and 65535, got 0; set it to the port the PostgreSQL server listens on",
            ));
        }
        if b.role == RoleHint::Primary {
            match primary {
                None => primary = Some(i),
                Some(first) => out.push(Problem::new(
                    key("role"),
                    format!(
                        "backends[{first}] already has the \"primary\" hint and only one backend can; \
                         set role = \"replica\" on the others (the health loop finds the real primary anyway)"
                    ),
                )),
            }
        }
    }
}

fn check_users(users: &[User], lookups: bool, out: &mut Vec<Problem>) {
    if users.is_empty() {
        out.push(Problem::new(
            "users",
            "no user configured; add a [[users]] table with name, password and auth",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, u) in users.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        if u.name.is_empty() {
            out.push(Problem::new(
                key("name"),
                "must not be empty; set it to the user name clients log in with",
            ));
        } else if let Some(first) = first_use(&mut names, &u.name, i) {
            out.push(Problem::new(
                key("name"),
                format!(
                    "{:?} is already used by users[{first}]; merge the two entries or rename one",
                    u.name
                ),
            ));
        }
        if u.server_user.as_deref() == Some("") {
            out.push(Problem::new(
                key("server_user"),
                "must not be empty; remove it to log in to the backends as the user's name",
            ));
        }
        check_password(u, &key("password"), out);
        check_client_auth(u, &key("password"), lookups, out);
        check_server_password(u, i, out);
    }
}

/// The stored form itself, independent of how it is used.
fn check_password(u: &User, key: &str, out: &mut Vec<Problem>) {
    let Some(password) = &u.password else { return };
    if password.expose().is_empty() {
        out.push(Problem::new(
            key,
            "must not be empty (PostgreSQL treats an empty password as none); \
             set a password or remove the key",
        ));
    } else if password.kind() == PasswordKind::ScramVerifier {
        if let Err(why) = check_scram_verifier(password.expose()) {
            out.push(Problem::new(
                key,
                format!(
                    "starts with \"SCRAM-SHA-256$\" but is not a valid SCRAM verifier: {why}; \
                     copy it unchanged from pg_authid.rolpassword \
                     (SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>, base64 parts)"
                ),
            ));
        }
    }
}

/// Whether the stored form can verify the configured client auth method.
fn check_client_auth(u: &User, key: &str, lookups: bool, out: &mut Vec<Problem>) {
    let kind = u.password.as_ref().map(Secret::kind);
    let problem = match (u.auth, kind) {
        (AuthMethod::Trust, _) => None,
        // Looked up in PostgreSQL at login ([auth_query]).
        (_, None) if lookups => None,
        (AuthMethod::ScramSha256, None) => Some(
            "required because auth = \"scram-sha-256\"; set the plaintext password or the \
             SCRAM verifier from pg_authid.rolpassword, or configure [auth_query] to look it \
             up in PostgreSQL, or set auth = \"trust\""
                .to_string(),
        ),
        (AuthMethod::ScramSha256, Some(PasswordKind::Md5Hash)) => Some(
            "is an md5 hash, which cannot verify a SCRAM-SHA-256 login (SCRAM needs the \
             plaintext or a SCRAM verifier); set one of those, or set auth = \"md5\""
                .to_string(),
        ),
        (AuthMethod::Md5, None) => Some(
            "required because auth = \"md5\"; set the plaintext password or its md5 hash \
             (\"md5\" + md5(password || user name)), or configure [auth_query] to look it \
             up in PostgreSQL, or set auth = \"trust\""
                .to_string(),
        ),
        (AuthMethod::Md5, Some(PasswordKind::ScramVerifier)) => Some(
            "is a SCRAM verifier, which cannot verify an md5 login (md5 needs the plaintext \
             or its md5 hash); set one of those, or set auth = \"scram-sha-256\""
                .to_string(),
        ),
        _ => None,
    };
    if let Some(message) = problem {
        out.push(Problem::new(key, message));
    }
}

/// pgsplit logs in to backends as an ordinary client, which takes the
/// plaintext: a verifier or hash only lets you check someone else's proof.
fn check_server_password(u: &User, i: usize, out: &mut Vec<Problem>) {
    let key = format!("users[{i}].server_password");
    match (&u.server_password, u.password.as_ref().map(Secret::kind)) {
        (Some(sp), _) if sp.kind() != PasswordKind::Plain => {
            let what = describe(sp.kind());
            out.push(Problem::new(
                key,
                format!(
                    "is {what}, but pgsplit needs the plaintext to log in to a backend; \
                     set server_password to the role's plaintext password"
                ),
            ));
        }
        (Some(sp), _) if sp.expose().is_empty() => {
            out.push(Problem::new(
                key,
                "must not be empty; set the role's plaintext password, or remove the key \
                 if the backends let this role in without one",
            ));
        }
        (None, Some(kind)) if kind != PasswordKind::Plain => {
            let what = describe(kind);
            out.push(Problem::new(
                key,
                format!(
                    "required because users[{i}].password is {what}, which cannot be used to log in \
                     to a backend; set server_password to the role's plaintext password"
                ),
            ));
        }
        _ => {}
    }
}

/// Records `name` as used by entry `i`; returns the earlier entry if any.
fn first_use<'a>(seen: &mut HashMap<&'a str, usize>, name: &'a str, i: usize) -> Option<usize> {
    match seen.entry(name) {
        Entry::Occupied(e) => Some(*e.get()),
        Entry::Vacant(e) => {
            e.insert(i);
            None
        }
    }
}

fn describe(kind: PasswordKind) -> &'static str {
    match kind {
        PasswordKind::Plain => "a plaintext password",
        PasswordKind::ScramVerifier => "a SCRAM verifier",
        PasswordKind::Md5Hash => "an md5 hash",
    }
}

fn check_routing(config: &Config, out: &mut Vec<Problem>) {
    let r = &config.routing;
    for (list, names) in [
        ("write_functions", &r.write_functions),
        ("read_functions", &r.read_functions),
    ] {
        for (i, name) in names.iter().enumerate() {
            let ok = !name.is_empty()
                && name.split('.').count() <= 2
                && name.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                });
            if !ok {
                out.push(Problem::new(
                    format!("routing.{list}[{i}]"),
                    format!("{name:?} is not a function name; write it as \"name\" or \"schema.name\" without arguments or quotes"),
                ));
            }
        }
    }
    for name in &r.write_functions {
        if r.read_functions
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            out.push(Problem::new(
                "routing.read_functions",
                format!("{name:?} is listed in both write_functions and read_functions; keep it in only one"),
            ));
        }
    }
    if r.position_interval.is_zero() {
        out.push(Problem::new(
            "routing.position_interval",
            "must be above zero; write it like \"50ms\"",
        ));
    }
    if r.primary_reads == crate::PrimaryReads::Off && config.backends.len() == 1 {
        out.push(Problem::new(
            "routing.primary_reads",
            "is \"off\" but there is only one backend, so reads could never be served; add replicas or use \"fallback\"",
        ));
    }
}

fn check_health(config: &Config, out: &mut Vec<Problem>) {
    let h = &config.health;
    positive_durations(
        &[
            ("health.health_check_period", h.health_check_period),
            ("health.health_check_timeout", h.health_check_timeout),
            ("health.promote_after", h.promote_after),
        ],
        "1s",
        out,
    );
    if h.health_check_max_retries == 0 {
        out.push(Problem::new(
            "health.health_check_max_retries",
            "must be at least 1: it is how many failed checks in a row mark a server down",
        ));
    }
    if h.health_check_database.is_empty() {
        out.push(Problem::new(
            "health.health_check_database",
            "is empty; name a database every server has, like \"postgres\"",
        ));
    }
    if h.health_check_password.is_some() && h.health_check_user.is_none() {
        out.push(Problem::new(
            "health.health_check_password",
            "is set without health.health_check_user; set the user too, or drop the password to use the first [[users]] entry",
        ));
    }
}

fn check_pool(config: &Config, out: &mut Vec<Problem>) {
    let p = &config.pool;
    if p.pool_size == 0 {
        out.push(Problem::new(
            "pool.pool_size",
            "must be at least 1; set it to the number of server connections each backend may take per database and user",
        ));
    }
    if p.min_idle > p.pool_size {
        out.push(Problem::new(
            "pool.min_idle",
            format!(
                "{} is above pool.pool_size ({}); lower it or raise pool_size",
                p.min_idle, p.pool_size
            ),
        ));
    }
    positive_durations(
        &[
            ("pool.checkout_timeout", p.checkout_timeout),
            ("pool.server_idle_timeout", p.server_idle_timeout),
            ("pool.server_lifetime", p.server_lifetime),
        ],
        "10s",
        out,
    );
    if p.max_prepared_statements == 0 {
        out.push(Problem::new(
            "pool.max_prepared_statements",
            "must be at least 1; prepared statements are cached per server connection",
        ));
    }
}

/// Durations that must be above zero; `example` shows how to write one.
fn positive_durations(keys: &[(&str, std::time::Duration)], example: &str, out: &mut Vec<Problem>) {
    for (key, d) in keys {
        if d.is_zero() {
            out.push(Problem::new(
                *key,
                format!("must be above zero; write it like \"{example}\""),
            ));
        }
    }
}
