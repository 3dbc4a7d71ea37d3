//! `[auth_query]` and the wildcard user entry: which configs validate, and
//! what the refusals say.

mod common;

use common::{problems, user};
use pgsplit_config::{AuthMethod, AuthQuery, Config, Secret, User};

fn with_users(users: Vec<User>, lookups: bool) -> Config {
    Config {
        listen: "127.0.0.1:6432".into(),
        backends: vec![pgsplit_config::Backend {
            name: "primary".into(),
            host: "127.0.0.1".into(),
            port: 5433,
            ..pgsplit_config::Backend::default()
        }],
        users,
        auth_query: AuthQuery {
            user: lookups.then(|| "pgsplit_auth".into()),
            ..AuthQuery::default()
        },
        ..Config::default()
    }
}

#[track_caller]
fn assert_problems(config: &Config, want: &[(&str, &str)]) {
    let found = problems(config);
    assert_eq!(found.len(), want.len(), "{found:#?}");
    for (p, (key, fragment)) in found.iter().zip(want) {
        assert_eq!(p.key, *key, "{found:#?}");
        assert!(
            p.message.contains(fragment),
            "{:?} lacks {fragment:?}",
            p.message
        );
    }
}

#[test]
fn a_user_without_password_needs_lookups() {
    for auth in [AuthMethod::ScramSha256, AuthMethod::Md5] {
        let config = with_users(vec![user("app", auth, None)], false);
        assert_problems(&config, &[("users[0].password", "configure [auth_query]")]);
        let config = with_users(vec![user("app", auth, None)], true);
        assert_eq!(config.validate(), Ok(()));
    }
}

#[test]
fn the_wildcard_entry_names_no_secret_and_no_right() {
    let mut wildcard = user("*", AuthMethod::ScramSha256, None);
    let config = with_users(vec![wildcard.clone()], true);
    assert_eq!(config.validate(), Ok(()));

    wildcard.password = Some(Secret::new("pw"));
    wildcard.server_user = Some("someone".into());
    wildcard.admin = true;
    let config = with_users(vec![wildcard], true);
    let fragment = "cannot be set on the wildcard entry";
    assert_problems(
        &config,
        &[
            ("users[0].password", fragment),
            ("users[0].server_user", fragment),
            ("users[0].admin", fragment),
        ],
    );
}

#[test]
fn the_wildcard_entry_needs_lookups_unless_it_trusts() {
    let config = with_users(vec![user("*", AuthMethod::ScramSha256, None)], false);
    let found = problems(&config);
    assert!(
        found
            .iter()
            .any(|p| p.key == "users[0].name" && p.message.contains("needs [auth_query]")),
        "{found:#?}"
    );
    let config = with_users(vec![user("*", AuthMethod::Trust, None)], false);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn a_named_entry_wins_over_the_wildcard() {
    let config = with_users(
        vec![
            user("*", AuthMethod::ScramSha256, None),
            user("app", AuthMethod::Md5, Some("pw")),
        ],
        true,
    );
    config.validate().unwrap();
    assert_eq!(config.user("app").map(|u| u.auth), Some(AuthMethod::Md5));
    assert_eq!(config.user("anyone").map(|u| u.name.as_str()), Some("*"));
    let named_only = with_users(vec![user("app", AuthMethod::Md5, Some("pw"))], false);
    assert!(named_only.user("anyone").is_none());
}

#[test]
fn lookup_settings_are_checked() {
    let mut config = with_users(vec![user("app", AuthMethod::ScramSha256, None)], true);
    config.auth_query.query = "SELECT usename, passwd FROM pg_shadow".into();
    config.auth_query.password = Some(Secret::new("md5d41d8cd98f00b204e9800998ecf8427e"));
    assert_problems(
        &config,
        &[
            (
                "auth_query.password",
                "plaintext password of auth_query.user",
            ),
            ("auth_query.query", "must take the role name as $1"),
        ],
    );
    let mut config = with_users(
        vec![user("app", AuthMethod::ScramSha256, Some("pw"))],
        false,
    );
    config.auth_query.password = Some(Secret::new("pw"));
    assert_problems(
        &config,
        &[("auth_query.password", "without auth_query.user")],
    );
}

#[test]
fn the_lookup_password_is_masked() {
    let mut config = with_users(vec![user("app", AuthMethod::ScramSha256, None)], true);
    config.auth_query.password = Some(Secret::new("lookup-secret"));
    config.validate().unwrap();
    let masked = config.to_masked_toml();
    assert!(!masked.contains("lookup-secret"), "{masked}");
    assert!(masked.contains("[auth_query]"), "{masked}");
}
