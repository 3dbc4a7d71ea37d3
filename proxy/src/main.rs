use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgsplit_config::Config;

/// PostgreSQL read/write-splitting proxy.
#[derive(Parser)]
#[command(name = "pgsplit", version, about)]
struct Cli {
    /// Configuration file (TOML). Also read from PGSPLIT_CONFIG.
    #[arg(long, short, global = true, env = "PGSPLIT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate a configuration file and print the effective configuration
    /// with secrets masked.
    CheckConfig {
        /// The file to check (defaults to --config).
        path: Option<PathBuf>,
    },
    /// Start a local primary with streaming replicas from the installed
    /// PostgreSQL binaries and serve them through pgsplit until Ctrl-C.
    /// With --config, that file's settings apply; the demo fills in its
    /// own backends and users.
    Demo {
        /// Address the proxy listens on [default: the config's `listen`
        /// if it sets one, else 127.0.0.1:5432].
        #[arg(long)]
        listen: Option<String>,
        /// Number of streaming replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// How pgsplit reaches the demo's servers, which take TLS with the
        /// demo's certificate: disable, prefer, require, verify-ca or
        /// verify-full.
        #[arg(long, default_value = "verify-full")]
        server_tls: pgsplit_config::ServerTls,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { path } => check_config(path.or(cli.config)),
        Command::Run => run(cli.config),
        Command::Demo {
            listen,
            replicas,
            server_tls,
        } => demo(cli.config, listen, replicas, server_tls),
    }
}

fn demo(
    path: Option<PathBuf>,
    listen: Option<String>,
    replicas: usize,
    server_tls: pgsplit_config::ServerTls,
) -> ExitCode {
    let (base, sets_listen) = match Config::load_base(path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(base.log_format);
    if !base.backends.is_empty() || !base.users.is_empty() {
        eprintln!("pgsplit demo: the configuration's [[backends]] and [[users]] are replaced by the demo's own");
    }
    let listen = match listen {
        Some(l) => l,
        None if sets_listen => base.listen.clone(),
        None => "127.0.0.1:5432".to_owned(),
    };
    runtime(base.threads()).block_on(pgsplit::demo::run(base, &listen, replicas, server_tls))
}

fn init_logging(format: pgsplit_config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSPLIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if format == pgsplit_config::LogFormat::Json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .init();
        return;
    }
    // Logs go to stderr, coloured only on a terminal: a file or journald
    // must not get escape codes.
    // A log line that cannot be written is lost, not fatal: by default the
    // subscriber reports the failure with eprintln!, which panics when
    // stderr is a pipe whose reader has gone (a shell that exited, a log
    // collector restarting), and the panic ended the proxy.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    match load(path) {
        Some(config) => {
            print!("{}", config.to_masked_toml());
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// The validated configuration, its certificates read and checked; None
/// (with the reasons printed) if it cannot be used.
fn load(path: Option<PathBuf>) -> Option<Config> {
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return None;
        }
    };
    if let Err(e) = pgsplit::tls::ClientTlsSetup::load(&config.tls) {
        eprintln!("{e}");
        return None;
    }
    if let Err(e) = pgsplit::tls::ServerTlsSetup::load_all(&config) {
        eprintln!("{e}");
        return None;
    }
    Some(config)
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let Some(config) = load(path.clone()) else {
        return ExitCode::FAILURE;
    };
    init_logging(config.log_format);
    runtime(config.threads()).block_on(async move {
        let proxy = match pgsplit::start(config).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("pgsplit: {e}");
                return ExitCode::FAILURE;
            }
        };
        proxy.core().source.set(path);
        pgsplit::signals::serve_until_stopped(proxy).await;
        ExitCode::SUCCESS
    })
}
