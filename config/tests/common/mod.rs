//! Helpers shared by the config test binaries.

use pgsplit_config::{AuthMethod, Config, ConfigError, Problem, Secret, User};

pub fn user(name: &str, auth: AuthMethod, password: Option<&str>) -> User {
    User {
        name: name.into(),
        auth,
        password: password.map(Secret::new),
        ..User::default()
    }
}

/// Every problem `validate` reports; none for a valid config.
pub fn problems(config: &Config) -> Vec<Problem> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(other) => panic!("expected Invalid, got {other:?}"),
    }
}
