//! Who may log in and what pgsplit logs in to servers with on their
//! behalf: the configured `[[users]]`, prepared once so that no session
//! pays for PBKDF2, and credentials looked up in PostgreSQL at login
//! (`lookup.rs`, `[auth_query]`).

pub mod lookup;

use std::collections::HashMap;
use std::sync::Arc;

use pgsplit_config::{AuthMethod, PasswordKind, User, WILDCARD_USER};
use pgsplit_protocol::auth::ScramSecret;

use crate::backend::Credential;

/// How one configured user (or the wildcard entry) logs in.
pub struct UserAuth {
    pub method: AuthMethod,
    pub scram: Option<Arc<ScramSecret>>,
    /// Plaintext password or stored md5 hash, for md5 challenges.
    pub md5_source: Option<String>,
    /// The client is checked against the role's credentials in PostgreSQL,
    /// fetched at login.
    pub looked_up: bool,
    /// The configured server login; for the wildcard entry (no fixed server
    /// user) or a looked-up user (whose login comes from the client's
    /// proof), `None`.
    fixed: Option<Arc<Login>>,
    /// `server_password` of a looked-up user, which then wins over what the
    /// client proved.
    server_password: Option<Arc<Credential>>,
    server_user: Option<String>,
}

/// What one session logs in to servers as.
#[derive(Debug, PartialEq, Eq)]
pub struct Login {
    pub server_user: String,
    pub credential: Arc<Credential>,
}

impl UserAuth {
    fn prepare(u: &User, lookups: bool) -> UserAuth {
        let (scram, md5_source) = match &u.password {
            None => (None, None),
            Some(p) => match p.kind() {
                PasswordKind::Plain => (
                    (u.auth == AuthMethod::ScramSha256)
                        .then(|| Arc::new(ScramSecret::from_password(p.expose()))),
                    Some(p.expose().to_owned()),
                ),
                PasswordKind::ScramVerifier => (ScramSecret::parse(p.expose()).map(Arc::new), None),
                PasswordKind::Md5Hash => (None, Some(p.expose().to_owned())),
            },
        };
        let looked_up = lookups && u.password.is_none() && u.auth != AuthMethod::Trust;
        let wildcard = u.name == WILDCARD_USER;
        let server_user = (!wildcard).then(|| u.server_user().to_owned());
        let server_password = u
            .server_password()
            .map(|p| Arc::new(Credential::Password(p.to_owned())));
        let fixed = match (&server_user, looked_up) {
            (Some(user), false) => Some(Arc::new(Login {
                server_user: user.clone(),
                credential: server_password.clone().unwrap_or_default(),
            })),
            _ => None,
        };
        UserAuth {
            method: u.auth,
            scram,
            md5_source,
            looked_up,
            fixed,
            server_password,
            server_user,
        }
    }

    /// The server login of a client that logged in as `name`, having
    /// proven `proven` (for looked-up users).
    pub fn login(&self, name: &str, proven: Credential) -> Arc<Login> {
        if let Some(fixed) = &self.fixed {
            return Arc::clone(fixed);
        }
        Arc::new(Login {
            server_user: self.server_user.as_deref().unwrap_or(name).to_owned(),
            credential: self
                .server_password
                .clone()
                .unwrap_or_else(|| Arc::new(proven)),
        })
    }
}

impl Login {
    /// Who pgsplit's own catalog queries for this session (function
    /// lookups, over tokio-postgres, which takes a password only) log in
    /// as: this login when it has a password, else `[auth_query]`'s login,
    /// else this user without a password.
    pub fn catalog_login(&self, config: &pgsplit_config::Config) -> (String, Option<String>) {
        let a = &config.auth_query;
        match (self.credential.cleartext(), &a.user) {
            (Some(p), _) => (self.server_user.clone(), Some(p.to_owned())),
            (None, Some(user)) => (
                user.clone(),
                a.password.as_ref().map(|p| p.expose().to_owned()),
            ),
            (None, None) => (self.server_user.clone(), None),
        }
    }
}

/// The configured users by name, and the wildcard entry for the others.
pub struct Users {
    named: HashMap<String, UserAuth>,
    wildcard: Option<UserAuth>,
}

impl Users {
    pub fn new(config: &pgsplit_config::Config) -> Users {
        let lookups = config.auth_query.enabled();
        let mut named = HashMap::new();
        let mut wildcard = None;
        for u in &config.users {
            let auth = UserAuth::prepare(u, lookups);
            if u.name == WILDCARD_USER {
                wildcard = Some(auth);
            } else {
                named.insert(u.name.clone(), auth);
            }
        }
        Users { named, wildcard }
    }

    /// The entry a client logging in as `name` is checked against.
    pub fn get(&self, name: &str) -> Option<&UserAuth> {
        self.named.get(name).or(self.wildcard.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsplit_config::{Config, Secret};

    fn config(users: Vec<User>, lookups: bool) -> Config {
        let mut c = Config {
            users,
            ..Config::default()
        };
        c.auth_query.user = lookups.then(|| "auth".into());
        c
    }

    fn user(name: &str, password: Option<&str>) -> User {
        User {
            name: name.into(),
            password: password.map(Secret::new),
            ..User::default()
        }
    }

    #[test]
    fn configured_passwords_log_in_as_configured() {
        let users = Users::new(&config(vec![user("app", Some("pw"))], true));
        let app = users.get("app").unwrap();
        assert!(!app.looked_up);
        let login = app.login("app", Credential::None);
        assert_eq!(login.server_user, "app");
        assert_eq!(*login.credential, Credential::Password("pw".into()));
        assert!(Arc::ptr_eq(&login, &app.login("app", Credential::None)));
        assert!(users.get("other").is_none(), "no wildcard entry");
    }

    #[test]
    fn looked_up_users_log_in_with_what_they_proved() {
        let mut with_server_password = user("batch", None);
        with_server_password.server_password = Some(Secret::new("server-pw"));
        let users = Users::new(&config(
            vec![user("app", None), with_server_password, user("*", None)],
            true,
        ));
        let proven = Credential::Md5Hash("md5d41d8cd98f00b204e9800998ecf8427e".into());
        let app = users.get("app").unwrap();
        assert!(app.looked_up);
        assert_eq!(*app.login("app", proven.clone()).credential, proven);
        let batch = users.get("batch").unwrap().login("batch", proven.clone());
        assert_eq!(*batch.credential, Credential::Password("server-pw".into()));
        // The wildcard logs each role in as itself.
        let anyone = users.get("anyone").unwrap();
        assert!(anyone.looked_up);
        let login = anyone.login("anyone", proven.clone());
        assert_eq!(
            (login.server_user.as_str(), &*login.credential),
            ("anyone", &proven)
        );
    }

    #[test]
    fn without_lookups_a_passwordless_user_is_trusted_as_before() {
        let mut trusted = user("t", None);
        trusted.auth = AuthMethod::Trust;
        let users = Users::new(&config(vec![trusted], false));
        let t = users.get("t").unwrap();
        assert!(!t.looked_up);
        assert_eq!(*t.login("t", Credential::None).credential, Credential::None);
    }
}
