//! Conformance runner: PostgreSQL's core regression suite directly against
//! a primary, then through pgsplit in each pooling mode, with each
//! proxied run's result files compared with the direct run's.
//!
//! ```sh
//! cargo build --release -p pgsplit
//! cargo run --release -p pgsplit-benches --bin regress
//! ```
//!
//! The first run fetches the suite for the installed server (`apt-get
//! source`, adding `deb-src` entries if there are none) and builds its C
//! modules; later runs use the cache. See `pgsplit_benches::regress`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use pgsplit_benches::e2e::child::{drop_root_to_postgres, Owner};
use pgsplit_benches::e2e::{pgsplit_binary, workspace_root, write_json};
use pgsplit_benches::regress::compare::{self, Difference};
use pgsplit_benches::regress::pg_regress::{self, PgRegress};
use pgsplit_benches::regress::runs::{self, Context, Record};
use pgsplit_benches::regress::suite::{default_cache_dir, Suite};
use pgsplit_benches::regress::summary::{self, ModeSummary, RoundSummary, RunSummary, Summary};
use pgsplit_benches::regress::{schedule, Mode};

#[derive(Parser, Debug)]
#[command(
    about = "PostgreSQL's regression suite directly and through pgsplit, result files compared"
)]
struct Args {
    /// The pgsplit binary under test [default: <workspace>/target/release/pgsplit].
    #[arg(long)]
    pgsplit: Option<PathBuf>,
    /// Runs compared with the direct one: transaction, session, and
    /// direct (a second direct run: the suite's own noise on this machine).
    #[arg(long, value_delimiter = ',', default_values = ["transaction", "session"])]
    modes: Vec<Mode>,
    /// Keep every run's results, logs and the suite copy, not only the diffs.
    #[arg(long)]
    keep: bool,
    /// Output directory, emptied first [default: <workspace>/bench-results/regress].
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON summary [default: <workspace>/bench-results/regress.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Source and built modules, kept between runs [default: ~/.cache/pgsplit-regress].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Runs per mode: which tests differ through a pool varies from run to
    /// run (which connection a request lands on, replay timing).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Longest a single pg_regress run may take, in seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("regress: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when a run did not finish, so its comparison is partial.
fn run(args: &Args) -> Result<bool, String> {
    if args.rounds == 0 || args.modes.is_empty() {
        return Err("--rounds and --modes must not be empty".into());
    }
    let started = Instant::now();
    let setup = Setup::new(args)?;
    let pg_regress = setup.pg_regress(args)?;
    let runs_dir = setup.out.join("runs");
    let ctx = Context {
        pg_regress: &pg_regress,
        bindir: &setup.bindir,
        pgsplit: setup.pgsplit.as_deref(),
        owner: setup.owner,
        runs_dir: &runs_dir,
    };
    eprintln!(
        "{} tests; output in {}",
        setup.tests.len(),
        setup.out.display()
    );
    let mut problems = Vec::new();
    let (base, direct) = baseline(&ctx, &mut problems)?;
    let modes = every_round(&ctx, args, &setup, &base, &mut problems);
    let report = Summary {
        postgres: setup.versions.0.clone(),
        suite_version: setup.suite.server.version.clone(),
        pg_regress: setup.versions.1.clone(),
        pgsplit_binary: setup.pgsplit.as_ref().map(|p| p.display().to_string()),
        tests: setup.tests.len(),
        output_dir: setup.out.display().to_string(),
        finished_at_unix: unix_now(),
        total_seconds: started.elapsed().as_secs_f64(),
        direct: &direct,
        modes: &modes,
        problems: &problems,
    };
    write_json(&setup.json, &report)?;
    print_report(&report, &setup.json);
    if !args.keep {
        let _ = fs::remove_dir_all(&runs_dir);
        let _ = fs::remove_dir_all(setup.out.join("suite"));
    }
    let all_rounds = |m: &ModeSummary| m.rounds.len() == args.rounds;
    let complete = |m: &ModeSummary| m.rounds.iter().all(|r| r.run.complete);
    Ok(modes.iter().all(|m| all_rounds(m) && complete(m)))
}

/// What the runs need, found or built before the first one.
struct Setup {
    out: PathBuf,
    json: PathBuf,
    bindir: PathBuf,
    owner: Option<Owner>,
    pgsplit: Option<PathBuf>,
    suite: Suite,
    tests: Vec<String>,
    /// `postgres --version`, `pg_regress --version`.
    versions: (String, String),
}

impl Setup {
    fn new(args: &Args) -> Result<Setup, String> {
        let root = workspace_root();
        let bindir = pgsplit_cluster::find_bindir().map_err(|e| e.to_string())?;
        // The binary is checked before minutes go into fetching the suite.
        let proxied = args.modes.iter().any(|m| m.pool_mode().is_some());
        let pgsplit = proxied
            .then(|| pgsplit_binary(args.pgsplit.clone()))
            .transpose()?;
        let cache = args.cache.clone().unwrap_or_else(default_cache_dir);
        let suite = Suite::obtain(&cache, &bindir)?;
        let schedule = suite.regress_dir.join("parallel_schedule");
        let text =
            fs::read_to_string(&schedule).map_err(|e| format!("{}: {e}", schedule.display()))?;
        let versions = pg_regress::versions(&bindir, &suite.server)?;
        Ok(Setup {
            out: args
                .out
                .clone()
                .unwrap_or_else(|| root.join("bench-results/regress")),
            json: args
                .json
                .clone()
                .unwrap_or_else(|| root.join("bench-results/regress.json")),
            owner: drop_root_to_postgres()?,
            bindir,
            pgsplit,
            tests: schedule::parse(&text)?,
            suite,
            versions,
        })
    }

    /// Empties the output directory and stages the suite in it.
    fn pg_regress(&self, args: &Args) -> Result<PgRegress, String> {
        runs::prepare_output_dir(&self.out, self.owner.is_some())?;
        Ok(PgRegress {
            program: pg_regress::find(&self.bindir)?,
            bindir: self.bindir.clone(),
            staged: self.suite.stage(&self.out.join("suite"), self.owner)?,
            owner: self.owner,
            timeout: Duration::from_secs(args.timeout),
        })
    }
}

/// The direct run everything is compared with; it must have finished.
fn baseline(ctx: &Context, problems: &mut Vec<String>) -> Result<(Record, RunSummary), String> {
    let base = runs::run(ctx, None, "direct")?;
    problems.extend(base.warnings.iter().cloned());
    let direct = base.summary("direct");
    if !direct.complete {
        return Err(format!(
            "the direct run did not finish{}; nothing to compare with (see {})",
            summary::incomplete_note(&direct).unwrap_or_default(),
            base.dir.display()
        ));
    }
    Ok((base, direct))
}

/// Every mode, round after round (so drift lands on all modes alike);
/// a run that fails to start is a problem, not the end of the others.
fn every_round(
    ctx: &Context,
    args: &Args,
    setup: &Setup,
    base: &Record,
    problems: &mut Vec<String>,
) -> Vec<ModeSummary> {
    let mut rounds: Vec<Vec<RoundSummary>> = vec![Vec::new(); args.modes.len()];
    for round in 1..=args.rounds {
        for (i, &mode) in args.modes.iter().enumerate() {
            let name = run_name(mode, round, args.rounds);
            match compared_run(ctx, mode, &name, base, &setup.tests, &setup.out) {
                Ok((r, warnings)) => {
                    problems.extend(warnings);
                    let names: Vec<&str> = r.differ.iter().map(|d| d.test.as_str()).collect();
                    eprintln!("[{name}] {} differ: {}", names.len(), names.join(", "));
                    rounds[i].push(r);
                }
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
    }
    let modes = args.modes.iter().zip(rounds);
    modes
        .map(|(&mode, rounds)| ModeSummary {
            mode,
            label: mode.label(),
            differ: summary::tally(&setup.tests, &rounds),
            rounds,
        })
        .collect()
}

/// `transaction`, or `transaction-2` for the second of several rounds.
fn run_name(mode: Mode, round: usize, rounds: usize) -> String {
    match rounds {
        1 => mode.dir_name().to_owned(),
        _ => format!("{}-{round}", mode.dir_name()),
    }
}

/// One run compared with the baseline, its diffs written to
/// `<out>/diffs/<name>/`.
fn compared_run(
    ctx: &Context,
    mode: Mode,
    name: &str,
    base: &Record,
    tests: &[String],
    out: &Path,
) -> Result<(RoundSummary, Vec<String>), String> {
    let record = runs::run(ctx, Some(mode), name)?;
    let found = compare::differing(tests, &base.dir, &record.dir);
    let differ: Vec<Difference> = compare::write_diffs(
        &found,
        (&base.dir, &record.dir),
        ("direct", name),
        &out.join("diffs").join(name),
    )?;
    let round = RoundSummary {
        run: record.summary(name),
        differ,
    };
    Ok((round, record.warnings))
}

fn print_report(report: &Summary, json: &Path) {
    let total = report.tests;
    println!("\n{}", summary::expected_line(report.direct, total));
    for m in report.modes {
        println!("{}", summary::differ_line(m, total));
        for t in &m.differ {
            let first = t.first_change.as_deref().unwrap_or("");
            println!("    {:<20} {}", t.test, clip(first, 100));
        }
    }
    println!(
        "\ndiffs: {}/diffs\nsummary: {}",
        report.output_dir,
        json.display()
    );
    for p in report.problems {
        eprintln!("!!! {p}");
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
