//! Building nodes on disk: base directory, initdb, configuration, base
//! backups. Nothing here starts or talks to a server.

use std::collections::hash_map::RandomState;
use std::fs::{self, DirBuilder, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::exec::{Owner, Runner};
use crate::{ClusterError, ClusterOptions};
use crate::{MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};

const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(120);

/// File in every data dir holding what differs per node. The primary's
/// `postgresql.conf` includes it last, and `pg_basebackup` copies both, so a
/// replica only has to rewrite this file to get its own port.
const NODE_CONF: &str = "pgsplit_node.conf";

/// Settings every node runs with. Durability is traded for speed (the data
/// is disposable) but `synchronous_commit` stays on: tests reason about
/// what a commit guarantees.
const BASE_CONF: &str = "\
listen_addresses = '127.0.0.1'
# TCP only: the default socket dir (/var/run/postgresql) may not be writable.
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '64MB'
fsync = off
full_page_writes = off
synchronous_commit = on
shared_buffers = '32MB'
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
wal_receiver_status_interval = '1s'
password_encryption = 'scram-sha-256'
";

/// `pg_hba.conf`: one rule per authentication method the proxy must handle
/// towards its backends, and trust for replication (replicas connect with
/// no password file).
const HBA_CONF: &str = "\
host all trustuser 127.0.0.1/32 trust
host all md5user 127.0.0.1/32 md5
host replication all 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
";

/// `pg_hba.conf` with [`ClusterOptions::trust_all`]: no password for
/// anyone, so roles created without one can log in too.
const TRUST_ALL_HBA_CONF: &str = "\
host replication all 127.0.0.1/32 trust
host all all 127.0.0.1/32 trust
";

/// The rules `opts` asks for, before any TLS rewrite.
pub(crate) fn hba_conf(opts: &ClusterOptions) -> &'static str {
    if opts.trust_all {
        TRUST_ALL_HBA_CONF
    } else {
        HBA_CONF
    }
}

/// Creates `<tmp>/pgsplit-cluster-<pid>-<random>`, mode 0700, owned by the
/// server user (initdb refuses a data dir parent it cannot write).
pub(crate) fn create_base_dir(owner: Option<Owner>) -> Result<PathBuf, ClusterError> {
    let tmp = std::env::temp_dir();
    for _ in 0..16 {
        let path = tmp.join(format!(
            "pgsplit-cluster-{}-{:08x}",
            std::process::id(),
            random_u32()
        ));
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                // The umask may have narrowed the mode; make it exact.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                chown(&path, owner)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "could not create a fresh directory in {}",
        tmp.display()
    ))
    .into())
}

fn random_u32() -> u32 {
    // RandomState is seeded from the OS; mixing in the clock keeps two calls
    // in one thread (which share a seed sequence) apart.
    let mut hasher = RandomState::new().build_hasher();
    if let Ok(now) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish() as u32
}

fn chown(path: &Path, owner: Option<Owner>) -> std::io::Result<()> {
    match owner {
        Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid)),
        None => Ok(()),
    }
}

/// Writes a file the server user must be able to read (and, for files in a
/// data dir, that pg_basebackup must be able to copy).
fn write_owned(path: &Path, contents: &str, owner: Option<Owner>) -> std::io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    chown(path, owner)
}

pub(crate) fn initdb(
    runner: &Runner,
    opts: &ClusterOptions,
    data_dir: &Path,
) -> Result<(), ClusterError> {
    // --pwfile keeps the password off the command line, where `ps` shows it.
    let pwfile = runner.home.join("initdb.pw");
    write_owned(&pwfile, &format!("{}\n", opts.password), runner.owner)?;
    let mut cmd = runner.command("initdb");
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-U")
        .arg(&opts.superuser)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .args(["-E", "UTF8", "--locale=C"])
        // Skipping the final fsync saves most of initdb's time; the cluster
        // does not outlive the machine's uptime anyway.
        .arg("--no-sync");
    let result = runner.check(cmd, "initdb", INITDB_TIMEOUT, None);
    let _ = fs::remove_file(&pwfile);
    result.map(drop)
}

/// Appends the harness settings and `opts.extra_conf` to the primary's
/// `postgresql.conf` and replaces its `pg_hba.conf`.
pub(crate) fn configure_primary(
    data_dir: &Path,
    opts: &ClusterOptions,
) -> Result<(), ClusterError> {
    let mut conf = String::from("\n# Added by pgsplit-cluster.\n");
    conf.push_str(BASE_CONF);
    for (key, value) in &opts.extra_conf {
        conf.push_str(&format!("{key} = {}\n", quote_value(value)));
    }
    conf.push_str(&format!("include '{NODE_CONF}'\n"));
    let mut file = OpenOptions::new()
        .append(true)
        .open(data_dir.join("postgresql.conf"))?;
    file.write_all(conf.as_bytes())?;
    // Truncating in place keeps the file's owner (initdb's user).
    fs::write(data_dir.join("pg_hba.conf"), hba_conf(opts))?;
    Ok(())
}

/// Turns TLS on with `tls`'s certificate (files in the data dir, so
/// `pg_basebackup` copies them to the replicas), and with `hostssl_only`
/// requires it of every login but replication, in the rules `hba` gives.
pub(crate) fn configure_tls(
    data_dir: &Path,
    tls: &crate::ServerCert,
    hba: &str,
    owner: Option<Owner>,
) -> Result<(), ClusterError> {
    write_owned(&data_dir.join("server.crt"), &tls.cert_pem, owner)?;
    write_owned(&data_dir.join("server.key"), &tls.key_pem, owner)?;
    let mut file = OpenOptions::new()
        .append(true)
        .open(data_dir.join("postgresql.conf"))?;
    file.write_all(b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")?;
    if tls.hostssl_only {
        let hba: String = hba
            .lines()
            .map(|l| match l.strip_prefix("host all ") {
                Some(rest) => format!("hostssl all {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        fs::write(data_dir.join("pg_hba.conf"), hba)?;
    }
    Ok(())
}

/// GUC values may always be single-quoted, whatever their type, so quoting
/// everything accepts numbers, units, booleans and lists alike.
fn quote_value(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Writes the per-node settings; `cluster_name` shows up in `ps` and, on
/// replicas, as `application_name` in the primary's `pg_stat_replication`.
pub(crate) fn write_node_conf(
    data_dir: &Path,
    index: usize,
    port: u16,
    owner: Option<Owner>,
) -> Result<(), ClusterError> {
    let text = format!("port = {port}\ncluster_name = 'pgsplit_node{index}'\n");
    write_owned(&data_dir.join(NODE_CONF), &text, owner)?;
    Ok(())
}

/// Name of the physical slot that keeps WAL for replica `index`.
pub(crate) fn slot_name(index: usize) -> String {
    format!("replica_{index}")
}

/// SQL run once on the fresh primary: the per-auth-method roles and one
/// replication slot per replica. Statements run one at a time, so each
/// `SET password_encryption` applies to the role created after it.
pub(crate) fn bootstrap_sql(replicas: usize) -> String {
    let mut sql = format!(
        "CREATE ROLE {TRUST_USER} LOGIN CREATEDB;\n\
         SET password_encryption = 'md5';\n\
         CREATE ROLE {MD5_USER} LOGIN CREATEDB PASSWORD '{MD5_PASSWORD}';\n\
         SET password_encryption = 'scram-sha-256';\n\
         CREATE ROLE {SCRAM_USER} LOGIN CREATEDB PASSWORD '{SCRAM_PASSWORD}';\n"
    );
    for index in 1..=replicas {
        sql.push_str(&format!(
            "SELECT pg_create_physical_replication_slot('{}');\n",
            slot_name(index)
        ));
    }
    sql
}

/// Clones the primary into `data_dir` as a standby (`-R` writes
/// `standby.signal` and `primary_conninfo`) that will use slot `replica_<i>`.
pub(crate) fn basebackup(
    runner: &Runner,
    primary_port: u16,
    superuser: &str,
    index: usize,
    data_dir: &Path,
    primary_log: &Path,
) -> Result<(), ClusterError> {
    let mut cmd = runner.command("pg_basebackup");
    cmd.args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
        .args(["-U", superuser, "-D"])
        .arg(data_dir)
        .args(["-R", "-S", &slot_name(index)])
        .args(["-X", "stream", "-c", "fast", "--no-sync", "-w"]);
    let what = format!("pg_basebackup for node {index}");
    runner
        .check(cmd, &what, BASEBACKUP_TIMEOUT, Some(primary_log))
        .map(drop)
}
