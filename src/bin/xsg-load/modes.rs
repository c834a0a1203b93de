//! The command line and the four modes.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::baseline::{self, Pace};
use crate::driver::{Action, ClosedLoop, Dir, Flowctl, Harness, Names, UaSettings};
use crate::gateway::{self, Gateway};
use crate::procfs;
use crate::stats::{FlowReport, Percentiles, RateSummary};
use crate::xmpp;

/// Load and correctness tool for an XMPP⇄SIP presence gateway (loopback only).
#[derive(Debug, Parser)]
#[command(name = "xsg-load", version)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Small, bounded correctness run: every subscription established, every last state right.
    Check(CheckArgs),
    /// Delivered updates/s, latency, loss, CPU and RSS per direction, with ratios to a raw forwarder.
    Throughput(ThroughputArgs),
    /// Many subscriptions: RSS per subscription, refresh spread, restart resync.
    Scale(ScaleArgs),
    /// The raw loopback UDP forwarder alone (the machine's limit).
    Baseline(BaselineArgs),
    /// SIP publishers and watchers against a presence server (the embedded presence
    /// agent, Kamailio, ...): PUBLISH/s composed and notified, NOTIFY/s, latency, cost.
    Agent(crate::agent::AgentArgs),
    /// A small, bounded `agent` run asserting no loss and the right last state (for CI).
    AgentCheck(crate::agent::AgentArgs),
    /// REGISTER copies → usrloc PUBLISH: throughput, latency, CPU and PSS per binding,
    /// against a same-run baseline without usrloc.
    Usrloc(crate::registrations::UsrlocArgs),
}

/// A send rate: a number per second, or `max` (closed loop).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    Max,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
            _ => Err(format!("{s:?} is neither a positive number nor \"max\"")),
        }
    }
}

impl Rate {
    fn label(self) -> String {
        match self {
            Rate::PerSecond(r) => format!("{r}/s"),
            Rate::Max => "max".into(),
        }
    }
}

/// The gateway under test and every name and address the tool uses.
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// Where the tool listens as the XMPP server for the component connection.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub xmpp_listen: SocketAddr,
    /// The component's shared secret (XEP-0114 handshake).
    #[arg(long, default_value = "component-secret")]
    pub secret: String,
    /// The component domain (where SIP users appear as JIDs).
    #[arg(long, default_value = "sip.xmpp.test")]
    pub component: String,
    /// The XMPP users' domain.
    #[arg(long, default_value = "xmpp.test")]
    pub xmpp_domain: String,
    /// The SIP users' domain.
    #[arg(long, default_value = "sip.test")]
    pub sip_domain: String,
    /// Host of XMPP users' SIP URIs (sip:u1@HOST); defaults to --xmpp-domain.
    #[arg(long)]
    pub xmpp_sip_domain: Option<String>,
    /// The gateway's SIP UDP address. Required unless --gateway-cmd is given (then a
    /// free port is picked when omitted).
    #[arg(long)]
    pub gateway_sip: Option<SocketAddr>,
    /// The watchers' UDP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub ua_listen: SocketAddr,
    /// The presence server's UDP address (the gateway's outbound proxy).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub ps_listen: SocketAddr,
    /// Start the gateway with this shell command; `{config}` is replaced by the path of
    /// a generated config (otherwise `--config PATH` is appended). Stopped by PID on exit.
    #[arg(long)]
    pub gateway_cmd: Option<String>,
    /// PID of an already running gateway, for CPU and RSS figures.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Seconds to wait for the component to connect and the SIP side to answer.
    #[arg(long, default_value_t = 20)]
    pub ready_timeout: u64,
    /// Directory for the generated config, store and gateway log (default: a new temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// SIP watchers are sip:<prefix><i>@<sip-domain>, seen as <prefix><i>@<component>.
    #[arg(long, default_value = "w")]
    pub watcher_prefix: String,
    /// XMPP users the watchers watch: <prefix><i>@<xmpp-domain>.
    #[arg(long, default_value = "u")]
    pub user_prefix: String,
    /// XMPP users who subscribe to SIP presentities: <prefix><j>@<xmpp-domain>.
    #[arg(long, default_value = "x")]
    pub subscriber_prefix: String,
    /// SIP presentities: sip:<prefix><j>@<sip-domain>, seen as <prefix><j>@<component>.
    #[arg(long, default_value = "p")]
    pub presentity_prefix: String,
    /// Resource of the XMPP users' presences.
    #[arg(long, default_value = "r")]
    pub resource: String,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub max_time: u64,
}

#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
    /// Subscriptions per direction.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Updates per presentity and direction.
    #[arg(long, default_value_t = 3)]
    pub updates: u64,
    /// Updates per second, per direction.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds allowed for each phase (setup, each direction).
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    Both,
    /// XMPP → SIP (the gateway as notifier).
    S2x,
    /// SIP → XMPP (the gateway as subscriber).
    X2s,
}

#[derive(Clone, Debug, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub target: Target,
    /// Subscriptions (presentities) per direction.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,
    /// Updates per second per direction (open loop), or `max` (each presentity has one
    /// update in flight: closed loop).
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Seconds of sending per direction.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds to wait for the last states after sending stops.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// In `max` mode, an update not delivered after this many ms is overtaken by a new one.
    #[arg(long, default_value_t = 2000)]
    pub overtake_ms: u64,
    /// Cap on updates per direction.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_updates: u64,
    /// Subscriptions started per second during setup.
    #[arg(long, default_value_t = 1000.0)]
    pub setup_rate: f64,
    #[arg(long, default_value_t = 60)]
    pub setup_timeout: u64,
    /// Skip the raw forwarder run (no ratios).
    #[arg(long)]
    pub no_baseline: bool,
}

#[derive(Clone, Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Bridged subscriptions in total (both directions mixed).
    #[arg(long, default_value_t = 100_000)]
    pub subscriptions: usize,
    /// Fraction of them in the XMPP → SIP direction.
    #[arg(long, default_value_t = 0.5)]
    pub mix: f64,
    /// Expires asked by the watchers and granted at most by the presence server (short,
    /// so a refresh period fits in the run).
    #[arg(long, default_value_t = 120)]
    pub expires: u32,
    /// Seconds over which refreshes are counted (default: --expires).
    #[arg(long)]
    pub period: Option<u64>,
    #[arg(long, default_value_t = 2000.0)]
    pub setup_rate: f64,
    #[arg(long, default_value_t = 300)]
    pub setup_timeout: u64,
    /// Restart the gateway after the refresh period and time the resync. With
    /// --gateway-cmd the tool restarts its own process; otherwise give --restart-cmd.
    #[arg(long)]
    pub restart: bool,
    /// Shell command restarting an external gateway; if its last output line is a
    /// number, it is taken as the new PID.
    #[arg(long)]
    pub restart_cmd: Option<String>,
    #[arg(long, default_value_t = 300)]
    pub resync_timeout: u64,
}

#[derive(Clone, Debug, Args)]
pub struct BaselineArgs {
    /// Messages per second (open loop) or `max` (closed loop with --window in flight).
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    #[arg(long, default_value_t = 100)]
    pub window: usize,
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    #[arg(long, default_value_t = 5_000_000)]
    pub max_messages: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

// ------------------------------------------------------------------------- reports

#[derive(Clone, Debug, Default, Serialize)]
pub struct DirReport {
    pub direction: String,
    pub offered: String,
    pub flow: FlowReport,
    pub gateway_cpu_s: Option<f64>,
    pub gateway_cpu_s_per_1000: Option<f64>,
    pub gateway_rss_kib: Option<u64>,
    pub ratios: Option<Ratios>,
}

/// The gateway's figures divided by the raw forwarder's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub cpu_per_1000: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    pub mode: &'static str,
    pub users: usize,
    pub setup_s: f64,
    pub baseline: Option<baseline::Report>,
    pub directions: Vec<DirReport>,
    pub counters: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub mode: &'static str,
    pub pass: bool,
    pub failures: Vec<String>,
    pub users: usize,
    pub established_s2x: usize,
    pub established_x2s: usize,
    pub directions: Vec<DirReport>,
    pub counters: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ResyncReport {
    pub reconnect_s: Option<f64>,
    /// Time until every SIP → XMPP dialog was SUBSCRIBEd again; None if not within the timeout.
    pub resync_s: Option<f64>,
    pub x2s_resubscribed: usize,
    pub x2s_total: usize,
    /// XMPP → SIP pairs the gateway re-probed or re-subscribed over XMPP after the restart.
    pub s2x_touched: usize,
    pub peak_per_s: u64,
    pub mean_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    pub mode: &'static str,
    pub subscriptions: usize,
    pub s2x: usize,
    pub x2s: usize,
    pub established: usize,
    pub setup_s: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_per_subscription_bytes: Option<f64>,
    /// Peak RSS (VmHWM) at the end of the run.
    pub rss_peak_kib: Option<u64>,
    pub period_s: u64,
    /// The gateway's in-dialog refresh SUBSCRIBEs (SIP → XMPP dialogs) per second.
    pub gateway_refreshes: RateSummary,
    /// busiest second ≤ 2 × mean.
    pub refresh_spread_ok: bool,
    /// The watchers' refreshes (the tool's own load on the gateway) per second.
    pub watcher_refreshes: RateSummary,
    pub gateway_cpu_s_per_s: Option<f64>,
    pub lost_s2x: usize,
    pub dead_x2s: usize,
    pub resync: Option<ResyncReport>,
    pub counters: std::collections::BTreeMap<String, u64>,
}

// ------------------------------------------------------------------------- running

pub async fn run(cli: Cli) -> u8 {
    let (max_time, json_path) = match &cli.mode {
        Mode::Check(a) => (a.target.max_time, a.target.json.clone()),
        Mode::Throughput(a) => (a.target.max_time, a.target.json.clone()),
        Mode::Scale(a) => (a.target.max_time, a.target.json.clone()),
        Mode::Baseline(a) => (a.duration + 60, a.json.clone()),
        Mode::Agent(a) | Mode::AgentCheck(a) => (a.max_time, a.json.clone()),
        Mode::Usrloc(a) => (a.max_time, a.json.clone()),
    };
    let work = async {
        match cli.mode {
            Mode::Check(a) => check(a).await,
            Mode::Throughput(a) => throughput(a).await,
            Mode::Scale(a) => scale(a).await,
            Mode::Baseline(a) => baseline_mode(a).await,
            Mode::Agent(a) => crate::agent::agent(a, false).await,
            Mode::AgentCheck(a) => crate::agent::agent(a, true).await,
            Mode::Usrloc(a) => crate::registrations::usrloc(a).await,
        }
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(max_time), work) => match r {
            Ok(r) => r,
            Err(_) => {
                eprintln!("xsg-load: out of time after {max_time} s (--max-time)");
                return 3;
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("xsg-load: interrupted");
            return 1;
        }
        _ = terminated() => {
            eprintln!("xsg-load: terminated");
            return 1;
        }
    };
    match outcome {
        Ok((code, json)) => {
            println!("{json}");
            if let Some(p) = json_path {
                if let Err(e) = std::fs::write(&p, format!("{json}\n")) {
                    eprintln!("xsg-load: cannot write {}: {e}", p.display());
                    return 1;
                }
            }
            code
        }
        Err(e) => {
            eprintln!("xsg-load: {e}");
            if e.starts_with("usage:") {
                2
            } else {
                1
            }
        }
    }
}

/// Resolves on SIGTERM, so a stopped tool still stops its gateway (by dropping it).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

fn require_loopback(what: &str, a: SocketAddr) -> Result<(), String> {
    if a.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("usage: {what} {a} is not a loopback address"))
    }
}

/// Binds the tool's sockets, starts (or finds) the gateway and waits until it is ready.
async fn connect(
    t: &Target,
    n_s2x: usize,
    n_x2s: usize,
    settings: UaSettings,
) -> Result<Harness, String> {
    for (what, a) in [
        ("--xmpp-listen", t.xmpp_listen),
        ("--ua-listen", t.ua_listen),
        ("--ps-listen", t.ps_listen),
    ] {
        require_loopback(what, a)?;
    }
    let gateway_sip = match (t.gateway_sip, &t.gateway_cmd) {
        (Some(a), _) => a,
        (None, Some(_)) => {
            // A free port for the gateway: bind, read, release.
            let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            s.local_addr().map_err(|e| e.to_string())?
        }
        (None, None) => return Err("usage: --gateway-sip is required without --gateway-cmd".into()),
    };
    require_loopback("--gateway-sip", gateway_sip)?;
    let listener = TcpListener::bind(t.xmpp_listen).map_err(|e| format!("xmpp listen: {e}"))?;
    let xmpp_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ua = crate::sock::bind_tokio_udp(t.ua_listen).map_err(|e| format!("ua listen: {e}"))?;
    let ps = crate::sock::bind_tokio_udp(t.ps_listen).map_err(|e| format!("ps listen: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = xmpp::serve(listener, t.component.clone(), t.secret.clone(), tx);
    let names = Names {
        component: t.component.clone(),
        xmpp_domain: t.xmpp_domain.clone(),
        sip_domain: t.sip_domain.clone(),
        xmpp_sip_domain: t.xmpp_sip_domain.clone().unwrap_or(t.xmpp_domain.clone()),
        watcher: t.watcher_prefix.clone(),
        user: t.user_prefix.clone(),
        subscriber: t.subscriber_prefix.clone(),
        presentity: t.presentity_prefix.clone(),
        resource: t.resource.clone(),
    };
    let expires = settings.expires;
    let mut h = Harness::new(
        names,
        gateway_sip,
        ua,
        ps,
        sender,
        rx,
        settings,
        n_s2x,
        n_x2s,
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "xsg-load: listening xmpp={xmpp_addr} ua={} ps={} gateway-sip={gateway_sip}",
        h.ua_addr, h.ps_addr
    );
    if let Some(cmd) = &t.gateway_cmd {
        let dir = t.work_dir.clone().unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("xsg-load-{}-{nanos}", std::process::id()))
        });
        let text = gateway::config_toml(&gateway::ConfigInputs {
            gateway_sip,
            presence_server: h.ps_addr,
            xmpp_server: xmpp_addr,
            component: t.component.clone(),
            secret: t.secret.clone(),
            xmpp_domain: t.xmpp_domain.clone(),
            sip_domain: t.sip_domain.clone(),
            expires,
            store_path: dir.join("gateway.db"),
        });
        let g = Gateway::start(cmd, &dir, &text).map_err(|e| format!("gateway start: {e}"))?;
        h.gateway_pid = g.pid();
        eprintln!(
            "xsg-load: started gateway pid={} config={} log={}",
            g.pid().unwrap_or(0),
            dir.join("gateway.toml").display(),
            g.log_path().display()
        );
        h.gateway = Some(g);
    } else {
        h.gateway_pid = t.gateway_pid;
    }
    wait_ready(&mut h, Duration::from_secs(t.ready_timeout)).await?;
    Ok(h)
}

async fn wait_ready(h: &mut Harness, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    h.pump(deadline, &mut |h, _| {
        if h.xmpp_connected {
            Flowctl::Stop
        } else {
            Flowctl::Continue
        }
    })
    .await;
    if let Some(f) = &h.fatal {
        return Err(f.clone());
    }
    if !h.xmpp_connected {
        return Err(format!(
            "the component did not connect and authenticate within {} s",
            timeout.as_secs()
        ));
    }
    // Any answer to OPTIONS shows the SIP side is up; some gateways never answer it.
    for _ in 0..10 {
        h.send_options().await;
        let until = Instant::now() + Duration::from_millis(300);
        h.pump(until, &mut |h, _| {
            if h.sip_ready {
                Flowctl::Stop
            } else {
                Flowctl::Continue
            }
        })
        .await;
        if h.sip_ready {
            break;
        }
    }
    if !h.sip_ready {
        eprintln!("xsg-load: the gateway did not answer OPTIONS; continuing");
    }
    Ok(())
}

/// The order in which subscriptions start: S2X indices `0..ns` and X2S indices
/// `ns..ns + nx`, interleaved in proportion so both directions grow together.
fn interleave(ns: usize, nx: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(ns + nx);
    let (mut a, mut b) = (0, 0);
    while a < ns || b < nx {
        if b >= nx || (a < ns && a * nx <= b * ns) {
            order.push(a);
            a += 1;
        } else {
            order.push(ns + b);
            b += 1;
        }
    }
    order
}

/// Starts every subscription at `rate` per second, S2X and X2S interleaved, and waits
/// until all are established. Returns the seconds it took.
async fn establish(h: &mut Harness, rate: f64, timeout: Duration) -> Result<f64, String> {
    let (ns, nx) = (h.n_s2x(), h.n_x2s());
    let total = ns + nx;
    let order = interleave(ns, nx);
    let t0 = Instant::now();
    let mut issued = 0usize;
    let ok = h
        .pump(t0 + timeout, &mut |h, now| {
            let due = ((now - t0).as_secs_f64() * rate).ceil() as usize;
            while issued < total && issued < due.max(1) {
                h.queue.push(Action::Start(order[issued]));
                issued += 1;
            }
            if issued == total && h.s2x_active == ns && h.x2s_granted == nx {
                Flowctl::Stop
            } else {
                Flowctl::Continue
            }
        })
        .await;
    if let Some(f) = &h.fatal {
        return Err(f.clone());
    }
    let secs = t0.elapsed().as_secs_f64();
    if !ok {
        return Err(format!(
            "setup incomplete after {:.1} s: {}/{ns} xmpp->sip and {}/{nx} sip->xmpp established; counters {:?}",
            secs, h.s2x_active, h.x2s_granted, h.counters
        ));
    }
    eprintln!("xsg-load: {total} subscriptions established in {secs:.2} s");
    Ok(secs)
}

/// How a direction's updates are paced.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    rate: Rate,
    send_for: Duration,
    drain: Duration,
    max_updates: u64,
    /// Closed loop: overtake an undelivered update after this long.
    overtake: Duration,
}

async fn run_direction(h: &mut Harness, dir: Dir, s: Schedule) -> DirReport {
    let n = h.presentities(dir);
    let pid = h.gateway_pid;
    let cpu0 = pid.and_then(procfs::cpu_seconds);
    let t0 = Instant::now();
    let send_end = t0 + s.send_for;
    let mut sent = 0u64;
    let mut rr = 0usize;
    if s.rate == Rate::Max {
        h.closed_loop = Some(ClosedLoop {
            dir,
            until: send_end,
            max_updates: s.max_updates,
        });
    }
    h.pump(send_end + s.drain, &mut |h, now| {
        if n == 0 {
            return Flowctl::Stop;
        }
        if now < send_end && sent.max(h.flow(dir).sent_count()) < s.max_updates {
            match s.rate {
                Rate::PerSecond(r) => {
                    let due = (((now - t0).as_secs_f64() * r) as u64 + 1).min(s.max_updates);
                    let mut burst = 0;
                    while sent < due && burst < 10_000 {
                        h.queue.push(Action::Update(dir, rr));
                        rr = (rr + 1) % n;
                        sent += 1;
                        burst += 1;
                    }
                }
                Rate::Max => {
                    // Deliveries trigger the next update at once (ClosedLoop); the scan
                    // starts idle presentities and overtakes updates that got lost.
                    let mut total = h.flow(dir).sent_count();
                    for p in 0..n {
                        if total >= s.max_updates {
                            break;
                        }
                        let ready = match h.flow(dir).outstanding_since(p) {
                            None => true,
                            Some(at) => now.duration_since(at) >= s.overtake,
                        };
                        if ready {
                            h.queue.push(Action::Update(dir, p));
                            total += 1;
                        }
                    }
                }
            }
            Flowctl::Continue
        } else if h.flow(dir).all_settled() {
            Flowctl::Stop
        } else {
            Flowctl::Continue
        }
    })
    .await;
    h.closed_loop = None;
    let flow = h.flow(dir).report();
    let cpu = match (cpu0, pid.and_then(procfs::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    DirReport {
        direction: dir.label().into(),
        offered: s.rate.label(),
        gateway_cpu_s: cpu,
        gateway_cpu_s_per_1000: cpu
            .filter(|_| flow.delivered > 0)
            .map(|c| c * 1000.0 / flow.delivered as f64),
        gateway_rss_kib: pid.and_then(procfs::rss_kib),
        flow,
        ratios: None,
    }
}

fn directions(d: Direction) -> Vec<Dir> {
    match d {
        Direction::Both => vec![Dir::S2x, Dir::X2s],
        Direction::S2x => vec![Dir::S2x],
        Direction::X2s => vec![Dir::X2s],
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn print_dirs(dirs: &[DirReport]) {
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "direction",
        "offered",
        "sent",
        "delivered",
        "superseded",
        "wrong",
        "deliv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu/1000",
        "rss KiB"
    );
    for d in dirs {
        let f = &d.flow;
        println!(
            "{:<10} {:>8} {:>9} {:>9} {:>9} {:>6} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>9}",
            d.direction,
            d.offered,
            f.sent,
            f.delivered,
            f.superseded,
            f.wrong_final,
            f.delivered_per_s,
            f.latency.p50_ms,
            f.latency.p90_ms,
            f.latency.p99_ms,
            f.latency.max_ms,
            fmt_opt(d.gateway_cpu_s_per_1000, 4),
            d.gateway_rss_kib
                .map(|k| k.to_string())
                .unwrap_or_else(|| "-".into())
        );
        if let Some(r) = &d.ratios {
            println!(
                "{:<10} ratio to raw forwarder: rate {:.3}  p50 {:.2}x  p99 {:.2}x  cpu/1000 {}x",
                "",
                r.rate,
                r.p50,
                r.p99,
                fmt_opt(r.cpu_per_1000, 1)
            );
        }
    }
}

fn print_baseline(b: &baseline::Report) {
    let l: &Percentiles = &b.latency;
    println!(
        "raw UDP forwarder: {} B messages, sent {}, received {}, lost {}, {:.1}/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, cpu/1000 {:.4} s",
        b.message_bytes, b.sent, b.received, b.lost, b.per_s, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, b.cpu_s_per_1000
    );
}

fn to_json<T: Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string(v).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------- check

/// Counters that mean the gateway did something wrong.
fn is_failure_counter(name: &str) -> bool {
    [
        "malformed",
        "answered",
        "terminated",
        "unknown",
        "unexpected",
        "outside",
        "unanswered",
        "bad",
        "send error",
        "stream ended",
    ]
    .iter()
    .any(|w| name.contains(w))
}

async fn check(a: CheckArgs) -> Result<(u8, String), String> {
    let settings = UaSettings {
        expires: 3600,
        refresh_watchers: true,
        auto_approve: true,
    };
    let mut h = connect(&a.target, a.users, a.users, settings).await?;
    let mut failures = Vec::new();
    let timeout = Duration::from_secs(a.timeout);
    let rate = (a.users as f64 * 20.0).max(50.0);
    if let Err(e) = establish(&mut h, rate, timeout).await {
        failures.push(e);
    }
    let mut dirs = Vec::new();
    if failures.is_empty() {
        for dir in [Dir::S2x, Dir::X2s] {
            let total = a.updates * a.users as u64;
            let send_for = Duration::from_secs_f64(total as f64 / a.rate + 0.05).min(timeout);
            let s = Schedule {
                rate: Rate::PerSecond(a.rate),
                send_for,
                drain: timeout,
                max_updates: total,
                overtake: Duration::from_secs(2),
            };
            let r = run_direction(&mut h, dir, s).await;
            if let Some(f) = h.fatal.clone() {
                failures.push(f);
            }
            let f = &r.flow;
            if f.sent != total {
                failures.push(format!(
                    "{}: sent {} of {total} updates",
                    r.direction, f.sent
                ));
            }
            if f.wrong_final > 0 {
                failures.push(format!(
                    "{}: {} of {} presentities did not end in their last state",
                    r.direction, f.wrong_final, f.presentities
                ));
            }
            if f.unknown > 0 || f.stale > 0 {
                failures.push(format!(
                    "{}: {} unknown and {} out-of-order deliveries",
                    r.direction, f.unknown, f.stale
                ));
            }
            dirs.push(r);
        }
    }
    for (name, n) in &h.counters {
        if is_failure_counter(name) {
            failures.push(format!("{name}: {n}"));
        }
    }
    let (s, x) = h.established();
    let report = CheckReport {
        mode: "check",
        pass: failures.is_empty(),
        failures,
        users: a.users,
        established_s2x: s,
        established_x2s: x,
        directions: dirs,
        counters: h.counters.clone(),
    };
    print_dirs(&report.directions);
    for f in &report.failures {
        println!("FAIL {f}");
    }
    println!("check: {}", if report.pass { "PASS" } else { "FAIL" });
    Ok((u8::from(!report.pass), to_json(&report)?))
}

// ----------------------------------------------------------------------- throughput

async fn throughput(a: ThroughputArgs) -> Result<(u8, String), String> {
    let dirs = directions(a.direction);
    let n_s2x = if dirs.contains(&Dir::S2x) { a.users } else { 0 };
    let n_x2s = if dirs.contains(&Dir::X2s) { a.users } else { 0 };
    let settings = UaSettings {
        expires: 3600,
        refresh_watchers: true,
        auto_approve: true,
    };
    let mut h = connect(&a.target, n_s2x, n_x2s, settings).await?;
    let setup_s = establish(&mut h, a.setup_rate, Duration::from_secs(a.setup_timeout)).await?;
    let base = if a.no_baseline {
        None
    } else {
        let cfg = baseline::Config {
            pace: match a.rate {
                Rate::PerSecond(r) => Pace::Rate(r),
                Rate::Max => Pace::Max {
                    window: a.users.max(1),
                },
            },
            duration: Duration::from_secs(a.duration),
            max_messages: a.max_updates,
            message: baseline::sample_notify(),
            drain: Duration::from_secs(a.drain),
        };
        let r = tokio::task::spawn_blocking(move || baseline::run(&cfg))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("baseline: {e}"))?;
        Some(r)
    };
    let mut reports = Vec::new();
    for dir in dirs {
        let s = Schedule {
            rate: a.rate,
            send_for: Duration::from_secs(a.duration),
            drain: Duration::from_secs(a.drain),
            max_updates: a.max_updates,
            overtake: Duration::from_millis(a.overtake_ms),
        };
        let mut r = run_direction(&mut h, dir, s).await;
        if let Some(f) = &h.fatal {
            return Err(f.clone());
        }
        if let Some(b) = &base {
            r.ratios = Some(Ratios {
                rate: ratio(r.flow.delivered_per_s, b.per_s),
                p50: ratio(r.flow.latency.p50_ms, b.latency.p50_ms),
                p99: ratio(r.flow.latency.p99_ms, b.latency.p99_ms),
                cpu_per_1000: r.gateway_cpu_s_per_1000.map(|c| ratio(c, b.cpu_s_per_1000)),
            });
        }
        reports.push(r);
    }
    if let Some(b) = &base {
        print_baseline(b);
    }
    print_dirs(&reports);
    let report = ThroughputReport {
        mode: "throughput",
        users: a.users,
        setup_s,
        baseline: base,
        directions: reports,
        counters: h.counters.clone(),
    };
    Ok((0, to_json(&report)?))
}

// ---------------------------------------------------------------------------- scale

async fn scale(a: ScaleArgs) -> Result<(u8, String), String> {
    if !(0.0..=1.0).contains(&a.mix) {
        return Err("usage: --mix must be within 0..1".into());
    }
    if a.restart && a.target.gateway_cmd.is_none() && a.restart_cmd.is_none() {
        return Err("usage: --restart needs --gateway-cmd or --restart-cmd".into());
    }
    let n_s2x = (a.subscriptions as f64 * a.mix).round() as usize;
    let n_x2s = a.subscriptions - n_s2x;
    let settings = UaSettings {
        expires: a.expires,
        refresh_watchers: true,
        auto_approve: true,
    };
    let mut h = connect(&a.target, n_s2x, n_x2s, settings).await?;
    let rss_before = h.gateway_pid.and_then(procfs::rss_kib);
    let setup_s = establish(&mut h, a.setup_rate, Duration::from_secs(a.setup_timeout)).await?;
    let rss_after = h.gateway_pid.and_then(procfs::rss_kib);
    let rss_per = match (rss_before, rss_after) {
        (Some(b), Some(a2)) if a.subscriptions > 0 => {
            Some((a2 as f64 - b as f64) * 1024.0 / a.subscriptions as f64)
        }
        _ => None,
    };
    let period = a.period.unwrap_or(u64::from(a.expires)).max(1);
    let p0 = Instant::now();
    h.x2s_refresh_bins = crate::stats::PerSecond::new(p0);
    h.s2x_refresh_bins = crate::stats::PerSecond::new(p0);
    let cpu0 = h.gateway_pid.and_then(procfs::cpu_seconds);
    eprintln!("xsg-load: counting refreshes for {period} s");
    h.pump(p0 + Duration::from_secs(period), &mut |_, _| {
        Flowctl::Continue
    })
    .await;
    if let Some(f) = &h.fatal {
        return Err(f.clone());
    }
    let cpu = match (cpu0, h.gateway_pid.and_then(procfs::cpu_seconds)) {
        (Some(x), Some(y)) => Some((y - x) / period as f64),
        _ => None,
    };
    let gateway_refreshes = h.x2s_refresh_bins.summary(period as usize);
    let watcher_refreshes = h.s2x_refresh_bins.summary(period as usize);
    let spread_ok = gateway_refreshes.total == 0
        || gateway_refreshes.busiest_per_s as f64 <= 2.0 * gateway_refreshes.mean_per_s;
    let (lost_s2x, dead_x2s) = h.held(Instant::now());
    let resync = if a.restart {
        Some(restart_and_resync(&mut h, &a).await?)
    } else {
        None
    };
    let (s, x) = (h.s2x_active, h.x2s_granted);
    println!(
        "scale: {} subscriptions ({} xmpp->sip, {} sip->xmpp) established in {:.1} s",
        a.subscriptions, n_s2x, n_x2s, setup_s
    );
    println!(
        "rss before {} KiB, after {} KiB, per subscription {} B",
        rss_before.map(|v| v.to_string()).unwrap_or("-".into()),
        rss_after.map(|v| v.to_string()).unwrap_or("-".into()),
        fmt_opt(rss_per, 0)
    );
    println!(
        "gateway refreshes over {period} s: total {}, mean {:.1}/s, busiest {}/s, busiest/mean {:.2} ({}); watcher refreshes mean {:.1}/s; gateway cpu {} s/s",
        gateway_refreshes.total,
        gateway_refreshes.mean_per_s,
        gateway_refreshes.busiest_per_s,
        gateway_refreshes.busiest_over_mean,
        if spread_ok { "spread ok" } else { "NOT spread: busiest > 2x mean" },
        watcher_refreshes.mean_per_s,
        fmt_opt(cpu, 3)
    );
    println!("held after the period: {lost_s2x} xmpp->sip lost, {dead_x2s} sip->xmpp dead");
    if let Some(r) = &resync {
        println!(
            "restart: reconnect {} s, resync {} s ({}/{} sip->xmpp re-subscribed, {} xmpp->sip touched), peak {}/s, mean {:.1}/s",
            fmt_opt(r.reconnect_s, 2),
            fmt_opt(r.resync_s, 2),
            r.x2s_resubscribed,
            r.x2s_total,
            r.s2x_touched,
            r.peak_per_s,
            r.mean_per_s
        );
    }
    let report = ScaleReport {
        mode: "scale",
        subscriptions: a.subscriptions,
        s2x: n_s2x,
        x2s: n_x2s,
        established: s + x,
        setup_s,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_subscription_bytes: rss_per,
        rss_peak_kib: h.gateway_pid.and_then(procfs::peak_rss_kib),
        period_s: period,
        gateway_refreshes,
        refresh_spread_ok: spread_ok,
        watcher_refreshes,
        gateway_cpu_s_per_s: cpu,
        lost_s2x,
        dead_x2s,
        resync,
        counters: h.counters.clone(),
    };
    Ok((0, to_json(&report)?))
}

async fn restart_and_resync(h: &mut Harness, a: &ScaleArgs) -> Result<ResyncReport, String> {
    let t0 = if let Some(g) = h.gateway.as_mut() {
        g.stop(Duration::from_secs(5));
        // What the old process sent while stopping (e.g. Expires: 0) is not resync.
        h.pump(Instant::now() + Duration::from_millis(300), &mut |_, _| {
            Flowctl::Continue
        })
        .await;
        let t0 = Instant::now();
        h.xmpp_connected = false;
        h.begin_resync(t0);
        let g = h.gateway.as_mut().ok_or("gateway handle lost")?;
        g.spawn().map_err(|e| format!("restart: {e}"))?;
        h.gateway_pid = g.pid();
        t0
    } else {
        // An external restart: the clock starts before the command runs.
        let t0 = Instant::now();
        h.xmpp_connected = false;
        h.begin_resync(t0);
        t0
    };
    if h.gateway.is_none() {
        let cmd = a.restart_cmd.as_deref().unwrap_or("true");
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .map_err(|_| "restart command took over 60 s".to_string())?
            .map_err(|e| format!("restart command: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(pid) = text.lines().last().and_then(|l| l.trim().parse().ok()) {
            h.gateway_pid = Some(pid);
        }
    }
    eprintln!("xsg-load: gateway restarted; waiting for resync");
    let n_x2s = h.n_x2s();
    h.pump(
        t0 + Duration::from_secs(a.resync_timeout),
        &mut |h, _| match &h.resync {
            Some(r) if r.done.is_some() && h.xmpp_connected => Flowctl::Stop,
            _ => Flowctl::Continue,
        },
    )
    .await;
    if let Some(f) = &h.fatal {
        return Err(f.clone());
    }
    let r = h.resync.take().ok_or("resync state lost")?;
    let t0 = r.started;
    let secs = r
        .done
        .unwrap_or(Instant::now())
        .duration_since(t0)
        .as_secs() as usize
        + 1;
    let bins = r.bins.summary(secs);
    Ok(ResyncReport {
        reconnect_s: r.reconnected.map(|t| t.duration_since(t0).as_secs_f64()),
        resync_s: r.done.map(|t| t.duration_since(t0).as_secs_f64()),
        x2s_resubscribed: r.x2s_count,
        x2s_total: n_x2s,
        s2x_touched: r.s2x_count,
        peak_per_s: r.bins.busiest(),
        mean_per_s: bins.mean_per_s,
    })
}

// ------------------------------------------------------------------------- baseline

async fn baseline_mode(a: BaselineArgs) -> Result<(u8, String), String> {
    let cfg = baseline::Config {
        pace: match a.rate {
            Rate::PerSecond(r) => Pace::Rate(r),
            Rate::Max => Pace::Max {
                window: a.window.max(1),
            },
        },
        duration: Duration::from_secs(a.duration),
        max_messages: a.max_messages,
        message: baseline::sample_notify(),
        drain: Duration::from_secs(2),
    };
    let r = tokio::task::spawn_blocking(move || baseline::run(&cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("baseline: {e}"))?;
    print_baseline(&r);
    #[derive(Serialize)]
    struct Out {
        mode: &'static str,
        offered: String,
        #[serde(flatten)]
        report: baseline::Report,
    }
    Ok((
        0,
        to_json(&Out {
            mode: "baseline",
            offered: a.rate.label(),
            report: r,
        })?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_mixes_directions_in_proportion_and_covers_all() {
        assert_eq!(interleave(2, 2), vec![0, 2, 1, 3]);
        let o = interleave(3, 1);
        assert_eq!(o.len(), 4);
        let mut sorted = o.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert_eq!(interleave(0, 2), vec![0, 1]);
    }

    #[test]
    fn rate_parses_numbers_and_max() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("250".parse::<Rate>(), Ok(Rate::PerSecond(250.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        let a: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        assert!(require_loopback("--gateway-sip", a).is_err());
        let b: SocketAddr = "[::1]:5060".parse().expect("addr");
        assert!(require_loopback("--gateway-sip", b).is_ok());
    }

    #[test]
    fn failure_counters_are_recognised() {
        assert!(is_failure_counter("xmpp->sip SUBSCRIBE answered 489"));
        assert!(is_failure_counter(
            "xmpp->sip NOTIFY terminated reason=rejected"
        ));
        assert!(is_failure_counter("xmpp stream ended: stream closed"));
        assert!(!is_failure_counter("xmpp component connections"));
        assert!(!is_failure_counter("sip->xmpp NOTIFY retransmitted"));
        assert!(!is_failure_counter("xmpp probes from the gateway"));
    }

    #[test]
    fn cli_parses_every_mode() {
        for args in [
            vec!["xsg-load", "check", "--gateway-sip", "127.0.0.1:5060"],
            vec![
                "xsg-load",
                "throughput",
                "--rate",
                "500",
                "--direction",
                "x2s",
            ],
            vec!["xsg-load", "scale", "--subscriptions", "1000", "--restart"],
            vec!["xsg-load", "baseline", "--rate", "max", "--window", "10"],
        ] {
            assert!(Cli::try_parse_from(&args).is_ok(), "{args:?}");
        }
    }
}
