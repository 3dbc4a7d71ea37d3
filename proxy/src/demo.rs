//! `pgsplit demo`: a real primary and replicas on loopback, with the proxy in
//! front, torn down on Ctrl-C.

use std::process::ExitCode;

use pgsplit_cluster::{Cluster, ClusterOptions, ServerCert};
use pgsplit_config::{AuthMethod, Backend, Config, RoleHint, Secret, ServerTls, User};

/// Builds the proxy configuration for a running local cluster.
pub fn config_for(cluster: &Cluster, listen: &str) -> Config {
    with_cluster(Config::default(), cluster, listen)
}

/// `base` with the cluster's servers as backends, its superuser as the
/// only (admin) user, and `listen`.
fn with_cluster(base: Config, cluster: &Cluster, listen: &str) -> Config {
    let backends = cluster
        .nodes()
        .iter()
        .map(|n| Backend {
            name: if n.index == 0 {
                "primary".to_owned()
            } else {
                format!("replica{}", n.index)
            },
            host: n.host.clone(),
            port: n.port,
            role: if n.index == 0 {
                RoleHint::Primary
            } else {
                RoleHint::Replica
            },
            weight: 1,
            server_tls: None,
        })
        .collect();
    Config {
        listen: listen.to_owned(),
        backends,
        users: vec![User {
            name: cluster.superuser().to_owned(),
            password: Some(Secret::new(cluster.password())),
            auth: AuthMethod::ScramSha256,
            admin: true,
            ..User::default()
        }],
        ..base
    }
}

/// `base`: the settings to run with (`--config`), backends and users
/// aside, which the demo fills in.
pub async fn run(base: Config, listen: &str, replicas: usize, server_tls: ServerTls) -> ExitCode {
    // Claim the port before spending seconds on the cluster, so a taken port
    // is reported at once.
    let addr = match tokio::net::lookup_host(listen).await.map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => {
            eprintln!("pgsplit demo: {listen:?} is not an address to listen on; use e.g. --listen 127.0.0.1:6432");
            return ExitCode::FAILURE;
        }
    };
    let listener = match crate::app::listen(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "pgsplit demo: cannot listen on {listen}: {e}\n\
                 Another server (perhaps PostgreSQL itself) uses that port; pick another with\n  \
                 pgsplit demo --listen 127.0.0.1:6432"
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("pgsplit demo: starting a primary and {replicas} streaming replicas...");
    // One self-signed certificate for the servers and for pgsplit, which
    // verifies the servers against it.
    let cert = match self_signed() {
        Ok(cert) => cert,
        Err(e) => {
            eprintln!("pgsplit demo: could not make a TLS certificate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = ClusterOptions {
        replicas,
        tls: Some(ServerCert {
            cert_pem: cert.cert.pem(),
            key_pem: cert.key_pair.serialize_pem(),
            hostssl_only: false,
        }),
        ..ClusterOptions::default()
    };
    let cluster = match tokio::task::spawn_blocking(move || Cluster::start(opts)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("pgsplit demo: could not start the local cluster: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("pgsplit demo: cluster start-up panicked: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = with_cluster(base, &cluster, listen);
    let cert = match write_certificate(&cluster.base_dir().join("pgsplit-tls"), &cert) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("pgsplit demo: could not write the TLS certificate: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.tls.client_cert_file = Some(cert.clone());
    config.tls.client_key_file = Some(cert.with_extension("key"));
    config.tls.server_tls = server_tls;
    config.tls.server_root_cert_file = Some(cert.clone());
    if let Err(e) = config.validate() {
        eprintln!("pgsplit demo: the configuration cannot be used with the demo's servers:\n{e}");
        return ExitCode::FAILURE;
    }
    let proxy = match crate::start_with_listener(listener, config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pgsplit demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = proxy.local_addr();
    for n in cluster.nodes() {
        let role = if n.index == 0 { "primary" } else { "replica" };
        eprintln!(
            "  {role:<8} 127.0.0.1:{}  (data in {})",
            n.port,
            n.data_dir.display()
        );
    }
    println!(
        "pgsplit is ready. Connect with:\n  psql \"host={} port={} user={} password={} dbname=postgres\"\n\
         TLS is on too (self-signed certificate {}; pgsplit reaches the servers with server_tls = {}), e.g.:\n  psql \"host=localhost port={} user={} password={} dbname=postgres sslmode=verify-full sslrootcert={}\"\n\
         Press Ctrl-C to stop; the cluster and its data are removed.",
        addr.ip(),
        addr.port(),
        cluster.superuser(),
        cluster.password(),
        cert.display(),
        server_tls.as_str(),
        addr.port(),
        cluster.superuser(),
        cluster.password(),
        cert.display(),
    );
    crate::signals::serve_until_stopped(proxy).await;
    let _ = tokio::task::spawn_blocking(move || cluster.shutdown()).await;
    eprintln!("pgsplit demo: stopped, data removed.");
    ExitCode::SUCCESS
}

/// A self-signed certificate for `localhost` and 127.0.0.1.
fn self_signed() -> Result<rcgen::CertifiedKey, String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())
}

/// Writes the certificate (and its key, `.key` beside it) into `dir`;
/// returns the certificate's path. It lives as long as the demo's cluster,
/// in the cluster's directory.
fn write_certificate(
    dir: &std::path::Path,
    certified: &rcgen::CertifiedKey,
) -> Result<std::path::PathBuf, String> {
    let rcgen::CertifiedKey { cert, key_pair } = certified;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("server.pem");
    std::fs::write(&path, cert.pem()).map_err(|e| e.to_string())?;
    // The key is for this process alone.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path.with_extension("key"))
        .and_then(|mut f| f.write_all(key_pair.serialize_pem().as_bytes()))
        .map_err(|e| e.to_string())?;
    Ok(path)
}
