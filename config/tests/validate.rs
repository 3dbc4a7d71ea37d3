//! Every cross-field rule of `Config::validate`, on configs built in code.

use std::time::Duration;

use figment::providers::Format;

mod common;

use common::{problems, user};
use pgsplit_config::{AuthMethod, Backend, Config, RoleHint, Secret};

const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$\
    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:\
    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const MD5: &str = "md5d41d8cd98f00b204e9800998ecf8427e";

fn backend(name: &str, port: u16, role: RoleHint) -> Backend {
    Backend {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        role,
        ..Backend::default()
    }
}

fn valid() -> Config {
    Config {
        listen: "127.0.0.1:6432".into(),
        backends: vec![
            backend("primary", 5433, RoleHint::Primary),
            backend("replica1", 5434, RoleHint::Replica),
            backend("replica2", 5435, RoleHint::Replica),
        ],
        users: vec![user("app", AuthMethod::ScramSha256, Some("secret"))],
        ..Config::default()
    }
}

/// Asserts exactly one problem, at `key`, whose message contains `fragment`.
#[track_caller]
fn assert_only_problem(config: &Config, key: &str, fragment: &str) {
    let found = problems(config);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    assert_eq!(found[0].key, key);
    assert!(
        found[0].message.contains(fragment),
        "{:?} lacks {fragment:?}",
        found[0].message
    );
}

#[test]
fn valid_config_passes_and_exposes_helpers() {
    let config = valid();
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.listen_addr(), "127.0.0.1:6432".parse().unwrap());
    assert_eq!(config.user("app").map(|u| u.server_user()), Some("app"));
    assert!(config.user("nobody").is_none());
}

#[test]
fn listen_must_be_a_socket_address() {
    let mut config = valid();
    config.listen = "localhost:5432".into();
    assert_only_problem(
        &config,
        "listen",
        "\"localhost:5432\" is not an IP address and port",
    );
    config.listen = "[::1]:6432".into();
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn max_message_size_bounds() {
    let mut config = valid();
    config.limits.max_message_size = 8191;
    assert_only_problem(&config, "limits.max_message_size", "got 8191");
    config.limits.max_message_size = 8192;
    assert_eq!(config.validate(), Ok(()));
    config.limits.max_message_size = i32::MAX as usize + 1;
    assert_only_problem(
        &config,
        "limits.max_message_size",
        "between 8192 and 2147483647",
    );
}

#[test]
fn max_client_connections_at_least_one() {
    let mut config = valid();
    config.limits.max_client_connections = 0;
    assert_only_problem(
        &config,
        "limits.max_client_connections",
        "must be at least 1, got 0",
    );
}

#[test]
fn durations_must_be_positive() {
    let mut config = valid();
    config.timeouts.connect = Duration::ZERO;
    config.timeouts.client_startup = Duration::ZERO;
    config.timeouts.cancel = Duration::ZERO;
    let keys: Vec<String> = problems(&config).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "timeouts.connect",
            "timeouts.client_startup",
            "timeouts.cancel"
        ]
    );
    config.timeouts.cancel = Duration::from_millis(1);
    assert!(problems(&config)[0].message.contains("greater than zero"));
}

#[test]
fn at_least_one_backend() {
    let mut config = valid();
    config.backends.clear();
    assert_only_problem(
        &config,
        "backends",
        "no backend configured; add a [[backends]] table with name, host and port",
    );
}

#[test]
fn backend_names_non_empty_charset_unique() {
    let mut config = valid();
    config.backends[1].name = String::new();
    assert_only_problem(&config, "backends[1].name", "must not be empty");

    config.backends[1].name = "replica 1".into();
    assert_only_problem(&config, "backends[1].name", "other than ASCII letters");

    config.backends[1].name = "replica_1-a".into();
    config.backends[2].name = "primary".into();
    assert_only_problem(&config, "backends[2].name", "already used by backends[0]");
}

#[test]
fn backend_host_non_empty() {
    let mut config = valid();
    config.backends[0].host = String::new();
    assert_only_problem(&config, "backends[0].host", "must not be empty");
}

#[test]
fn backend_port_non_zero() {
    let mut config = valid();
    config.backends[1].port = 0;
    let err = config.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "backends[1].port: must be between 1 and 65535, got 0; \
         set it to the port the PostgreSQL server listens on"
    );
}

#[test]
fn at_most_one_primary_hint() {
    let mut config = valid();
    config.backends[2].role = RoleHint::Primary;
    assert_only_problem(&config, "backends[2].role", "only one backend can");
    // No primary hint at all is fine: the health loop will find one.
    for b in &mut config.backends {
        b.role = RoleHint::Replica;
    }
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn health_settings_are_checked() {
    let mut config = valid();
    config.health.health_check_period = Duration::ZERO;
    assert_only_problem(&config, "health.health_check_period", "above zero");
    let mut config = valid();
    config.health.health_check_max_retries = 0;
    assert_only_problem(&config, "health.health_check_max_retries", "at least 1");
    let mut config = valid();
    config.health.health_check_password = Some(Secret::new("x"));
    assert_only_problem(
        &config,
        "health.health_check_password",
        "without health.health_check_user",
    );
    config.health.health_check_user = Some("monitor".into());
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn at_least_one_user() {
    let mut config = valid();
    config.users.clear();
    assert_only_problem(&config, "users", "no user configured");
}

#[test]
fn user_names_non_empty_and_unique() {
    let mut config = valid();
    config.users.push(user("", AuthMethod::Trust, None));
    assert_only_problem(&config, "users[1].name", "must not be empty");
    config.users[1].name = "app".into();
    assert_only_problem(&config, "users[1].name", "already used by users[0]");
}

#[test]
fn scram_needs_plain_or_verifier() {
    let mut config = valid();
    config.users[0] = user("app", AuthMethod::ScramSha256, None);
    assert_only_problem(
        &config,
        "users[0].password",
        "required because auth = \"scram-sha-256\"",
    );

    config.users[0] = user("app", AuthMethod::ScramSha256, Some(MD5));
    config.users[0].server_password = Some(Secret::new("pw"));
    assert_only_problem(
        &config,
        "users[0].password",
        "md5 hash, which cannot verify a SCRAM-SHA-256 login",
    );

    config.users[0].password = Some(Secret::new(VERIFIER));
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn md5_needs_plain_or_hash() {
    let mut config = valid();
    config.users[0] = user("app", AuthMethod::Md5, None);
    assert_only_problem(
        &config,
        "users[0].password",
        "required because auth = \"md5\"",
    );

    config.users[0] = user("app", AuthMethod::Md5, Some(VERIFIER));
    config.users[0].server_password = Some(Secret::new("pw"));
    assert_only_problem(
        &config,
        "users[0].password",
        "SCRAM verifier, which cannot verify an md5 login",
    );

    config.users[0].password = Some(Secret::new(MD5));
    assert_eq!(config.validate(), Ok(()));
    config.users[0].password = Some(Secret::new("plain"));
    config.users[0].server_password = None;
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn trust_needs_no_password() {
    let mut config = valid();
    config.users[0] = user("app", AuthMethod::Trust, None);
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.users[0].server_password(), None);
}

#[test]
fn malformed_verifier_is_reported() {
    let mut config = valid();
    config.users[0].password = Some(Secret::new("SCRAM-SHA-256$4096:c2FsdA==$AA==:AA=="));
    config.users[0].server_password = Some(Secret::new("pw"));
    assert_only_problem(
        &config,
        "users[0].password",
        "not a valid SCRAM verifier: the storedkey decodes to 1 bytes",
    );
}

#[test]
fn verifier_without_server_password() {
    let mut config = valid();
    config.users[0].password = Some(Secret::new(VERIFIER));
    let err = config.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "users[0].server_password: required because users[0].password is a SCRAM verifier, \
         which cannot be used to log in to a backend; \
         set server_password to the role's plaintext password"
    );
}

#[test]
fn md5_hash_without_server_password() {
    let mut config = valid();
    config.users[0] = user("app", AuthMethod::Md5, Some(MD5));
    assert_only_problem(
        &config,
        "users[0].server_password",
        "users[0].password is an md5 hash",
    );
}

#[test]
fn server_password_must_be_plaintext_and_non_empty() {
    let mut config = valid();
    config.users[0].server_password = Some(Secret::new(VERIFIER));
    assert_only_problem(
        &config,
        "users[0].server_password",
        "is a SCRAM verifier, but pgsplit needs the plaintext",
    );
    config.users[0].server_password = Some(Secret::new(""));
    assert_only_problem(&config, "users[0].server_password", "must not be empty");
}

#[test]
fn empty_password_and_server_user_rejected() {
    let mut config = valid();
    config.users[0].auth = AuthMethod::Trust;
    config.users[0].password = Some(Secret::new(""));
    assert_only_problem(&config, "users[0].password", "must not be empty");
    config.users[0].password = None;
    config.users[0].server_user = Some(String::new());
    assert_only_problem(&config, "users[0].server_user", "must not be empty");
}

#[test]
fn all_problems_are_collected_one_line_each() {
    let config = Config {
        listen: "nope".into(),
        backends: vec![
            backend("a", 0, RoleHint::Primary),
            backend("a", 1, RoleHint::Primary),
        ],
        users: vec![user("u", AuthMethod::Md5, None)],
        ..Config::default()
    };
    let err = config.validate().unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listen",
            "backends[0].port",
            "backends[1].name",
            "backends[1].role",
            "users[0].password",
        ]
    );
    let text = err.to_string();
    assert_eq!(text.lines().count(), 5);
    assert!(text
        .lines()
        .all(|line| line.contains(": ") && line.contains("; ")));
}

#[test]
fn routing_function_lists_are_checked() {
    let mut c = valid();
    c.routing.write_functions = vec!["audit.log_event".into(), "bad name()".into()];
    c.routing.read_functions = vec!["AUDIT.LOG_EVENT".into()];
    let problems = problems(&c);
    assert!(
        problems
            .iter()
            .any(|p| p.key == "routing.write_functions[1]"
                && p.message.contains("not a function name")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.key == "routing.read_functions" && p.message.contains("both")),
        "{problems:?}"
    );
}

#[test]
fn routing_loads_from_toml_with_defaults() {
    let c: Config =
        figment::Figment::from(figment::providers::Serialized::defaults(Config::default()))
            .merge(figment::providers::Toml::string(
                "[routing]\nstrategy = \"least_connections\"\nprimary_reads = \"on\"\n",
            ))
            .extract()
            .unwrap();
    assert_eq!(
        c.routing.strategy,
        pgsplit_config::Strategy::LeastConnections
    );
    assert_eq!(c.routing.primary_reads, pgsplit_config::PrimaryReads::On);
    assert_eq!(
        Config::default().routing.primary_reads,
        pgsplit_config::PrimaryReads::Fallback
    );
    assert_eq!(
        Config::default().routing.strategy,
        pgsplit_config::Strategy::RoundRobin
    );
}

#[test]
fn pool_settings_are_checked() {
    let mut c = valid();
    c.pool.pool_size = 0;
    c.pool.min_idle = 3;
    c.pool.checkout_timeout = Duration::ZERO;
    c.pool.max_prepared_statements = 0;
    let problems = problems(&c);
    for key in [
        "pool.pool_size",
        "pool.min_idle",
        "pool.checkout_timeout",
        "pool.max_prepared_statements",
    ] {
        assert!(problems.iter().any(|p| p.key == key), "{key}: {problems:?}");
    }
    assert_eq!(
        Config::default().pool.mode,
        pgsplit_config::PoolMode::Transaction
    );
    assert_eq!(Config::default().pool.pool_size, 20);
}

#[test]
fn tls_needs_a_certificate_with_its_key_and_files_that_exist() {
    use pgsplit_config::ClientTls;
    assert_eq!(Config::default().tls.client_mode(), ClientTls::Disable);
    let mut c = valid();
    c.tls.client_tls = Some(ClientTls::Require);
    assert_only_problem(&c, "tls.client_tls", "needs a certificate");
    let mut c = valid();
    c.tls.client_cert_file = Some("/nonexistent/server.pem".into());
    assert_eq!(
        c.tls.client_mode(),
        ClientTls::Allow,
        "on once a certificate is set"
    );
    let problems = problems(&c);
    assert!(
        problems
            .iter()
            .any(|p| p.key == "tls.client_key_file" && p.message.contains("is missing")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.key == "tls.client_cert_file" && p.message.contains("cannot read")),
        "{problems:?}"
    );
    let mut c = valid();
    c.tls.client_tls = Some(ClientTls::Disable);
    c.tls.client_cert_file = Some("/nonexistent/server.pem".into());
    c.tls.client_key_file = Some("/nonexistent/server.key".into());
    assert_eq!(c.tls.client_mode(), ClientTls::Disable);
}

#[test]
fn verifying_servers_needs_their_ca_file() {
    use pgsplit_config::ServerTls;
    assert_eq!(
        Config::default().tls.server_tls,
        ServerTls::Prefer,
        "libpq's default"
    );
    let mut c = valid();
    c.tls.server_tls = ServerTls::VerifyFull;
    assert_only_problem(&c, "tls.server_tls", "server_root_cert_file");
    let mut c = valid();
    c.backends[1].server_tls = Some(ServerTls::VerifyCa);
    assert_only_problem(&c, "backends[1].server_tls", "server_root_cert_file");
    let mut c = valid();
    c.tls.server_cert_file = Some("/nonexistent/pgsplit.pem".into());
    let problems = problems(&c);
    assert!(
        problems.iter().any(|p| p.key == "tls.server_key_file"),
        "{problems:?}"
    );
    // A backend's own mode is read from TOML with libpq's spelling.
    let toml = "name = \"a\"\nhost = \"h\"\nserver_tls = \"verify-full\"\n";
    let b: Backend = figment::Figment::from(figment::providers::Toml::string(toml))
        .extract()
        .unwrap();
    assert_eq!(b.server_tls, Some(ServerTls::VerifyFull));
}

#[test]
fn metrics_cannot_take_the_client_port() {
    for (listen, metrics) in [
        ("127.0.0.1:6432", "127.0.0.1:6432"),
        ("0.0.0.0:6432", "127.0.0.1:6432"),
        ("127.0.0.1:6432", "0.0.0.0:6432"),
    ] {
        let mut c = valid();
        c.listen = listen.into();
        c.metrics_listen = Some(metrics.into());
        assert_only_problem(&c, "metrics_listen", "takes the port clients connect to");
    }
    for (listen, metrics) in [
        ("127.0.0.1:6432", "127.0.0.1:9187"),
        ("127.0.0.1:6432", "127.0.0.2:6432"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let mut c = valid();
        c.listen = listen.into();
        c.metrics_listen = Some(metrics.into());
        assert_eq!(c.validate(), Ok(()), "{listen} and {metrics}");
    }
}

#[test]
fn absurd_thread_counts_are_refused() {
    let mut c = valid();
    c.worker_threads = 100_000;
    assert_only_problem(&c, "worker_threads", "at most 1024");
    c.worker_threads = 1024;
    assert_eq!(c.validate(), Ok(()));
}
