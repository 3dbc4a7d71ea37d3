//! Where reads go under pgsplit's read-your-writes modes: pgbench probes
//! that read back their own writes, and readers next to writers of the
//! same and of another user, through pgsplit in each mode, with the reads
//! on replicas and on the primary counted from pgsplit's metrics.
//!
//! ```sh
//! cargo build --release -p pgsplit
//! cargo run --release -p pgsplit-benches --bin ryw -- --modes causal,user,global
//! ```
//!
//! See `pgsplit_benches::ryw`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use clap::Parser;
use pgsplit_benches::e2e::configs::Layout;
use pgsplit_benches::e2e::pgbench::Pgbench;
use pgsplit_benches::e2e::scratch::Scratch;
use pgsplit_benches::e2e::targets::{self, Env};
use pgsplit_benches::e2e::{pgsplit_binary, workspace_root, write_json};
use pgsplit_benches::ryw::clients::Endpoint;
use pgsplit_benches::ryw::report::{self, Report};
use pgsplit_benches::ryw::scenarios::{self, Ctx, ScenarioResult};
use pgsplit_benches::ryw::{setup, utc_timestamp, Scenario, MODES};
use pgsplit_cluster::Cluster;

#[derive(Parser, Debug)]
#[command(about = "Where reads go under pgsplit's read-your-writes modes")]
struct Args {
    /// The pgsplit binary under test [default: <workspace>/target/release/pgsplit].
    #[arg(long)]
    pgsplit: Option<PathBuf>,
    /// `routing.read_your_writes` values, each measured with its own pgsplit.
    #[arg(long, value_delimiter = ',', default_values = ["causal", "user", "global"])]
    modes: Vec<String>,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// JSON output [default: <workspace>/bench-results/ryw.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ryw: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when a mode failed or a read missed its own write.
fn run(args: &Args) -> Result<bool, String> {
    check_args(args)?;
    let binary = pgsplit_binary(args.pgsplit.clone())?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench-results/ryw.json"));
    let bindir = pgsplit_cluster::find_bindir().map_err(|e| e.to_string())?;
    // pgsplit and pgbench run as we do, so the scratch needs no other owner.
    let scratch = scratch("setup")?;
    eprintln!("starting a primary and {} replicas...", setup::REPLICAS);
    let cluster = setup::start_cluster()?;
    let layout = setup::layout(&cluster);
    let pgbench = Pgbench {
        program: bindir.join("pgbench"),
        user: layout.user.clone(),
        password: layout.password.clone(),
        dbname: "postgres".into(),
        sslmode: "disable",
        scratch: scratch.path().to_path_buf(),
    };
    eprintln!(
        "loading pgbench data (scale {}) on the primary...",
        setup::SCALE
    );
    setup::prepare(&cluster, &pgbench)?;
    let mut results = Vec::new();
    let mut problems = Vec::new();
    for mode in &args.modes {
        let measured = (|| {
            setup::vacuum(&cluster)?;
            one_mode(args, &cluster, &layout, (&binary, &bindir), mode)
        })();
        match measured {
            Ok(r) => results.extend(r),
            Err(e) => problems.push(format!("{mode}: {e}")),
        }
    }
    let report = Report {
        pgsplit_binary: binary.display().to_string(),
        git_describe: git_describe(&workspace_root()),
        date: utc_timestamp(unix_now()),
        unix_time: unix_now(),
        postgres: targets::banner(&bindir.join("postgres")).unwrap_or_default(),
        seconds_per_scenario: args.seconds,
        modes: &args.modes,
        results: &results,
        problems: &problems,
    };
    write_json(&json, &report)?;
    print!("{}", report::tables(&results));
    println!("\nresults: {}", json.display());
    let alarms = report::alarms(&results);
    for line in problems.iter().chain(&alarms) {
        eprintln!("!!! {line}");
    }
    let violations: u64 = results.iter().map(ScenarioResult::violations).sum();
    Ok(problems.is_empty() && violations == 0)
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.seconds == 0 || args.modes.is_empty() {
        return Err("--seconds and --modes must not be empty".into());
    }
    match args.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        Some(m) => Err(format!(
            "unknown mode {m:?}; expected one of {}",
            MODES.join(", ")
        )),
        None => Ok(()),
    }
}

/// Every scenario through a pgsplit of its own in `mode`; the pgsplit is
/// stopped (its guard dropped) on every return.
fn one_mode(
    args: &Args,
    cluster: &Cluster,
    layout: &Layout,
    (binary, bindir): (&Path, &Path),
    mode: &str,
) -> Result<Vec<ScenarioResult>, String> {
    // Its own directory: its config, log and pgbench output.
    let scratch = scratch(mode)?;
    let env = Env {
        layout,
        scratch: &scratch,
        owner: None,
        psql: bindir.join("psql"),
    };
    eprintln!("[{mode}] starting pgsplit...");
    let (mut target, metrics) = setup::start_pgsplit(&env, binary, mode)?;
    let endpoint = Endpoint {
        pgbench: bindir.join("pgbench"),
        port: target.port,
        password: layout.password.clone(),
        dir: scratch.path().to_path_buf(),
    };
    let ctx = Ctx {
        endpoint: &endpoint,
        superuser: &layout.user,
        metrics,
        seconds: args.seconds,
    };
    let mut results = Vec::new();
    for scenario in Scenario::ALL {
        setup::catch_up(cluster)?;
        let r = scenarios::run(&ctx, mode, scenario)?;
        eprintln!("[{mode}] {}", progress(&r));
        // A pgsplit that died mid-run explains every failure after it.
        target.check_alive()?;
        results.push(r);
    }
    Ok(results)
}

fn progress(r: &ScenarioResult) -> String {
    let share = r.delta.replica_share().unwrap_or(0.0);
    format!(
        "{:<24} replica share {share:>5.1}%  reads {}/{} (replicas/primary)  tps {:.0}  violations {}  errors {}",
        r.scenario.name(),
        r.delta.reads_on_replicas,
        r.delta.reads_on_primary,
        r.main_tps().unwrap_or(0.0),
        r.violations(),
        r.errors()
    )
}

/// `/tmp/pgsplit-ryw-<pid>-<name>`, removed when dropped.
fn scratch(name: &str) -> Result<Scratch, String> {
    let dir = format!("pgsplit-ryw-{}-{name}", std::process::id());
    Scratch::at(std::env::temp_dir().join(dir), None)
}

fn git_describe(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["describe", "--always", "--dirty", "--tags"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
