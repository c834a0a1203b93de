//! `xmpp-sip-gateway`: the daemon, its config check, and the `ctl` client.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 configuration (or usage) error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use xmpp_sip_gateway::config::{self, Config, LogFormat};
use xmpp_sip_gateway::{ctl, daemon};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// Presence gateway between XMPP (XEP-0114 component) and SIP (SIMPLE).
#[derive(Debug, Parser)]
#[command(name = "xmpp-sip-gateway", version, about)]
struct Cli {
    /// Configuration file. Environment variables XSG_<SECTION>__<KEY> override it.
    #[arg(long, short = 'c', value_name = "FILE", default_value = "gateway.toml")]
    config: PathBuf,

    /// Validate the configuration, print every error with its key path, and exit
    /// (0 when valid, 2 otherwise).
    #[arg(long)]
    check_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running gateway's management API.
    Ctl(ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Ctl(args)) = cli.command {
        return exit_code(ctl::run(args));
    }

    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: invalid configuration:", cli.config.display());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }

    if let Err(e) = init_tracing(&config) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run(config: Config) -> Result<(), daemon::DaemonError> {
    let cancel = CancellationToken::new();
    // Installed before anything is bound, so a signal that arrives once the daemon reports
    // running is never handled by the default action (which would not shut down cleanly).
    let signals = Signals::install();
    let token = cancel.clone();
    tokio::spawn(async move {
        signals.recv().await;
        token.cancel();
    });
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "xmpp-sip-gateway starting"
    );
    daemon::run(config, cancel).await
}

/// SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Signals {
                    handlers: Some((term, int)),
                },
                _ => {
                    error!("cannot install signal handlers; stop with SIGKILL");
                    Signals { handlers: None }
                }
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Resolves on the first signal (never, when no handler could be installed).
    async fn recv(self) {
        #[cfg(unix)]
        {
            let Some((mut term, mut int)) = self.handlers else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
                _ = int.recv() => info!(signal = "SIGINT", "shutdown requested"),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                return std::future::pending().await;
            }
            info!(signal = "ctrl-c", "shutdown requested");
        }
    }
}

/// Logs to stderr, as text or JSON lines. `RUST_LOG`, when set, replaces `log.level`.
fn init_tracing(config: &Config) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG={v:?}: {e}"))?
        }
        _ => EnvFilter::try_new(&config.log.level).map_err(|e| format!("log.level: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let result = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| e.to_string())
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_RUNTIME))
}
