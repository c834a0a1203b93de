//! `xsg-load`: drives a presence gateway on loopback from both sides (it plays the XMPP
//! server and the SIP user agents) and measures it. See docs/load-tool.md.
//!
//! Modes: `check` (small, bounded, asserts correctness; exit 1 on failure),
//! `throughput` (delivered updates/s, latency percentiles, loss, CPU, RSS, ratios to a raw
//! UDP forwarder), `scale` (many subscriptions: RSS per subscription, refresh spread,
//! restart resync), `baseline` (the raw forwarder alone), and `agent` / `agent-check`
//! (SIP publishers and watchers against a presence server, e.g. the embedded agent).
//!
//! Exit codes: 0 pass, 1 check failed or the run failed, 2 usage error, 3 out of time.

mod agent;
mod baseline;
mod driver;
mod gateway;
mod modes;
mod pidf;
mod procfs;
mod registrations;
mod sipmsg;
mod sock;
mod stats;
mod xmpp;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = modes::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xsg-load: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(modes::run(cli));
    // Blocking helper threads (the XMPP reader/writer) never finish on their own.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}
