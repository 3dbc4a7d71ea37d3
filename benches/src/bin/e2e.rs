//! End-to-end comparison: pgbench through pgsplit, directly against the
//! primary, and through PgBouncer / pgpool-II when installed.
//!
//! The machine is small and noisy (2 cores shared by pgbench, the proxy and
//! three servers), so targets are measured interleaved: every round runs
//! every target back to back on the same cell, and the target order rotates
//! from round to round. Drift (a checkpoint, a noisy neighbour, the page
//! cache warming) then lands on all targets alike instead of on whichever
//! one happened to run during it.
//!
//! Build the proxy first: `cargo build --release -p pgsplit`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use pgsplit_benches::e2e::child::{drop_root_to_postgres, Owner};
use pgsplit_benches::e2e::configs::{Layout, TlsFiles};
use pgsplit_benches::e2e::measure::{measure, progress};
use pgsplit_benches::e2e::pgbench::Pgbench;
use pgsplit_benches::e2e::report::{self, Machine, Report, Run, Settings, Skip, TargetInfo};
use pgsplit_benches::e2e::scratch::{write, Scratch};
use pgsplit_benches::e2e::targets::{self, Env, Peer, Target};
use pgsplit_benches::e2e::{
    pgsplit_binary, procstat, workspace_root, write_json, Cell, Mode, Workload,
};
use pgsplit_cluster::{Cluster, ClusterOptions, ServerCert};

#[derive(Parser, Debug)]
#[command(about = "Interleaved pgbench comparison of pgsplit, direct, PgBouncer and pgpool-II")]
struct Args {
    /// The pgsplit binary under test [default: <workspace>/target/release/pgsplit].
    #[arg(long)]
    pgsplit: Option<PathBuf>,
    /// Streaming replicas in the cluster.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// pgbench scale factor (100 000 accounts each).
    #[arg(long, default_value_t = 10)]
    scale: u32,
    #[arg(long, value_delimiter = ',', default_values = ["select-only", "tpcb-like"])]
    workloads: Vec<Workload>,
    #[arg(long, value_delimiter = ',', default_values = ["simple", "extended", "prepared"])]
    modes: Vec<Mode>,
    #[arg(long, value_delimiter = ',', default_values = ["1", "16", "64"])]
    clients: Vec<u32>,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// Measurements per cell and target.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Unrecorded select-only run per target first, to warm caches and pools.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// JSON output [default: <workspace>/bench-results/e2e.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Stop measuring after this many seconds [default: twice the estimate + 5 min].
    #[arg(long)]
    time_limit: Option<u64>,
    /// TLS on both hops: the servers take TLS logins only, every client
    /// (pgbench, direct too) uses sslmode=require, and pgsplit and PgBouncer
    /// serve a certificate and reach the servers over TLS. pgpool is skipped.
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when the run finished but something must fail the exit code.
fn run(args: &Args) -> Result<bool, String> {
    if args.clients.contains(&0) || args.rounds == 0 || args.duration == 0 {
        return Err("--clients, --rounds and --duration must be positive".into());
    }
    let root = workspace_root();
    let binary = pgsplit_binary(args.pgsplit.clone())?;
    let cells = Cell::grid(&args.workloads, &args.modes, &args.clients);
    let started = Instant::now();
    let limit = Duration::from_secs(
        args.time_limit
            .unwrap_or_else(|| default_limit(args, cells.len())),
    );
    let bindir = pgsplit_cluster::find_bindir().map_err(|e| e.to_string())?;
    let owner = drop_root_to_postgres()?;

    eprintln!("starting a primary with {} replica(s)...", args.replicas);
    let max_clients = *args.clients.iter().max().expect("clients is non-empty");
    let scratch = Scratch::create(owner)?;
    let certificate = match args.tls {
        true => Some(certificate(&scratch, owner)?),
        false => None,
    };
    let cluster = Cluster::start(ClusterOptions {
        replicas: args.replicas,
        extra_conf: server_conf(max_clients),
        tls: certificate.as_ref().map(|(cert, _)| cert.clone()),
        ..ClusterOptions::default()
    })
    .map_err(|e| format!("cluster: {e}"))?;
    let layout = Layout {
        primary_port: cluster.port(0),
        replica_ports: (1..=args.replicas).map(|i| cluster.port(i)).collect(),
        user: cluster.superuser().to_owned(),
        password: cluster.password().to_owned(),
        max_clients,
        tls: certificate.map(|(_, files)| files),
    };
    let pgbench = Pgbench {
        program: bindir.join("pgbench"),
        user: layout.user.clone(),
        password: layout.password.clone(),
        dbname: "postgres".into(),
        sslmode: layout.sslmode(),
        scratch: scratch.path().to_path_buf(),
    };
    eprintln!(
        "loading pgbench data (scale {}) on the primary...",
        args.scale
    );
    pgbench.init(layout.primary_port, args.scale)?;
    // pgpool balances reads onto replicas: they must have the data too.
    cluster
        .wait_for_replay(Duration::from_secs(120))
        .map_err(|e| format!("replicas did not catch up after pgbench -i: {e}"))?;

    let env = Env {
        layout: &layout,
        scratch: &scratch,
        owner,
        psql: bindir.join("psql"),
    };
    let pg_version = targets::banner(&bindir.join("postgres")).unwrap_or_default();
    let mut all = vec![
        Target::direct(&layout, pg_version.clone()),
        targets::spawn_pgsplit(&env, &binary)?,
    ];
    let mut skipped = Vec::new();
    for peer in [targets::spawn_pgbouncer(&env), targets::spawn_pgpool(&env)] {
        match peer {
            Peer::Ready(t) => all.push(t),
            Peer::Skipped { name, reason } => skipped.push(TargetInfo {
                name: name.into(),
                measured: false,
                version: String::new(),
                note: Some(reason),
            }),
        }
    }
    let infos: Vec<TargetInfo> = all.iter().map(target_info).chain(skipped).collect();
    print_targets(&infos);

    let hz = procstat::ticks_per_second();
    let mut runs = Vec::new();
    let mut skips = Vec::new();
    let mut problems = Vec::new();
    if args.warmup > 0 {
        let warm = Cell {
            workload: Workload::SelectOnly,
            mode: Mode::Simple,
            clients: max_clients,
        };
        for t in &all {
            eprintln!(
                "warm-up: {} ({}s, {max_clients} clients)",
                t.name, args.warmup
            );
            pgbench.run(t.port, &warm, args.warmup)?;
        }
    }
    let complete = 'rounds: {
        for round in 0..args.rounds {
            for cell in &cells {
                for position in 0..all.len() {
                    if started.elapsed() > limit {
                        problems.push(format!(
                            "time limit of {}s reached; results are partial",
                            limit.as_secs()
                        ));
                        break 'rounds false;
                    }
                    // Rotate so each target takes each slot in turn.
                    let n = all.len();
                    let target = &mut all[(position + round as usize) % n];
                    if let Err(e) = target.check_alive() {
                        problems.push(e);
                        break 'rounds false;
                    }
                    if let Some(why) = target.unsupported(cell.mode) {
                        if round == 0 {
                            skips.push(Skip {
                                cell: *cell,
                                target: target.name.into(),
                                reason: why.into(),
                            });
                        }
                        continue;
                    }
                    if cell.workload == Workload::TpcbLike {
                        reset_tpcb(&cluster)?;
                    }
                    let run = measure(&pgbench, target, cell, args.duration, hz, round, position)?;
                    eprintln!("{}", progress(&run, args.rounds));
                    runs.push(run);
                }
            }
        }
        true
    };

    let names: Vec<&str> = all.iter().map(|t| t.name).collect();
    let rows = report::summarize(&cells, &names, &runs, &skips);
    let failed: Vec<&Run> = runs.iter().filter(|r| r.failures > 0).collect();
    for r in &failed {
        problems.push(format!(
            "FAILURES: {} failed transaction(s) via {} on {} {} c={} round {}: {}",
            r.failures,
            r.target,
            r.cell.workload,
            r.cell.mode,
            r.cell.clients,
            r.round + 1,
            r.error.as_deref().unwrap_or("see pgbench output")
        ));
    }
    let machine = Machine::probe(
        first_line(&pg_version),
        first_line(&targets::banner(&pgbench.program).unwrap_or_default()),
        hz,
    );
    let settings = Settings {
        scale: args.scale,
        duration_s: args.duration,
        rounds: args.rounds,
        warmup_s: args.warmup,
        replicas: args.replicas,
        clients: args.clients.clone(),
        workloads: args.workloads.iter().map(|w| w.to_string()).collect(),
        modes: args.modes.iter().map(|m| m.to_string()).collect(),
        pgsplit_binary: binary.display().to_string(),
        tls: args.tls,
    };
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| root.join("bench-results/e2e.json"));
    let report = Report {
        machine: &machine,
        settings: &settings,
        targets: &infos,
        complete,
        problems: &problems,
        summary: &rows,
        runs: &runs,
    };
    write_json(&json_path, &report)?;

    println!(
        "\n{} cores ({}), {}, scale {}, {}s x {} rounds, interleaved{}\n",
        machine.nproc,
        machine.cpu_model,
        machine.postgres_version,
        args.scale,
        args.duration,
        args.rounds,
        if args.tls { ", TLS on both hops" } else { "" }
    );
    print!("{}", report::markdown(&rows));
    println!("\nraw runs and summary: {}", json_path.display());
    for p in &problems {
        eprintln!("\n!!! {p}");
    }
    // Proxies stop first (they hold server connections), then the cluster.
    drop(all);
    cluster.shutdown();
    Ok(complete && failed.is_empty())
}

/// A self-signed certificate for 127.0.0.1, for the servers (hostssl
/// rules only, so no client can fall back to plaintext) and, as files in
/// the scratch directory readable by the proxies, for the proxies.
fn certificate(scratch: &Scratch, owner: Option<Owner>) -> Result<(ServerCert, TlsFiles), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let (cert_pem, key_pem) = (made.cert.pem(), made.key_pair.serialize_pem());
    let files = TlsFiles {
        cert: scratch.path().join("server.pem"),
        key: scratch.path().join("server.key"),
    };
    write(&files.cert, &cert_pem, owner)?;
    write(&files.key, &key_pem, owner)?;
    let cert = ServerCert {
        cert_pem,
        key_pem,
        hostssl_only: true,
    };
    Ok((cert, files))
}

/// Generous: twice the time the runs should take, plus setup.
fn default_limit(args: &Args, cells: usize) -> u64 {
    let per_run = u64::from(args.duration) + 3;
    let runs = cells as u64 * u64::from(args.rounds) * 4;
    2 * (runs * per_run + 4 * u64::from(args.warmup)) + 300 + 10 * u64::from(args.scale)
}

/// Realistic buffers (scale 10 is ~160 MB) and room for every pool at once:
/// PgBouncer's and pgpool's idle server connections stay open while the
/// next target runs its own `max_clients` sessions.
fn server_conf(max_clients: u32) -> Vec<(String, String)> {
    let connections = (4 * max_clients + 50).max(200);
    vec![
        ("shared_buffers".into(), "256MB".into()),
        ("max_connections".into(), connections.to_string()),
    ]
}

/// What pgbench itself does before a tpcb-like run, done directly on the
/// primary (pgbench runs with -n) so every target starts from the same state
/// and no proxy is timed relaying maintenance. The checkpoint keeps a
/// scheduled one from landing inside a single target's run.
fn reset_tpcb(cluster: &Cluster) -> Result<(), String> {
    cluster
        .psql(
            0,
            "postgres",
            "VACUUM pgbench_branches;\nVACUUM pgbench_tellers;\nTRUNCATE pgbench_history;\nCHECKPOINT;",
        )
        .map(drop)
        .map_err(|e| format!("resetting tpcb tables: {e}"))
}

fn target_info(t: &Target) -> TargetInfo {
    let limits: Vec<String> = t
        .unsupported
        .iter()
        .map(|(m, why)| format!("{m}: {why}"))
        .collect();
    TargetInfo {
        name: t.name.into(),
        measured: true,
        version: t.version.clone(),
        note: (!limits.is_empty()).then(|| format!("cannot run {}", limits.join("; "))),
    }
}

fn print_targets(infos: &[TargetInfo]) {
    eprintln!("targets:");
    for t in infos {
        let state = if t.measured { "measured" } else { "SKIPPED " };
        let note = t
            .note
            .as_deref()
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        eprintln!("  {state} {:<9} {}{note}", t.name, first_line(&t.version));
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}
