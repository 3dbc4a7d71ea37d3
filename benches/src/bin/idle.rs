//! Resident memory of pgsplit holding N idle clients (target: under 150 MB
//! for 10 000).
//!
//! Starts a primary with one replica and pgsplit in front of them, reads the
//! proxy's VmRSS at rest, logs in N clients over raw sockets (trust auth,
//! no queries), lets them sit, and reads VmRSS and VmHWM again.
//!
//! Build the proxy first: `cargo build --release -p pgsplit`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use pgsplit_benches::e2e::child::{clean_command, die_with_parent, ChildGuard};
use pgsplit_benches::e2e::idle::{self, Liveness, Memory, Nofile};
use pgsplit_benches::e2e::scratch::{write, Scratch};
use pgsplit_benches::e2e::targets::{free_port, log_tail};
use pgsplit_benches::e2e::{pgsplit_binary, workspace_root, write_json};
use pgsplit_cluster::{Cluster, ClusterOptions, TRUST_USER};
use serde::Serialize;

/// The budget for 10 000 idle clients, read as decimal megabytes:
/// the stricter of the two readings (150 MiB would be 153.6 MB).
const TARGET_MB: u64 = 150;
const TARGET_KIB: u64 = TARGET_MB * 1_000_000 / 1024;

/// How long pgsplit may take to accept its first login.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Parser, Debug)]
#[command(about = "pgsplit's resident memory with N idle client connections")]
struct Args {
    /// Idle clients to open.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// The pgsplit binary under test [default: <workspace>/target/release/pgsplit].
    #[arg(long)]
    pgsplit: Option<PathBuf>,
    /// Logins in flight at once. Keep it below pgsplit's listen backlog
    /// (128, tokio's default): past it the kernel drops SYNs and each batch
    /// waits out a 1 s retransmit, which measures the backlog, not the proxy.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds the clients sit idle before memory is read.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// JSON output [default: <workspace>/bench-results/idle.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Everything the JSON file records.
#[derive(Serialize)]
struct Report {
    clients: usize,
    opened: usize,
    failed: usize,
    errors: Vec<String>,
    login_seconds: f64,
    at_rest: Memory,
    with_clients: Memory,
    per_client_kib: Option<f64>,
    under_target: bool,
    target_kib: u64,
    liveness: Liveness,
    nofile: Nofile,
    pgsplit_binary: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("idle: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when the numbers were taken but some client failed, so the
/// measurement does not describe N clients.
fn run(args: &Args) -> Result<bool, String> {
    if args.clients == 0 || args.batch == 0 {
        return Err("--clients and --batch must be positive".into());
    }
    let root = workspace_root();
    let binary = pgsplit_binary(args.pgsplit.clone())?;
    let nofile = idle::raise_nofile()?;
    let needed = args.clients as u64 + 100;
    if nofile.hard < needed {
        eprintln!(
            "!!! the open-file hard limit ({}) is below clients + 100 ({needed}): \
             logins past it will fail here, not in pgsplit; raise it with `ulimit -Hn`",
            nofile.hard
        );
    }

    eprintln!("starting a primary with 1 replica...");
    let cluster = Cluster::start(ClusterOptions {
        replicas: 1,
        ..ClusterOptions::default()
    })
    .map_err(|e| format!("cluster: {e}"))?;
    let scratch = Scratch::create(None)?;
    let port = free_port()?;
    let config = scratch.path().join("pgsplit.toml");
    let toml = idle::pgsplit_toml(port, cluster.port(0), &[cluster.port(1)], TRUST_USER);
    write(&config, &toml, None)?;
    let log = scratch.path().join("pgsplit.log");
    let mut proxy = spawn(&binary, &config, &log)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // One thread: the proxy and the servers already share this machine's
    // cores, and a login burst needs no more than one to drive it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    wait_ready(&rt, addr, &mut proxy, &log)?;
    // Let the first login's pool connection and allocations settle.
    thread::sleep(Duration::from_secs(1));
    let pid = proxy.pid();
    let at_rest = idle::memory(pid).ok_or("cannot read pgsplit's /proc status")?;

    eprintln!(
        "opening {} idle clients, {} at a time...",
        args.clients, args.batch
    );
    let started = Instant::now();
    let opened = rt.block_on(idle::open_idle(addr, TRUST_USER, args.clients, args.batch));
    let login_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} logged in, {} failed, in {login_seconds:.1}s; idling {}s...",
        opened.streams.len(),
        opened.failed,
        args.settle
    );
    thread::sleep(Duration::from_secs(args.settle));
    let with_clients = idle::memory(pid)
        .ok_or_else(|| format!("pgsplit is gone; log tail:\n{}", log_tail(Some(&log))))?;
    let liveness = idle::liveness(&opened.streams);

    let n = opened.streams.len();
    let report = Report {
        clients: args.clients,
        opened: n,
        failed: opened.failed,
        errors: opened.errors,
        login_seconds,
        at_rest,
        with_clients,
        per_client_kib: idle::per_client_kib(at_rest, with_clients, n),
        under_target: with_clients.rss_kib < TARGET_KIB,
        target_kib: TARGET_KIB,
        liveness,
        nofile,
        pgsplit_binary: binary.display().to_string(),
    };
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| root.join("bench-results/idle.json"));
    write_json(&json, &report)?;
    println!("\n{}", markdown(&report));
    println!("JSON: {}", json.display());

    let mut ok = true;
    if report.failed > 0 {
        ok = false;
        eprintln!("\n!!! {} login(s) failed; first errors:", report.failed);
        for e in &report.errors {
            eprintln!("  {e}");
        }
        if report
            .errors
            .iter()
            .any(|e| e.to_lowercase().contains("open files"))
        {
            eprintln!("  (\"too many open files\": an RLIMIT_NOFILE too low on one side)");
        }
    }
    if liveness.open != n {
        ok = false;
        eprintln!(
            "\n!!! of {n} idle clients only {} were still open: {} closed, {} got unprompted \
             data, {} errored; pgsplit log tail:\n{}",
            liveness.open,
            liveness.closed,
            liveness.unexpected_data,
            liveness.errors,
            log_tail(Some(&log))
        );
    }
    // Clients first so pgsplit sees plain disconnects, then the proxy (it
    // holds server connections), then the cluster.
    drop(opened.streams);
    drop(proxy);
    cluster.shutdown();
    Ok(ok)
}

fn spawn(binary: &Path, config: &Path, log: &Path) -> Result<ChildGuard, String> {
    let out = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = clean_command(binary);
    cmd.arg("--config")
        .arg(config)
        .env("PGSPLIT_LOG", "warn")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    die_with_parent(&mut cmd, libc::SIGTERM);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    Ok(ChildGuard::new("pgsplit", child, libc::SIGTERM))
}

/// A listening port is not enough: the first login proves the config, the
/// trust user and the route to a backend all work.
fn wait_ready(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    proxy: &mut ChildGuard,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = proxy.exited() {
            return Err(format!(
                "pgsplit exited ({status}); log tail:\n{}",
                log_tail(Some(log))
            ));
        }
        let err = match rt.block_on(idle::login(addr, TRUST_USER)) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "no login through pgsplit within {}s (last: {err}); log tail:\n{}",
                READY_TIMEOUT.as_secs(),
                log_tail(Some(log))
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn markdown(r: &Report) -> String {
    // Decimal MB, the unit of the target column.
    let mb = |kib: u64| format!("{:.1} MB", kib as f64 * 1024.0 / 1e6);
    let per = r
        .per_client_kib
        .map_or("n/a".into(), |k| format!("{k:.1} KiB"));
    let verdict = if r.under_target { "yes" } else { "NO" };
    let clients = if r.opened == r.clients {
        r.clients.to_string()
    } else {
        format!("{} of {}", r.opened, r.clients)
    };
    format!(
        "| clients | RSS at rest | RSS with clients idle | per client | peak (VmHWM) | under {TARGET_MB} MB |\n\
         |--------:|------------:|----------------------:|-----------:|-------------:|:-------------|\n\
         | {clients} | {rest} | {loaded} | {per} | {peak} | {verdict} |\n",
        rest = mb(r.at_rest.rss_kib),
        loaded = mb(r.with_clients.rss_kib),
        peak = mb(r.with_clients.hwm_kib),
    )
}
