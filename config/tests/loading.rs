//! The figment layers: defaults, TOML file, `PGSPLIT_*` env, and how their
//! errors read. Anything that reads the process environment runs inside a
//! `Jail`, which serialises those tests and starts each from an empty env.

// `Jail::expect_with` fixes the closure's error type to `figment::Error`.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::{Figment, Jail};
use pgsplit_config::{AuthMethod, Config, ConfigError, PasswordKind, RoleHint, Secret};

const MINIMAL: &str = r#"
[[backends]]
name = "pg"
host = "db.internal"

[[users]]
name = "app"
password = "s3cret-plain"
"#;

fn load_err(path: Option<&str>) -> String {
    match Config::load(path.map(Path::new)) {
        Err(ConfigError::Load(message)) => message,
        other => panic!("expected a load error, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let config = Config::default();
    assert_eq!(config.listen, "0.0.0.0:5432");
    assert_eq!(config.limits.max_message_size, 1 << 30);
    assert_eq!(config.limits.max_client_connections, 10_000);
    assert_eq!(config.timeouts.connect, Duration::from_secs(5));
    assert_eq!(config.timeouts.client_startup, Duration::from_secs(15));
    assert_eq!(config.timeouts.cancel, Duration::from_secs(5));
    assert!(config.backends.is_empty() && config.users.is_empty());

    Jail::expect_with(|jail| {
        jail.clear_env();
        let extracted: Config = Config::figment(None).extract()?;
        assert_eq!(extracted, Config::default());
        // Defaults alone lack backends and users.
        let err = Config::load(None).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["backends", "users"]);
        Ok(())
    });
}

#[test]
fn field_defaults_fill_partial_tables() {
    let config = Config::from_figment(Figment::from(Toml::string(MINIMAL))).unwrap();
    let b = &config.backends[0];
    assert_eq!((b.port, b.role, b.weight), (5432, RoleHint::Replica, 1));
    let u = config.user("app").unwrap();
    assert_eq!(u.auth, AuthMethod::ScramSha256);
    assert_eq!(u.server_user(), "app");
    assert_eq!(u.server_password(), Some("s3cret-plain"));
}

#[test]
fn toml_file_is_read() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "pgsplit.toml",
            &format!(
                "listen = \"127.0.0.1:7000\"\n\
                 [limits]\nmax_client_connections = 42\n\
                 [timeouts]\nconnect = \"250ms\"\nclient_startup = \"1m 30s\"\n\
                 {MINIMAL}\
                 auth = \"md5\"\nserver_user = \"app_rw\"\n"
            ),
        )?;
        let config = Config::load(Some(Path::new("pgsplit.toml"))).unwrap();
        assert_eq!(config.listen_addr(), "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.limits.max_client_connections, 42);
        assert_eq!(config.limits.max_message_size, 1 << 30);
        assert_eq!(config.timeouts.connect, Duration::from_millis(250));
        assert_eq!(config.timeouts.client_startup, Duration::from_secs(90));
        assert_eq!(config.timeouts.cancel, Duration::from_secs(5));
        assert_eq!(config.backends[0].host, "db.internal");
        let u = &config.users[0];
        assert_eq!((u.auth, u.server_user()), (AuthMethod::Md5, "app_rw"));
        Ok(())
    });
}

#[test]
fn env_overrides_file_including_nested_keys() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "pgsplit.toml",
            &format!("listen = \"127.0.0.1:7000\"\n{MINIMAL}"),
        )?;
        jail.set_env("PGSPLIT_LISTEN", "127.0.0.1:6432");
        jail.set_env("PGSPLIT_LIMITS__MAX_CLIENT_CONNECTIONS", "500");
        jail.set_env("PGSPLIT_TIMEOUTS__CANCEL", "750ms");
        // Left to the binary: must not be taken for unknown config keys.
        jail.set_env("PGSPLIT_CONFIG", "pgsplit.toml");
        jail.set_env("PGSPLIT_LOG", "debug");
        let config = Config::load(Some(Path::new("pgsplit.toml"))).unwrap();
        assert_eq!(config.listen, "127.0.0.1:6432");
        assert_eq!(config.limits.max_client_connections, 500);
        assert_eq!(config.timeouts.cancel, Duration::from_millis(750));
        assert_eq!(config.timeouts.connect, Duration::from_secs(5));
        assert_eq!(config.backends[0].name, "pg");
        Ok(())
    });
}

#[test]
fn env_can_supply_whole_arrays() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env(
            "PGSPLIT_BACKENDS",
            r#"[{name = "pg", host = "h", port = 5433}]"#,
        );
        jail.set_env("PGSPLIT_USERS", r#"[{name = "app", auth = "trust"}]"#);
        let config = Config::load(None).unwrap();
        assert_eq!(config.backends[0].port, 5433);
        assert_eq!(config.users[0].auth, AuthMethod::Trust);
        Ok(())
    });
}

#[test]
fn example_file_loads_and_validates() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pgsplit.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        let ports: Vec<u16> = config.backends.iter().map(|b| b.port).collect();
        assert_eq!(ports, [5433, 5434, 5435]);
        let primaries = config
            .backends
            .iter()
            .filter(|b| b.role == RoleHint::Primary);
        assert_eq!(primaries.count(), 1);
        assert!(config.backends.iter().all(|b| b.host == "127.0.0.1"));
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.users[0].name, "app");
        assert_eq!(config.users[0].auth, AuthMethod::ScramSha256);
        Ok(())
    });
}

#[test]
fn unknown_key_in_file_is_named() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "a.toml",
            &format!("[limits]\nmax_conections = 5\n{MINIMAL}"),
        )?;
        let message = load_err(Some("a.toml"));
        assert!(
            message.starts_with("limits.max_conections: unknown key (in a.toml)"),
            "{message}"
        );
        assert!(message.contains("max_client_connections"), "{message}");

        jail.create_file("b.toml", &format!("{MINIMAL}pasword = \"x\"\n"))?;
        let message = load_err(Some("b.toml"));
        assert!(
            message.starts_with("users[0].pasword: unknown key (in b.toml)"),
            "{message}"
        );

        jail.create_file("c.toml", "bogus = 1\n")?;
        assert!(load_err(Some("c.toml")).starts_with("bogus: unknown key"));
        Ok(())
    });
}

#[test]
fn unknown_key_in_env_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("PGSPLIT_TIMEOUTS__CONECT", "1s");
        let message = load_err(None);
        assert!(
            message.starts_with(
                "timeouts.conect: unknown key (from environment variable PGSPLIT_TIMEOUTS__CONECT)"
            ),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn bad_duration_is_rejected_with_source() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("a.toml", "[timeouts]\nconnect = \"5 parsecs\"\n")?;
        let message = load_err(Some("a.toml"));
        assert!(
            message.starts_with("timeouts.connect: expected a duration"),
            "{message}"
        );
        assert!(message.contains("\"5 parsecs\" (in a.toml)"), "{message}");
        assert!(message.contains("\"250ms\""), "{message}");

        jail.create_file("b.toml", "[timeouts]\ncancel = 5\n")?;
        assert!(load_err(Some("b.toml")).starts_with("timeouts.cancel: expected a duration"));

        jail.set_env("PGSPLIT_TIMEOUTS__CLIENT_STARTUP", "soon");
        let message = load_err(None);
        assert!(
            message.contains("(from environment variable PGSPLIT_TIMEOUTS__CLIENT_STARTUP)"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn wrong_types_and_values_are_named() {
    let err = |toml: &str| match Config::from_figment(Figment::from(Toml::string(toml))) {
        Err(ConfigError::Load(message)) => message,
        other => panic!("expected a load error, got {other:?}"),
    };
    let message = err("[[backends]]\nname = \"a\"\nhost = \"h\"\nport = 70000\n");
    assert!(
        message.starts_with("backends[0].port: expected an integer from 0 to 65535"),
        "{message}"
    );
    let message = err("[[backends]]\nname = \"a\"\nhost = \"h\"\nrole = \"leader\"\n");
    assert!(
        message.starts_with("backends[0].role: unknown value \"leader\""),
        "{message}"
    );
    assert!(message.contains("primary, replica"), "{message}");
    let message = err("[[users]]\nname = \"a\"\nauth = \"scram\"\n");
    assert!(message.contains("scram-sha-256, md5, trust"), "{message}");
    let message = err("[[backends]]\nname = \"a\"\n");
    assert!(
        message.starts_with("backends[0].host: missing"),
        "{message}"
    );
}

#[test]
fn missing_or_malformed_file_is_reported() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        assert!(load_err(Some("nowhere.toml")).starts_with("config file nowhere.toml: "));
        jail.create_file("broken.toml", "listen = \n")?;
        let message = load_err(Some("broken.toml"));
        assert!(
            message.starts_with("config file broken.toml: TOML parse error at line 1"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn masked_toml_hides_every_secret_and_round_trips() {
    let verifier = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$\
        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:\
        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let mut config = Config::from_figment(Figment::from(Toml::string(MINIMAL))).unwrap();
    let mut second = config.users[0].clone();
    second.name = "reporting".into();
    second.password = Some(Secret::new(verifier));
    second.server_password = Some(Secret::new("backend-pw"));
    config.users.push(second);
    config.validate().unwrap();

    let masked = config.to_masked_toml();
    for secret in [
        "s3cret-plain",
        "backend-pw",
        "c2FsdHNhbHQ",
        "SCRAM-SHA-256$",
    ] {
        assert!(!masked.contains(secret), "{secret} leaked:\n{masked}");
    }
    assert_eq!(masked.matches("\"********\"").count(), 3, "{masked}");
    assert!(masked.contains("auth = \"scram-sha-256\""), "{masked}");
    assert!(!format!("{config:?}").contains("s3cret-plain"));

    // Everything but the secrets survives the trip.
    let back: Config = Figment::from(Toml::string(&masked)).extract().unwrap();
    assert_eq!(back.backends, config.backends);
    assert_eq!(back.timeouts, config.timeouts);
    assert_eq!(back.users[1].server_user(), "reporting");
    assert_eq!(
        back.users[1].password.as_ref().map(Secret::kind),
        Some(PasswordKind::Plain)
    );
}
