//! The `pgsplit` binary's own commands, run as a user would run them.

use std::process::Command;

fn pgsplit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsplit"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PGSPLIT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn write_config(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsplit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../pgsplit.example.toml");
    let out = pgsplit().args(["check-config", example]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen = \"127.0.0.1:6432\""), "{stdout}");
    assert!(stdout.contains("********"), "{stdout}");
    assert!(
        !stdout.contains("app-secret"),
        "the password leaked: {stdout}"
    );
    // Environment variables override the file.
    let out = pgsplit()
        .args(["check-config", example])
        .env("PGSPLIT_LISTEN", "127.0.0.1:7777")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen = \"127.0.0.1:7777\""));
}

#[test]
fn a_bad_config_exits_non_zero_with_one_line_per_problem() {
    let path = write_config(
        "bad.toml",
        r#"
listen = "nowhere"
[[backends]]
name = "a"
host = "127.0.0.1"
port = 0
[[users]]
name = "app"
auth = "md5"
"#,
    );
    let out = pgsplit()
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    for key in ["listen:", "backends[0].port:", "users[0].password:"] {
        assert!(
            lines.iter().any(|l| l.starts_with(key)),
            "no line for {key} in:\n{stderr}"
        );
    }
    // A typo in a key is rejected, naming the key.
    let path = write_config("typo.toml", "listn = \"127.0.0.1:1\"\n");
    let out = pgsplit()
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));
}

#[test]
fn demo_says_so_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = pgsplit()
        .args(["demo", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn check_config_reads_the_tls_files_and_names_the_key_of_a_bad_one() {
    let not_pem = write_config("not-a-cert.pem", "this is not a certificate\n");
    let body = format!(
        r#"
listen = "127.0.0.1:6432"
[tls]
client_cert_file = "{0}"
client_key_file = "{0}"
[[backends]]
name = "a"
host = "127.0.0.1"
port = 5432
[[users]]
name = "app"
auth = "trust"
"#,
        not_pem.display()
    );
    let path = write_config("bad-tls.toml", &body);
    let out = pgsplit()
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.client_cert_file") && stderr.contains("no certificate"),
        "{stderr}"
    );
}

/// Runs `pgsplit demo` as a user would and connects over TLS with the
/// certificate it prints, verifying it; a read is served by a replica,
/// which pgsplit reached over TLS too.
/// Whether the server connection that ran it is encrypted, and its port.
const SSL_AND_PORT: &str =
    "/* pgsplit:replica */ SELECT ssl, inet_server_port() FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// `--config` gives the demo its settings (here its listen address and a
/// metrics listener); the demo adds its servers.
#[test]
fn the_demo_runs_with_a_config_serves_tls_with_the_certificate_it_prints_and_survives_sighup() {
    use std::io::{BufRead, BufReader, Read, Write};
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, metrics) = (free_port(), free_port());
    let config = write_config(
        "demo.toml",
        &format!("listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n"),
    );
    let mut demo = pgsplit()
        .args(["--config", config.to_str().unwrap(), "demo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = demo.stderr.take().unwrap();
    // Read to the end: the replicas' ports first, then every log line.
    let replicas = std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        let ports = lines
            .iter()
            .filter(|l| l.trim_start().starts_with("replica"))
            .take(2)
            .map(|l| {
                l.split(':')
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<String>>();
        (ports, lines.join("\n"))
    });
    let mut conn = None;
    for line in BufReader::new(demo.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("sslrootcert=") {
            conn = Some(
                line.trim()
                    .trim_start_matches("psql ")
                    .trim_matches('"')
                    .to_owned(),
            );
            break;
        }
    }
    let conn = conn.expect("the demo prints a TLS connection string");
    assert!(
        conn.contains(&format!("port={port} ")),
        "not the config's listen: {conn}"
    );
    let bindir = pgsplit_cluster::find_bindir().expect("PostgreSQL binaries");
    // A reload signal must not end it (the default action would, at once).
    let hup = Command::new("kill")
        .args(["-HUP", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let out = Command::new(bindir.join("psql"))
        .args(["-X", "-At", "-d", &conn, "-c", SSL_AND_PORT])
        .output()
        .unwrap();
    let survived_hup = demo.try_wait().unwrap().is_none();
    let mut health = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics)) {
        let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
        let _ = s.read_to_string(&mut health);
    }
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let _ = demo.wait();
    let (replicas, log) = replicas.join().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(survived_hup, "SIGHUP ended the process");
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "no /health on the config's metrics_listen: {health:?}"
    );
    // The demo's configuration is not a file it could read again.
    assert!(
        log.contains("SIGHUP: the configuration was not reloaded"),
        "not logged: {log}"
    );
    assert!(out.status.success(), "{conn}: {text}");
    let (ssl, port) = text.trim().split_once('|').expect("ssl|port");
    assert_eq!(ssl, "t", "pgsplit reached the server without TLS");
    assert!(
        replicas.contains(&port.to_owned()),
        "read on {text}, replicas {replicas:?}"
    );
}

/// pgsplit's stderr is a pipe whose reader has gone (the shell that
/// started it exited, a log collector restarted): a log line it cannot
/// write is lost, and the proxy goes on serving. It used to panic on the
/// first such line (the log library's own error report to stderr).
#[test]
fn a_closed_stderr_does_not_end_the_proxy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // No server behind it: the logins below are refused by pgsplit itself,
    // and each refusal is logged.
    let config = write_config(
        "stderr.toml",
        &format!(
            "listen = \"127.0.0.1:{port}\"\n\n[[backends]]\nname = \"p\"\nhost = \"127.0.0.1\"\nport = 1\nrole = \"primary\"\n\n[[users]]\nname = \"u\"\npassword = \"right\"\n"
        ),
    );
    let mut proxy = pgsplit()
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(proxy.stderr.take());
    let psql = pgsplit_cluster::find_bindir()
        .expect("PostgreSQL binaries")
        .join("psql");
    let login = || {
        let out = Command::new(&psql)
            .args(["-X", "-At", "-c", "SELECT 1", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={port} user=u password=wrong dbname=x connect_timeout=5"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let refused = |text: &str| text.contains("password authentication failed");
    // Until it listens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !refused(&login()) {
        assert!(
            std::time::Instant::now() < deadline,
            "pgsplit never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answers: Vec<String> = (0..5).map(|_| login()).collect();
    let alive = proxy.try_wait().unwrap().is_none();
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(alive, "pgsplit ended: {answers:?}");
    assert!(answers.iter().all(|a| refused(a)), "{answers:?}");
}

/// With the metrics port taken, the error names `metrics_listen`, not the
/// client port that was free.
#[test]
fn a_taken_metrics_port_is_named_as_the_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap();
    drop(free);
    let path = write_config(
        "metrics-taken.toml",
        &format!(
            "listen = \"{listen}\"\nmetrics_listen = \"{metrics}\"\n\
             [[backends]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 1\n\
             [[users]]\nname = \"u\"\npassword = \"p\"\n"
        ),
    );
    let out = pgsplit()
        .args(["--config", path.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {metrics} (metrics_listen)")),
        "{stderr}"
    );
    assert!(!stderr.contains(&listen.to_string()), "{stderr}");
}

/// The shipped `/etc/pgsplit/pgsplit.toml` starting point stays valid, and
/// the unit reloads with SIGHUP and checks the file before starting.
#[test]
fn the_deployment_files_are_valid() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let out = pgsplit()
        .args(["check-config", &format!("{deploy}/pgsplit.toml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = std::fs::read_to_string(format!("{deploy}/pgsplit.service")).unwrap();
    for line in [
        "ExecStartPre=/usr/local/bin/pgsplit check-config /etc/pgsplit/pgsplit.toml",
        "ExecStart=/usr/local/bin/pgsplit --config /etc/pgsplit/pgsplit.toml run",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
}
