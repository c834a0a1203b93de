//! The measuring harness: the XMPP server and the SIP user agents around one gateway.
//!
//! One task owns all state and reacts to three inputs (the watchers' UDP socket, the
//! presence server's UDP socket, stanzas from the component stream) plus a 1 ms tick on
//! which the caller's schedule runs. Two directions (standards.md §7):
//!
//! * **S2X** (XMPP → SIP, the gateway as notifier): watcher `sip:w{i}@<sip-domain>`
//!   SUBSCRIBEs `sip:u{i}@<xmpp-sip-domain>` at the gateway; the gateway sends
//!   `subscribe` from `w{i}@<component>`; the tool answers `subscribed` from
//!   `u{i}@<xmpp-domain>`; updates are presences from `u{i}@<xmpp-domain>/<res>` with
//!   status `seq N`, measured until a NOTIFY whose PIDF note says `seq N` arrives.
//! * **X2S** (SIP → XMPP, the gateway as subscriber): the tool sends `subscribe` from
//!   `x{j}@<xmpp-domain>` to `p{j}@<component>`; the gateway SUBSCRIBEs
//!   `sip:p{j}@<sip-domain>` through its outbound proxy (the tool's presence server),
//!   which answers 200 + NOTIFY active; updates are NOTIFYs with note `seq N`, measured
//!   until the presence with status `seq N` arrives.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::gateway::Gateway;
use crate::pidf;
use crate::sipmsg::{self, index_of, param_of, tag_of, uri_of, user_of, Msg};
use crate::stats::{Flow, PerSecond};
use crate::xmpp::{self, bare, Ev, Stanza};

/// A NOTIFY retransmission timer: (due, presentity, CSeq, sends so far, first send).
type NotifyTimer = (Instant, usize, u32, u8, Instant);

/// Timer F (RFC 3261 §17.1.2.2): 64·T1 with T1 = 500 ms.
const TIMER_F: Duration = Duration::from_secs(32);

/// The wait after the `sends`-th send of a request over UDP: Timer E starts at T1 =
/// 500 ms and doubles up to T2 = 4 s (RFC 3261 §17.1.2.2).
fn timer_e(sends: u8) -> Duration {
    Duration::from_millis(500 << sends.saturating_sub(1).min(3))
}

/// Every name the tool uses on the wire; all come from the command line.
#[derive(Clone, Debug)]
pub struct Names {
    pub component: String,
    pub xmpp_domain: String,
    pub sip_domain: String,
    /// Host of the XMPP users' SIP URIs (`sip:u1@<this>`), the xmpp domain by default.
    pub xmpp_sip_domain: String,
    pub watcher: String,
    pub user: String,
    pub subscriber: String,
    pub presentity: String,
    pub resource: String,
}

/// Which direction an update travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// XMPP presence → SIP NOTIFY (watchers see XMPP users).
    S2x,
    /// SIP NOTIFY → XMPP presence (XMPP users see SIP presentities).
    X2s,
}

impl Dir {
    pub fn label(self) -> &'static str {
        match self {
            Dir::S2x => "xmpp->sip",
            Dir::X2s => "sip->xmpp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Requested,
    Accepted,
    Pending,
    Active,
    Failed,
    Terminated,
}

/// One SIP watcher's notification dialog (the tool is the subscriber).
#[derive(Clone, Debug)]
struct S2x {
    phase: Phase,
    generation: u32,
    to_tag: Option<String>,
    target: Option<String>,
    cseq: u32,
    /// CSeq of the SUBSCRIBE awaiting an answer, and how often it was sent.
    /// CSeq of the SUBSCRIBE awaiting a final answer, sends so far, first send.
    unanswered: Option<(u32, u8, Instant)>,
    next_refresh: Option<Instant>,
    subscribe_seen: bool,
}

/// One SIP presentity's dialog with the gateway (the tool is the notifier).
#[derive(Clone, Debug)]
struct X2s {
    requested: bool,
    subscribed_seen: bool,
    call_id: Option<String>,
    gw_from: String,
    gw_target: String,
    our_tag: String,
    peer: Option<SocketAddr>,
    cseq: u32,
    dialogs: u32,
    gone: bool,
    last_subscribe: Option<Instant>,
    granted: u32,
    /// CSeq of the last SUBSCRIBE accepted in this dialog (spots retransmissions).
    last_sub_cseq: u32,
}

/// Restart resynchronisation in progress.
#[derive(Clone, Debug)]
pub struct Resync {
    pub started: Instant,
    pub reconnected: Option<Instant>,
    pub x2s_seen: Vec<bool>,
    pub x2s_count: usize,
    pub s2x_seen: Vec<bool>,
    pub s2x_count: usize,
    pub done: Option<Instant>,
    /// SUBSCRIBEs and stanzas from the gateway per second since the restart.
    pub bins: PerSecond,
}

/// Timing settings of the user agents.
#[derive(Clone, Debug)]
pub struct UaSettings {
    /// Expires the watchers ask for and the presence server grants at most.
    pub expires: u32,
    /// Whether the watchers refresh their subscriptions before they expire.
    pub refresh_watchers: bool,
    /// Whether the XMPP side approves the gateway's `subscribe` at once.
    pub auto_approve: bool,
}

pub struct Harness {
    pub names: Names,
    pub gateway_sip: SocketAddr,
    pub ua_addr: SocketAddr,
    pub ps_addr: SocketAddr,
    ua: UdpSocket,
    ps: UdpSocket,
    xmpp_out: xmpp::Sender,
    events: UnboundedReceiver<(Instant, Ev)>,
    pub settings: UaSettings,
    run: u32,
    s2x: Vec<S2x>,
    x2s: Vec<X2s>,
    pub s2x_flow: Flow,
    pub x2s_flow: Flow,
    /// Named event counters (errors and notable protocol events).
    pub counters: BTreeMap<String, u64>,
    pub xmpp_connected: bool,
    pub sip_ready: bool,
    retrans: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    refreshes: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: u64,
    /// In-dialog SUBSCRIBE refreshes received from the gateway, per second.
    pub x2s_refresh_bins: PerSecond,
    /// Watcher refreshes sent, per second.
    pub s2x_refresh_bins: PerSecond,
    pub resync: Option<Resync>,
    pub gateway: Option<Gateway>,
    pub gateway_pid: Option<u32>,
    pub fatal: Option<String>,
    last_liveness_check: Instant,
    /// Sends the current tick function asked for.
    pub queue: Vec<Action>,
    /// S2X dialogs currently active (NOTIFY active seen).
    pub s2x_active: usize,
    /// X2S authorizations granted (`subscribed` seen).
    pub x2s_granted: usize,
    /// Closed-loop sending in progress: the next update goes out as soon as the
    /// previous one is delivered, not on the next tick.
    pub closed_loop: Option<ClosedLoop>,
    just_delivered: Vec<usize>,
    /// The presence server's NOTIFYs awaiting a final response, by (presentity, CSeq).
    notify_pending: HashMap<(usize, u32), Vec<u8>>,
    /// When to retransmit them: (due, presentity, CSeq, sends so far, first send).
    notify_timers: BinaryHeap<Reverse<NotifyTimer>>,
}

/// Settings of closed-loop (`--rate max`) sending.
#[derive(Clone, Copy, Debug)]
pub struct ClosedLoop {
    pub dir: Dir,
    /// No new updates from this instant on.
    pub until: Instant,
    /// Cap on updates sent in the direction.
    pub max_updates: u64,
}

/// Something a tick function asks the pump to send (ticks are synchronous; sending is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start subscription `k` of the mixed population.
    Start(usize),
    /// Send the next measured update for a presentity.
    Update(Dir, usize),
}

/// What a caller's tick function tells the pump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flowctl {
    Continue,
    Stop,
}

impl Harness {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        names: Names,
        gateway_sip: SocketAddr,
        ua: UdpSocket,
        ps: UdpSocket,
        xmpp_out: xmpp::Sender,
        events: UnboundedReceiver<(Instant, Ev)>,
        settings: UaSettings,
        n_s2x: usize,
        n_x2s: usize,
    ) -> std::io::Result<Harness> {
        let now = Instant::now();
        // Distinguishes this run's Call-IDs and tags from a previous run's stragglers.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let run = (std::process::id() ^ nanos) % 1_000_000;
        Ok(Harness {
            ua_addr: ua.local_addr()?,
            ps_addr: ps.local_addr()?,
            names,
            gateway_sip,
            ua,
            ps,
            xmpp_out,
            events,
            settings,
            run,
            s2x: vec![
                S2x {
                    phase: Phase::Idle,
                    generation: 0,
                    to_tag: None,
                    target: None,
                    cseq: 0,
                    unanswered: None,
                    next_refresh: None,
                    subscribe_seen: false,
                };
                n_s2x
            ],
            x2s: vec![
                X2s {
                    requested: false,
                    subscribed_seen: false,
                    call_id: None,
                    gw_from: String::new(),
                    gw_target: String::new(),
                    our_tag: String::new(),
                    peer: None,
                    cseq: 0,
                    dialogs: 0,
                    gone: false,
                    last_subscribe: None,
                    granted: 0,
                    last_sub_cseq: 0,
                };
                n_x2s
            ],
            s2x_flow: Flow::new(n_s2x),
            x2s_flow: Flow::new(n_x2s),
            counters: BTreeMap::new(),
            xmpp_connected: false,
            sip_ready: false,
            retrans: BinaryHeap::new(),
            refreshes: BinaryHeap::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(run),
            x2s_refresh_bins: PerSecond::new(now),
            s2x_refresh_bins: PerSecond::new(now),
            resync: None,
            gateway: None,
            gateway_pid: None,
            fatal: None,
            last_liveness_check: now,
            queue: Vec::new(),
            s2x_active: 0,
            x2s_granted: 0,
            closed_loop: None,
            just_delivered: Vec::new(),
            notify_pending: HashMap::new(),
            notify_timers: BinaryHeap::new(),
        })
    }

    pub fn n_s2x(&self) -> usize {
        self.s2x.len()
    }

    pub fn n_x2s(&self) -> usize {
        self.x2s.len()
    }

    fn count(&mut self, what: impl Into<String>) {
        *self.counters.entry(what.into()).or_insert(0) += 1;
    }

    /// A uniform number in [0, 1) from a xorshift generator (spreads refreshes).
    fn uniform(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    // ---------------------------------------------------------------- the event loop

    /// Runs until `tick` says stop, `deadline` passes, or something fatal happens
    /// (returns `false` then). `tick` runs every millisecond.
    pub async fn pump(
        &mut self,
        deadline: Instant,
        tick: &mut dyn FnMut(&mut Harness, Instant) -> Flowctl,
    ) -> bool {
        enum Got {
            Ua(usize, SocketAddr),
            Ps(usize, SocketAddr),
            X(Instant, Ev),
            Tick,
            Nothing,
        }
        let mut ua_buf = vec![0u8; 65536];
        let mut ps_buf = vec![0u8; 65536];
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if !self.just_delivered.is_empty() {
                self.send_closed_loop(Instant::now()).await;
            }
            let got = tokio::select! {
                _ = ticker.tick() => Got::Tick,
                r = self.ua.recv_from(&mut ua_buf) => match r {
                    Ok((n, a)) => Got::Ua(n, a),
                    Err(_) => Got::Nothing,
                },
                r = self.ps.recv_from(&mut ps_buf) => match r {
                    Ok((n, a)) => Got::Ps(n, a),
                    Err(_) => Got::Nothing,
                },
                e = self.events.recv() => match e {
                    Some((t, ev)) => Got::X(t, ev),
                    None => Got::Nothing,
                },
            };
            let now = Instant::now();
            match got {
                Got::Ua(n, a) => {
                    let msg = Msg::parse(&ua_buf[..n]);
                    self.on_ua(msg, a, now).await;
                }
                Got::Ps(n, a) => {
                    let msg = Msg::parse(&ps_buf[..n]);
                    self.on_ps(msg, a, now).await;
                }
                Got::X(t, ev) => self.on_xmpp(ev, t).await,
                Got::Nothing => {}
                Got::Tick => {
                    self.housekeeping(now).await;
                    if self.fatal.is_some() {
                        return false;
                    }
                    if tick(self, now) == Flowctl::Stop {
                        return true;
                    }
                    if now >= deadline {
                        return false;
                    }
                    let queued = std::mem::take(&mut self.queue);
                    for action in &queued {
                        match *action {
                            Action::Start(k) => self.start_subscription(k, now).await,
                            Action::Update(dir, p) => self.send_update(dir, p, now).await,
                        }
                    }
                    self.queue = queued;
                    self.queue.clear();
                }
            }
        }
    }

    async fn housekeeping(&mut self, now: Instant) {
        if now.duration_since(self.last_liveness_check) >= Duration::from_millis(100) {
            self.last_liveness_check = now;
            if let Some(g) = self.gateway.as_mut() {
                if let Some(status) = g.exited() {
                    self.fatal = Some(format!(
                        "gateway exited ({status}); log: {}",
                        g.log_path().display()
                    ));
                }
            }
        }
        // Retransmit unanswered requests like RFC 3261 §17.1.2.2 / §17.1.1.2: Timer E
        // from T1 = 500 ms doubling up to T2 = 4 s; give up at Timer F = 64·T1 = 32 s.
        let mut budget = 10_000;
        while let Some(&Reverse((due, i, cseq))) = self.retrans.peek() {
            if due > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.retrans.pop();
            let Some((c, sends, first)) = self.s2x.get(i).and_then(|s| s.unanswered) else {
                continue;
            };
            if c != cseq {
                continue;
            }
            if now.duration_since(first) >= TIMER_F {
                if self.s2x[i].phase == Phase::Active {
                    self.s2x_active -= 1;
                }
                self.s2x[i].unanswered = None;
                self.s2x[i].phase = Phase::Failed;
                self.count("xmpp->sip SUBSCRIBE unanswered");
                continue;
            }
            self.s2x[i].cseq -= 1;
            self.s2x[i].unanswered = Some((c, sends + 1, first));
            self.send_watcher_subscribe(i, now, self.settings.expires)
                .await;
            self.retrans
                .push(Reverse((now + timer_e(sends + 1), i, cseq)));
            self.count("xmpp->sip SUBSCRIBE retransmitted");
        }
        let mut budget = 10_000;
        while let Some(&Reverse((due, j, cseq, sends, first))) = self.notify_timers.peek() {
            if due > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.notify_timers.pop();
            if !self.notify_pending.contains_key(&(j, cseq)) {
                continue;
            }
            if now.duration_since(first) >= TIMER_F {
                self.notify_pending.remove(&(j, cseq));
                self.count("sip->xmpp NOTIFY unanswered");
                continue;
            }
            let peer = self.x2s.get(j).and_then(|x| x.peer);
            if let (Some(bytes), Some(peer)) = (self.notify_pending.get(&(j, cseq)), peer) {
                let _ = self.ps.send_to(bytes, peer).await;
                self.count("sip->xmpp NOTIFY retransmitted");
            }
            self.notify_timers.push(Reverse((
                now + timer_e(sends + 1),
                j,
                cseq,
                sends + 1,
                first,
            )));
        }
        if self.settings.refresh_watchers {
            let mut budget = 10_000;
            while let Some(&Reverse((at, i))) = self.refreshes.peek() {
                if at > now || budget == 0 {
                    break;
                }
                budget -= 1;
                self.refreshes.pop();
                let current = self.s2x.get(i).and_then(|s| s.next_refresh);
                if current == Some(at) && self.s2x[i].phase == Phase::Active {
                    self.s2x[i].next_refresh = None;
                    self.s2x_refresh_bins.add(now);
                    self.send_watcher_subscribe(i, now, self.settings.expires)
                        .await;
                }
            }
        }
    }

    async fn send_gateway(&mut self, bytes: &[u8]) {
        if self.ua.send_to(bytes, self.gateway_sip).await.is_err() {
            self.count("udp send error (watchers)");
        }
    }

    // ------------------------------------------------------------ S2X: the watchers

    fn s2x_call_id(&self, i: usize) -> String {
        format!(
            "s2x-{i}-{}-{}@{}",
            self.run,
            self.s2x[i].generation,
            self.ua_addr.ip()
        )
    }

    fn s2x_index(&self, call_id: &str) -> Option<usize> {
        let rest = call_id.strip_prefix("s2x-")?;
        let mut parts = rest.split('-');
        let i: usize = parts.next()?.parse().ok()?;
        let run: u32 = parts.next()?.parse().ok()?;
        let gen: u32 = parts.next()?.split('@').next()?.parse().ok()?;
        (run == self.run && self.s2x.get(i)?.generation == gen).then_some(i)
    }

    /// Sends watcher `i`'s SUBSCRIBE: initial, or in-dialog when a To tag is known.
    pub async fn send_watcher_subscribe(&mut self, i: usize, now: Instant, expires: u32) {
        let n = &self.names;
        let user_uri = format!("sip:{}{i}@{}", n.user, n.xmpp_sip_domain);
        let watcher = format!("{}{i}", n.watcher);
        let call_id = self.s2x_call_id(i);
        let s = &mut self.s2x[i];
        s.cseq += 1;
        let cseq = s.cseq;
        let target = s.target.clone().unwrap_or_else(|| user_uri.clone());
        let to = match &s.to_tag {
            Some(t) => format!("<{user_uri}>;tag={t}"),
            None => format!("<{user_uri}>"),
        };
        if s.phase == Phase::Idle {
            s.phase = Phase::Requested;
        }
        let fresh = s.unanswered.is_none_or(|(c, _, _)| c != cseq);
        if fresh {
            s.unanswered = Some((cseq, 1, now));
        }
        let via = format!(
            "SIP/2.0/UDP {};branch=z9hG4bK-{}-s{i}-{}-{cseq};rport",
            self.ua_addr, self.run, s.generation
        );
        let from = format!(
            "<sip:{watcher}@{}>;tag={watcher}t{}g{}",
            n.sip_domain, self.run, s.generation
        );
        let contact = format!("<sip:{watcher}@{}>", self.ua_addr);
        let cseq_h = format!("{cseq} SUBSCRIBE");
        let exp = expires.to_string();
        let bytes = sipmsg::build(
            &format!("SUBSCRIBE {target} SIP/2.0"),
            &[
                ("Via", &via),
                ("Max-Forwards", "70"),
                ("From", &from),
                ("To", &to),
                ("Call-ID", &call_id),
                ("CSeq", &cseq_h),
                ("Contact", &contact),
                ("Event", "presence"),
                ("Accept", "application/pidf+xml"),
                ("Expires", &exp),
            ],
            b"",
        );
        if fresh {
            self.retrans.push(Reverse((now + timer_e(1), i, cseq)));
        }
        self.send_gateway(&bytes).await;
    }

    /// Sends an OPTIONS to the gateway; any answer marks its SIP side ready.
    pub async fn send_options(&mut self) {
        let via = format!(
            "SIP/2.0/UDP {};branch=z9hG4bK-{}-opt;rport",
            self.ua_addr, self.run
        );
        let bytes = sipmsg::build(
            &format!("OPTIONS sip:{} SIP/2.0", self.gateway_sip),
            &[
                ("Via", &via),
                ("Max-Forwards", "70"),
                (
                    "From",
                    &format!("<sip:load@{}>;tag=opt", self.names.sip_domain),
                ),
                ("To", &format!("<sip:{}>", self.gateway_sip)),
                (
                    "Call-ID",
                    &format!("opt-{}@{}", self.run, self.ua_addr.ip()),
                ),
                ("CSeq", "1 OPTIONS"),
            ],
            b"",
        );
        self.send_gateway(&bytes).await;
    }

    async fn on_ua(&mut self, msg: Result<Msg, String>, from: SocketAddr, now: Instant) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                self.count(format!("malformed SIP to watchers: {e}"));
                return;
            }
        };
        if let Some(status) = msg.status() {
            self.on_watcher_response(&msg, status, now).await;
            return;
        }
        let method = msg.method().unwrap_or("").to_ascii_uppercase();
        if method != "NOTIFY" {
            let code = if method == "OPTIONS" { 200 } else { 501 };
            let reason = if code == 200 { "OK" } else { "Not Implemented" };
            let resp = sipmsg::response(&msg, code, reason, Some("ua"), &[]);
            let _ = self.ua.send_to(&resp, from).await;
            if method != "ACK" {
                self.count(format!("watchers got {method}"));
            }
            return;
        }
        let Some(i) = msg.call_id().and_then(|c| self.s2x_index(c)) else {
            let resp = sipmsg::response(&msg, 481, "Subscription Does Not Exist", None, &[]);
            let _ = self.ua.send_to(&resp, from).await;
            self.count("xmpp->sip NOTIFY for unknown dialog");
            return;
        };
        let resp = sipmsg::response(&msg, 200, "OK", None, &[]);
        let _ = self.ua.send_to(&resp, from).await;
        let gw_tag = msg.header("from").and_then(tag_of).map(str::to_string);
        let state = msg
            .header("subscription-state")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let s = &mut self.s2x[i];
        if s.to_tag.is_none() {
            s.to_tag = gw_tag;
        }
        match state.as_str() {
            "active" => {
                if s.phase != Phase::Active {
                    s.phase = Phase::Active;
                    self.s2x_active += 1;
                }
            }
            "pending" => {
                if s.phase != Phase::Active {
                    s.phase = Phase::Pending;
                }
            }
            "terminated" => {
                if s.phase == Phase::Active {
                    self.s2x_active -= 1;
                }
                s.phase = Phase::Terminated;
                let reason = msg
                    .header("subscription-state")
                    .and_then(|v| param_of(v, "reason"))
                    .unwrap_or("none")
                    .to_string();
                self.count(format!("xmpp->sip NOTIFY terminated reason={reason}"));
            }
            other => {
                let other = other.to_string();
                self.count(format!("xmpp->sip NOTIFY bad Subscription-State {other:?}"));
            }
        }
        if !msg.body.is_empty() {
            match pidf::read(&msg.body) {
                Ok(summary) => {
                    if let Some(seq) = summary.seq() {
                        self.s2x_flow.deliver(i, seq, now);
                        self.note_delivery(Dir::S2x, i);
                    }
                }
                Err(e) => self.count(format!("xmpp->sip NOTIFY body: {e}")),
            }
        }
    }

    async fn on_watcher_response(&mut self, msg: &Msg, status: u16, now: Instant) {
        let call_id = msg.call_id().unwrap_or("");
        if call_id.starts_with("opt-") {
            self.sip_ready = true;
            return;
        }
        let Some(i) = self.s2x_index(call_id) else {
            return;
        };
        let Some((cseq, method)) = msg.cseq() else {
            return;
        };
        if !method.eq_ignore_ascii_case("SUBSCRIBE") || status < 200 {
            return;
        }
        let settings_expires = self.settings.expires;
        let s = &mut self.s2x[i];
        if s.unanswered.is_some_and(|(c, _, _)| c == cseq) {
            s.unanswered = None;
        } else {
            return; // a retransmitted answer
        }
        if (200..300).contains(&status) {
            if s.to_tag.is_none() {
                s.to_tag = msg.header("to").and_then(tag_of).map(str::to_string);
            }
            if let Some(c) = msg.header("contact") {
                s.target = Some(uri_of(c).to_string());
            }
            if s.phase == Phase::Requested {
                s.phase = Phase::Accepted;
            }
            let granted = msg.expires().unwrap_or(settings_expires);
            if granted > 0 {
                // The first refresh lands anywhere in (5 %, 85 %) of the interval and later
                // ones at 78–82 %, so the watchers' own refresh load is flat however
                // quickly the subscriptions were set up.
                let first = cseq == 1;
                let frac = if first {
                    0.05 + 0.8 * self.uniform()
                } else {
                    0.78 + 0.04 * self.uniform()
                };
                let at = now + Duration::from_secs_f64(f64::from(granted) * frac);
                self.s2x[i].next_refresh = Some(at);
                self.refreshes.push(Reverse((at, i)));
            }
        } else if status == 481 && s.phase == Phase::Active {
            // The gateway lost the dialog: start a new one (RFC 6665 §4.1.2.2).
            self.s2x_active -= 1;
            s.generation += 1;
            s.to_tag = None;
            s.target = None;
            s.cseq = 0;
            s.phase = Phase::Requested;
            self.count("xmpp->sip refresh answered 481");
            self.send_watcher_subscribe(i, now, settings_expires).await;
        } else if let (423, Some(min)) = (
            status,
            msg.header("min-expires")
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|min| *min > settings_expires),
        ) {
            // Interval Too Brief (RFC 6665 §4.1.2.1): retry once with Min-Expires.
            self.count("xmpp->sip SUBSCRIBE retried after 423");
            self.settings.expires = self.settings.expires.max(min);
            self.send_watcher_subscribe(i, now, min).await;
        } else {
            if s.phase == Phase::Active {
                self.s2x_active -= 1;
            }
            s.phase = Phase::Failed;
            self.count(format!("xmpp->sip SUBSCRIBE answered {status}"));
        }
    }

    // ------------------------------------------------- X2S: the presence server

    async fn on_ps(&mut self, msg: Result<Msg, String>, from: SocketAddr, now: Instant) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                self.count(format!("malformed SIP to presence server: {e}"));
                return;
            }
        };
        if let Some(status) = msg.status() {
            if status >= 200 {
                let j = msg
                    .header("from")
                    .and_then(|f| user_of(uri_of(f)))
                    .and_then(|u| index_of(u, &self.names.presentity));
                if let (Some(j), Some((cseq, _))) = (j, msg.cseq()) {
                    self.notify_pending.remove(&(j, cseq));
                }
            }
            if !(200..300).contains(&status) && status >= 200 {
                self.count(format!("sip->xmpp NOTIFY answered {status}"));
                if status == 481 {
                    if let Some(j) = self.x2s_index_by_call_id(msg.call_id().unwrap_or("")) {
                        self.x2s[j].gone = true;
                    }
                }
            }
            return;
        }
        let method = msg.method().unwrap_or("").to_ascii_uppercase();
        match method.as_str() {
            "SUBSCRIBE" => self.on_ps_subscribe(&msg, from, now).await,
            "ACK" => {}
            "OPTIONS" => {
                let resp = sipmsg::response(&msg, 200, "OK", Some("ps"), &[]);
                let _ = self.ps.send_to(&resp, from).await;
            }
            "PUBLISH" => {
                let resp = sipmsg::response(
                    &msg,
                    200,
                    "OK",
                    Some("ps"),
                    &[("SIP-ETag", "load"), ("Expires", "3600")],
                );
                let _ = self.ps.send_to(&resp, from).await;
                self.count("presence server got PUBLISH");
            }
            other => {
                let other = other.to_string();
                let resp = sipmsg::response(&msg, 501, "Not Implemented", Some("ps"), &[]);
                let _ = self.ps.send_to(&resp, from).await;
                self.count(format!("presence server got {other}"));
            }
        }
    }

    fn x2s_index_by_call_id(&self, call_id: &str) -> Option<usize> {
        // Only used on error paths; a linear scan keeps the state small.
        self.x2s
            .iter()
            .position(|x| x.call_id.as_deref() == Some(call_id))
    }

    async fn on_ps_subscribe(&mut self, msg: &Msg, from: SocketAddr, now: Instant) {
        let j = msg
            .uri()
            .and_then(user_of)
            .and_then(|u| index_of(u, &self.names.presentity))
            .filter(|j| *j < self.x2s.len());
        let Some(j) = j else {
            let resp = sipmsg::response(msg, 404, "Not Found", Some("ps"), &[]);
            let _ = self.ps.send_to(&resp, from).await;
            self.count("sip->xmpp SUBSCRIBE for unknown presentity");
            return;
        };
        let requested = msg.expires().unwrap_or(3600);
        let call_id = msg.call_id().unwrap_or("").to_string();
        let sub_cseq = msg.cseq().map(|(n, _)| n).unwrap_or(0);
        let x = &self.x2s[j];
        if x.call_id.as_deref() == Some(call_id.as_str()) && x.last_sub_cseq == sub_cseq {
            // A retransmission (RFC 3261 §17.2.1): answer it again, same To tag, and
            // neither start a new dialog nor send another NOTIFY.
            let granted = requested.min(self.settings.expires).to_string();
            let contact = format!("<sip:{}{j}@{}>", self.names.presentity, self.ps_addr);
            let resp = sipmsg::response(
                msg,
                200,
                "OK",
                Some(&x.our_tag.clone()),
                &[("Contact", &contact), ("Expires", &granted)],
            );
            let _ = self.ps.send_to(&resp, from).await;
            self.count("sip->xmpp SUBSCRIBE retransmission replied to again");
            return;
        }
        // An unsubscribe (Expires: 0) is not a resynchronisation.
        if let Some(r) = self.resync.as_mut().filter(|_| requested > 0) {
            r.bins.add(now);
            if !r.x2s_seen[j] {
                r.x2s_seen[j] = true;
                r.x2s_count += 1;
                if r.x2s_count == r.x2s_seen.len() && r.done.is_none() {
                    r.done = Some(now);
                }
            }
        }
        let in_dialog = msg.header("to").and_then(tag_of).is_some();
        let granted = requested.min(self.settings.expires);
        let run = self.run;
        let x = &mut self.x2s[j];
        if in_dialog {
            if x.call_id.as_deref() != Some(call_id.as_str()) {
                let resp = sipmsg::response(msg, 481, "Subscription Does Not Exist", None, &[]);
                let _ = self.ps.send_to(&resp, from).await;
                self.count("sip->xmpp refresh for unknown dialog");
                return;
            }
            self.x2s_refresh_bins.add(now);
        } else {
            x.dialogs += 1;
            x.call_id = Some(call_id);
            x.gw_from = msg.header("from").unwrap_or("").to_string();
            x.gw_target = msg
                .header("contact")
                .map(|c| uri_of(c).to_string())
                .unwrap_or_else(|| uri_of(&x.gw_from).to_string());
            x.our_tag = format!("p{j}t{run}d{}", x.dialogs);
            x.cseq = 0;
            x.gone = false;
            if x.dialogs > 1 {
                self.count("sip->xmpp new dialogs after the first");
            }
        }
        let x = &mut self.x2s[j];
        x.peer = Some(from);
        x.last_sub_cseq = sub_cseq;
        x.last_subscribe = Some(now);
        x.granted = granted;
        let contact = format!("<sip:{}{j}@{}>", self.names.presentity, self.ps_addr);
        let exp = granted.to_string();
        let resp = sipmsg::response(
            msg,
            200,
            "OK",
            Some(&x.our_tag.clone()),
            &[("Contact", &contact), ("Expires", &exp)],
        );
        let _ = self.ps.send_to(&resp, from).await;
        // RFC 6665 §4.2.1.2: every accepted SUBSCRIBE is followed by a NOTIFY with the
        // full current state.
        let last = self.x2s_flow.last_sent(j);
        let note = if last > 0 {
            format!("{}{last}", pidf::SEQ_PREFIX)
        } else {
            "init".to_string()
        };
        let state = if granted == 0 {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={granted}")
        };
        self.send_ps_notify(j, &state, &note).await;
    }

    /// Sends a NOTIFY in presentity `j`'s dialog with a one-tuple PIDF carrying `note`.
    pub async fn send_ps_notify(&mut self, j: usize, substate: &str, note: &str) {
        let x = &mut self.x2s[j];
        let (Some(peer), Some(call_id)) = (x.peer, x.call_id.clone()) else {
            return;
        };
        x.cseq += 1;
        let presentity = format!("{}{j}", self.names.presentity);
        let body = pidf::build(
            &format!("pres:{presentity}@{}", self.names.sip_domain),
            &format!("t{j}"),
            true,
            note,
        );
        let via = format!(
            "SIP/2.0/UDP {};branch=z9hG4bK-{}-n{j}-{}-{}",
            self.ps_addr, self.run, x.dialogs, x.cseq
        );
        let from = format!(
            "<sip:{presentity}@{}>;tag={}",
            self.names.sip_domain, x.our_tag
        );
        let contact = format!("<sip:{presentity}@{}>", self.ps_addr);
        let cseq = format!("{} NOTIFY", x.cseq);
        let bytes = sipmsg::build(
            &format!("NOTIFY {} SIP/2.0", x.gw_target),
            &[
                ("Via", &via),
                ("Max-Forwards", "70"),
                ("From", &from),
                ("To", &x.gw_from),
                ("Call-ID", &call_id),
                ("CSeq", &cseq),
                ("Contact", &contact),
                ("Event", "presence"),
                ("Subscription-State", substate),
                ("Content-Type", "application/pidf+xml"),
            ],
            body.as_bytes(),
        );
        if self.ps.send_to(&bytes, peer).await.is_err() {
            self.count("udp send error (presence server)");
        }
        let cseq = self.x2s[j].cseq;
        self.notify_pending.insert((j, cseq), bytes);
        let now = Instant::now();
        self.notify_timers
            .push(Reverse((now + timer_e(1), j, cseq, 1, now)));
    }

    // ------------------------------------------------------------------ XMPP side

    fn jid_index(&self, jid: &str, prefix: &str, domain: &str) -> Option<usize> {
        let b = bare(jid);
        let (l, d) = b.split_once('@')?;
        if d != domain {
            return None;
        }
        index_of(l, prefix)
    }

    async fn on_xmpp(&mut self, ev: Ev, at: Instant) {
        match ev {
            Ev::Connected => {
                self.xmpp_connected = true;
                self.count("xmpp component connections");
                if let Some(r) = self.resync.as_mut() {
                    r.reconnected.get_or_insert(at);
                }
            }
            Ev::Closed(reason) => {
                self.xmpp_connected = false;
                self.count(format!("xmpp stream ended: {reason}"));
            }
            Ev::Stanza(s) => self.on_stanza(s, at),
        }
    }

    fn on_stanza(&mut self, s: Stanza, at: Instant) {
        let comp = self.names.component.clone();
        let xd = self.names.xmpp_domain.clone();
        if bare(&s.from).rsplit('@').next() != Some(comp.as_str()) {
            // Stanzas must come from the component's domain (standards.md §16 case 3).
            self.count(format!("xmpp {} from outside the component", s.name));
        }
        match s.name.as_str() {
            "presence" => {}
            "iq" => {
                if matches!(s.typ.as_deref(), Some("get") | Some("set")) {
                    self.xmpp_out.send(xmpp::iq_unavailable(&s));
                }
                return;
            }
            other => {
                let other = other.to_string();
                self.count(format!("xmpp {other} received"));
                return;
            }
        }
        let typ = s.typ.as_deref().unwrap_or("available");
        let watcher = self.jid_index(&s.from, &self.names.watcher.clone(), &comp);
        let user = self.jid_index(&s.to, &self.names.user.clone(), &xd);
        let presentity = self.jid_index(&s.from, &self.names.presentity.clone(), &comp);
        let subscriber = self.jid_index(&s.to, &self.names.subscriber.clone(), &xd);
        match (typ, watcher, user, presentity, subscriber) {
            ("subscribe", Some(i), Some(u), _, _) if i == u && i < self.s2x.len() => {
                self.s2x[i].subscribe_seen = true;
                self.note_s2x_resync(i, at);
                if self.settings.auto_approve {
                    let from = format!("{}{i}@{xd}", self.names.user);
                    let to = format!("{}{i}@{comp}", self.names.watcher);
                    self.xmpp_out
                        .send(xmpp::presence_typed("subscribed", &from, &to));
                }
            }
            ("probe", Some(i), Some(u), _, _) if i == u && i < self.s2x.len() => {
                self.note_s2x_resync(i, at);
                self.count("xmpp probes from the gateway");
                let last = self.s2x_flow.last_sent(i);
                if last > 0 {
                    let from = format!("{}{i}@{xd}/{}", self.names.user, self.names.resource);
                    let to = format!("{}{i}@{comp}", self.names.watcher);
                    self.xmpp_out.send(xmpp::presence_available(
                        &from,
                        &to,
                        "away",
                        &format!("{}{last}", pidf::SEQ_PREFIX),
                    ));
                }
            }
            ("subscribed", _, _, Some(j), Some(x)) if j == x && j < self.x2s.len() => {
                if !self.x2s[j].subscribed_seen {
                    self.x2s[j].subscribed_seen = true;
                    self.x2s_granted += 1;
                }
            }
            ("available" | "unavailable", _, _, Some(j), Some(x))
                if j == x && j < self.x2s.len() =>
            {
                if let Some(seq) = s.status.as_deref().and_then(pidf::seq_of) {
                    self.x2s_flow.deliver(j, seq, at);
                    self.note_delivery(Dir::X2s, j);
                }
            }
            (t @ ("unsubscribe" | "unsubscribed" | "error"), ..) => {
                // Authorization withdrawn or an error: the bridge failed a pair.
                let t = t.to_string();
                self.count(format!("xmpp presence type={t} unexpected"));
            }
            (t, ..) => {
                let t = t.to_string();
                self.count(format!("xmpp presence type={t} ignored"));
            }
        }
    }

    fn note_s2x_resync(&mut self, i: usize, at: Instant) {
        if let Some(r) = self.resync.as_mut() {
            r.bins.add(at);
            if !r.s2x_seen[i] {
                r.s2x_seen[i] = true;
                r.s2x_count += 1;
            }
        }
    }

    // ------------------------------------------------------------ actions for modes

    fn note_delivery(&mut self, dir: Dir, p: usize) {
        if self.closed_loop.is_some_and(|c| c.dir == dir) && self.flow(dir).settled(p) {
            self.just_delivered.push(p);
        }
    }

    /// Sends the next update for every presentity whose update was just delivered.
    async fn send_closed_loop(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.just_delivered);
        let Some(cl) = self.closed_loop else { return };
        if now >= cl.until {
            return;
        }
        for p in ready {
            if self.flow(cl.dir).sent_count() >= cl.max_updates {
                break;
            }
            if self.flow(cl.dir).settled(p) {
                self.send_update(cl.dir, p, now).await;
            }
        }
    }

    /// Starts subscription `k` of the mixed population: S2X for `k < n_s2x`, else X2S.
    pub async fn start_subscription(&mut self, k: usize, now: Instant) {
        if k < self.s2x.len() {
            self.send_watcher_subscribe(k, now, self.settings.expires)
                .await;
        } else {
            let j = k - self.s2x.len();
            if let Some(x) = self.x2s.get_mut(j) {
                x.requested = true;
                let from = format!("{}{j}@{}", self.names.subscriber, self.names.xmpp_domain);
                let to = format!("{}{j}@{}", self.names.presentity, self.names.component);
                self.xmpp_out
                    .send(xmpp::presence_typed("subscribe", &from, &to));
            }
        }
    }

    pub fn s2x_established(&self, i: usize) -> bool {
        self.s2x.get(i).is_some_and(|s| s.phase == Phase::Active)
    }

    pub fn x2s_established(&self, j: usize) -> bool {
        self.x2s
            .get(j)
            .is_some_and(|x| x.subscribed_seen && x.call_id.is_some() && !x.gone)
    }

    /// Counts (established S2X, established X2S).
    pub fn established(&self) -> (usize, usize) {
        let a = (0..self.s2x.len())
            .filter(|i| self.s2x_established(*i))
            .count();
        let b = (0..self.x2s.len())
            .filter(|j| self.x2s_established(*j))
            .count();
        (a, b)
    }

    /// Sends the next measured update for presentity `p` in direction `dir`.
    pub async fn send_update(&mut self, dir: Dir, p: usize, now: Instant) {
        match dir {
            Dir::S2x => {
                let seq = self.s2x_flow.send(p, now);
                let from = format!(
                    "{}{p}@{}/{}",
                    self.names.user, self.names.xmpp_domain, self.names.resource
                );
                let to = format!("{}{p}@{}", self.names.watcher, self.names.component);
                self.xmpp_out.send(xmpp::presence_available(
                    &from,
                    &to,
                    "away",
                    &format!("{}{seq}", pidf::SEQ_PREFIX),
                ));
            }
            Dir::X2s => {
                let seq = self.x2s_flow.send(p, now);
                let expires = self.settings.expires;
                self.send_ps_notify(
                    p,
                    &format!("active;expires={expires}"),
                    &format!("{}{seq}", pidf::SEQ_PREFIX),
                )
                .await;
            }
        }
    }

    pub fn flow(&self, dir: Dir) -> &Flow {
        match dir {
            Dir::S2x => &self.s2x_flow,
            Dir::X2s => &self.x2s_flow,
        }
    }

    pub fn presentities(&self, dir: Dir) -> usize {
        match dir {
            Dir::S2x => self.s2x.len(),
            Dir::X2s => self.x2s.len(),
        }
    }

    /// Begins tracking a restart resynchronisation from `now`.
    pub fn begin_resync(&mut self, now: Instant) {
        self.resync = Some(Resync {
            started: now,
            reconnected: None,
            x2s_seen: vec![false; self.x2s.len()],
            x2s_count: 0,
            s2x_seen: vec![false; self.s2x.len()],
            s2x_count: 0,
            done: if self.x2s.is_empty() { Some(now) } else { None },
            bins: PerSecond::new(now),
        });
    }

    /// S2X dialogs not active any more are "lost"; X2S dialogs refused (481), never made,
    /// or not refreshed within their granted expiry are "dead". Returns (lost, dead).
    pub fn held(&self, now: Instant) -> (usize, usize) {
        let s = self.s2x.iter().filter(|s| s.phase != Phase::Active).count();
        let x = self
            .x2s
            .iter()
            .filter(|x| {
                let expired = x.last_subscribe.is_none_or(|at| {
                    now.saturating_duration_since(at) > Duration::from_secs(u64::from(x.granted))
                });
                x.gone || x.call_id.is_none() || expired
            })
            .count();
        (s, x)
    }
}
