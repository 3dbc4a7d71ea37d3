//! State shared by every session: the configuration snapshot, precomputed
//! credentials, the cancel registry and the client-connection limit.

use std::collections::HashMap;
use std::sync::Arc;

use pgsplit_config::{AuthMethod, Config, PasswordKind, RoleHint};
use pgsplit_protocol::auth::ScramSecret;
use tokio::sync::Semaphore;

use crate::backend::BackendAddr;
use crate::cancel::CancelRegistry;

/// How one configured user logs in, prepared once at startup so that no
/// session pays for PBKDF2.
pub struct UserAuth {
    pub method: AuthMethod,
    pub scram: Option<Arc<ScramSecret>>,
    /// Plaintext password or stored md5 hash, for md5 challenges.
    pub md5_source: Option<String>,
    pub server_user: String,
    pub server_password: Option<String>,
}

pub struct Shared {
    pub config: Arc<Config>,
    pub users: HashMap<String, UserAuth>,
    pub backends: Vec<BackendAddr>,
    /// Which backend takes writes. Until the health loop exists this is the
    /// configured primary hint, else the first backend.
    pub primary: usize,
    pub cancel: Arc<CancelRegistry>,
    pub client_slots: Arc<Semaphore>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        let users = config
            .users
            .iter()
            .map(|u| (u.name.clone(), prepare_user(u)))
            .collect();
        let backends = config
            .backends
            .iter()
            .map(|b| BackendAddr {
                name: b.name.clone(),
                host: b.host.clone(),
                port: b.port,
            })
            .collect();
        let primary = config
            .backends
            .iter()
            .position(|b| b.role == RoleHint::Primary)
            .unwrap_or(0);
        let client_slots = Arc::new(Semaphore::new(config.limits.max_client_connections));
        Shared {
            config: Arc::new(config),
            users,
            backends,
            primary,
            cancel: Arc::new(CancelRegistry::default()),
            client_slots,
        }
    }
}

fn prepare_user(u: &pgsplit_config::User) -> UserAuth {
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
    UserAuth {
        method: u.auth,
        scram,
        md5_source,
        server_user: u.server_user().to_owned(),
        server_password: u.server_password().map(str::to_owned),
    }
}
