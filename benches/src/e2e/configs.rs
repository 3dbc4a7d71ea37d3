//! Configuration files for the proxies under test, as pure functions of the
//! cluster layout so they can be checked without starting anything.

use std::fmt::Write;
use std::path::Path;

/// Where the proxies point and who logs in.
#[derive(Clone, Debug)]
pub struct Layout {
    pub primary_port: u16,
    pub replica_ports: Vec<u16>,
    pub user: String,
    pub password: String,
    /// Largest client count of the run: pools are sized to it, so no
    /// client ever queues for a server connection.
    pub max_clients: u32,
    /// TLS on both hops: every client connects with `sslmode=require`, the
    /// proxies serve this certificate and reach the servers over TLS.
    pub tls: Option<TlsFiles>,
}

/// The certificate and key the proxies serve (the servers have the same).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Layout {
    /// libpq's `sslmode` for every client of the run.
    pub fn sslmode(&self) -> &'static str {
        if self.tls.is_some() {
            "require"
        } else {
            "disable"
        }
    }
}

/// One `[[backends]]` table per node of the layout, primary first.
pub fn backends_toml(layout: &Layout) -> String {
    let mut s = format!(
        "[[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n",
        layout.primary_port
    );
    for (i, port) in layout.replica_ports.iter().enumerate() {
        let _ = write!(
            s,
            "\n[[backends]]\nname = \"replica{}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"replica\"\n",
            i + 1
        );
    }
    s
}

pub fn pgsplit_toml(layout: &Layout, listen_port: u16) -> String {
    let mut s = format!(
        "listen = \"127.0.0.1:{listen_port}\"\n\n{}",
        backends_toml(layout)
    );
    let _ = write!(
        s,
        "\n[[users]]\nname = {}\npassword = {}\nauth = \"scram-sha-256\"\n",
        toml_string(&layout.user),
        toml_string(&layout.password)
    );
    if let Some(tls) = &layout.tls {
        let _ = write!(
            s,
            "\n[tls]\nclient_cert_file = {}\nclient_key_file = {}\nserver_tls = \"require\"\n",
            toml_string(&tls.cert.display().to_string()),
            toml_string(&tls.key.display().to_string()),
        );
    }
    s
}

/// A TOML basic string: quoted, backslashes and double quotes escaped.
pub fn toml_string(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// PgBouncer in transaction pooling to the primary.
///
/// Authentication mirrors pgsplit's: clients log in with SCRAM-SHA-256
/// against a plaintext password in `auth_file`. A plaintext entry (rather
/// than a stored verifier) is what lets PgBouncer also answer the server's
/// SCRAM challenge, so one file serves both sides. Login happens once per
/// pgbench client, so its cost stays out of the per-transaction numbers.
pub fn pgbouncer_ini(layout: &Layout, listen_port: u16, dir: &Path, version: (u32, u32)) -> String {
    let mut s = format!(
        "[databases]\n\
         postgres = host=127.0.0.1 port={primary} dbname=postgres\n\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen_port}\n\
         ; TCP only: the default socket dir belongs to the system's PgBouncer.\n\
         ; No logfile: running in the foreground it logs to stderr, which\n\
         ; the benchmark captures.\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n\
         default_pool_size = {pool}\n\
         max_client_conn = {max_conn}\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         ignore_startup_parameters = extra_float_digits\n",
        primary = layout.primary_port,
        dir = dir.display(),
        pool = layout.max_clients,
        max_conn = layout.max_clients + 20,
    );
    if pgbouncer_has_prepared(version) {
        s.push_str("max_prepared_statements = 200\n");
    }
    if let Some(tls) = &layout.tls {
        let _ = write!(
            s,
            "client_tls_sslmode = require\nclient_tls_cert_file = {}\n\
             client_tls_key_file = {}\nserver_tls_sslmode = require\n",
            tls.cert.display(),
            tls.key.display()
        );
    }
    s
}

pub fn pgbouncer_userlist(layout: &Layout) -> String {
    let q = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    format!("{} {}\n", q(&layout.user), q(&layout.password))
}

/// Protocol-level named prepared statements in transaction pooling arrived
/// in PgBouncer 1.21; before that, `pgbench -M prepared` fails with
/// "prepared statement ... does not exist" as soon as a client's next
/// transaction lands on another server connection.
pub fn pgbouncer_has_prepared(version: (u32, u32)) -> bool {
    version >= (1, 21)
}

/// pgpool-II in streaming-replication mode with load balancing: writes go
/// to node 0, read-only sessions are spread over all nodes by weight.
///
/// Clients authenticate with SCRAM through `pool_hba.conf`; `pool_passwd`
/// holds the plaintext password (`TEXT` prefix), which pgpool needs to run
/// SCRAM towards every backend itself. Health and streaming checks are off
/// and node 0 is pinned as primary, so pgpool spends no CPU on polling
/// during runs.
pub fn pgpool_conf(layout: &Layout, ports: (u16, u16), dir: &Path, version: (u32, u32)) -> String {
    let dir = dir.display();
    // 4.3 renamed socket_dir; the old name is an error there.
    let socket_key = if version >= (4, 3) {
        "unix_socket_directories"
    } else {
        "socket_dir"
    };
    let mut s = format!(
        "backend_clustering_mode = 'streaming_replication'\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         {socket_key} = '{dir}'\n\
         pcp_listen_addresses = ''\n\
         pcp_port = {pcp}\n\
         pcp_socket_dir = '{dir}'\n\
         wd_ipc_socket_dir = '{dir}'\n\
         pid_file_name = '{dir}/pgpool.pid'\n\
         logdir = '{dir}'\n\
         log_destination = 'stderr'\n\
         log_min_messages = warning\n\
         num_init_children = {children}\n\
         max_pool = 1\n\
         load_balance_mode = on\n\
         enable_pool_hba = on\n\
         pool_passwd = 'pool_passwd'\n\
         sr_check_period = 0\n\
         sr_check_user = '{user}'\n\
         sr_check_password = '{password}'\n\
         health_check_period = 0\n\
         failover_on_backend_error = off\n\
         use_watchdog = off\n",
        port = ports.0,
        pcp = ports.1,
        children = layout.max_clients,
        user = layout.user,
        password = layout.password,
    );
    let nodes = std::iter::once(layout.primary_port).chain(layout.replica_ports.iter().copied());
    for (i, port) in nodes.enumerate() {
        let flag = if i == 0 {
            "ALWAYS_PRIMARY"
        } else {
            "ALLOW_TO_FAILOVER"
        };
        let _ = write!(
            s,
            "backend_hostname{i} = '127.0.0.1'\nbackend_port{i} = {port}\n\
             backend_weight{i} = 1\nbackend_flag{i} = '{flag}'\n"
        );
    }
    s
}

pub fn pgpool_hba() -> &'static str {
    "host all all 127.0.0.1/32 scram-sha-256\n"
}

pub fn pgpool_passwd(layout: &Layout) -> String {
    format!("{}:TEXT{}\n", layout.user, layout.password)
}

/// First `major.minor` in a `--version` banner such as
/// `PgBouncer 1.18.0` or `pgpool-II version 4.3.5 (tamahomeboshi)`.
pub fn parse_version(banner: &str) -> Option<(u32, u32)> {
    banner.split_whitespace().find_map(|word| {
        let mut parts = word.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            primary_port: 5000,
            replica_ports: vec![5001, 5002],
            user: "postgres".into(),
            password: "pa\"ss".into(),
            max_clients: 16,
            tls: None,
        }
    }

    fn with_tls() -> Layout {
        Layout {
            tls: Some(TlsFiles {
                cert: "/tmp/x/server.pem".into(),
                key: "/tmp/x/server.key".into(),
            }),
            ..layout()
        }
    }

    #[test]
    fn tls_on_both_hops_when_asked() {
        assert_eq!(layout().sslmode(), "disable");
        assert!(!pgsplit_toml(&layout(), 6000).contains("[tls]"));
        let toml = pgsplit_toml(&with_tls(), 6000);
        assert!(toml.ends_with(
            "[tls]\nclient_cert_file = \"/tmp/x/server.pem\"\n\
             client_key_file = \"/tmp/x/server.key\"\nserver_tls = \"require\"\n"
        ));
        let ini = pgbouncer_ini(&with_tls(), 6432, Path::new("/tmp/x"), (1, 25));
        assert!(ini
            .contains("client_tls_sslmode = require\nclient_tls_cert_file = /tmp/x/server.pem\n"));
        assert!(ini.contains("server_tls_sslmode = require\n"));
        assert_eq!(with_tls().sslmode(), "require");
    }

    #[test]
    fn pgsplit_config_lists_every_node() {
        let toml = pgsplit_toml(&layout(), 6000);
        assert!(toml.starts_with("listen = \"127.0.0.1:6000\""));
        assert_eq!(toml.matches("[[backends]]").count(), 3);
        assert!(toml.contains("name = \"replica2\"\nhost = \"127.0.0.1\"\nport = 5002"));
        assert!(toml.contains("password = \"pa\\\"ss\""));
    }

    #[test]
    fn pgbouncer_prepared_only_from_1_21() {
        let dir = Path::new("/tmp/x");
        let old = pgbouncer_ini(&layout(), 6432, dir, (1, 18));
        assert!(old.contains("pool_mode = transaction"));
        assert!(old.contains("default_pool_size = 16"));
        assert!(!old.contains("max_prepared_statements"));
        assert!(pgbouncer_ini(&layout(), 6432, dir, (1, 21)).contains("max_prepared_statements"));
        assert_eq!(pgbouncer_userlist(&layout()), "\"postgres\" \"pa\"\"ss\"\n");
    }

    #[test]
    fn pgpool_socket_key_follows_version() {
        let dir = Path::new("/tmp/x");
        let new = pgpool_conf(&layout(), (7000, 7001), dir, (4, 3));
        assert!(new.contains("unix_socket_directories = '/tmp/x'"));
        assert!(new.contains("backend_port2 = 5002"));
        assert!(new.contains("backend_flag0 = 'ALWAYS_PRIMARY'"));
        assert!(pgpool_conf(&layout(), (7000, 7001), dir, (4, 2)).contains("socket_dir = '/tmp/x'"));
    }

    #[test]
    fn versions_from_banners() {
        assert_eq!(
            parse_version("PgBouncer 1.18.0\nlibevent 2.1.12-stable"),
            Some((1, 18))
        );
        assert_eq!(
            parse_version("pgpool-II version 4.3.5 (tamahomeboshi)"),
            Some((4, 3))
        );
        assert_eq!(parse_version("no digits here"), None);
    }
}
