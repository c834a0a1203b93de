//! `agent` and `agent-check`: the tool plays SIP publishers and SIP watchers against a
//! SIP presence server (this gateway's embedded presence agent, Kamailio's `presence`, or
//! any other) on loopback.
//!
//! Setup: `W` watchers `sip:w{k}@<domain>` SUBSCRIBE (Event: presence) to each of `P`
//! presentities `sip:p{j}@<domain>` (watcher `k` watches presentity `k / W`) and answer
//! every NOTIFY 200; then one initial PUBLISH per presentity. Measured: PUBLISH modifies
//! (SIP-If-Match with the last SIP-ETag) whose PIDF `<note>` says `seq N`; an update is
//! delivered to a watcher when a NOTIFY carrying `seq N` reaches it, and *notified* when
//! it reached every watcher of its presentity.
//!
//! Threads, not the async harness: at 100 000 NOTIFY/s the tool's own cost decides what
//! can be measured on two cores, so each watcher socket has one blocking receiver thread
//! that answers NOTIFYs from a byte-level scan (no allocation per message), and the
//! publisher runs in the calling thread. Every loop is bounded by a deadline and by the
//! stop flag, which the async wrapper sets when the run is cut short; the target
//! process is stopped by PID from the wrapper's guard, also on failure.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use memchr::memmem;
use serde::Serialize;

use crate::gateway::{self, Gateway};
use crate::modes::Rate;
use crate::procfs;
use crate::stats::{percentiles, Percentiles};

/// Flags of `agent` and `agent-check`.
#[derive(Clone, Debug, Args)]
pub struct AgentArgs {
    /// Start this project's gateway with this command; the tool writes a config with the
    /// embedded presence agent (`{config}` is replaced by its path, otherwise `--config
    /// PATH` is appended).
    #[arg(long)]
    pub gateway_cmd: Option<String>,
    /// Start another presence server with this shell command, run as given (`{port}`,
    /// `{addr}` and `{dir}` are replaced by the target's UDP port, address and the work
    /// dir). Stopped by PID like the gateway; CPU and memory count its child processes.
    #[arg(long, conflicts_with = "gateway_cmd")]
    pub target_cmd: Option<String>,
    /// The presence server's SIP UDP address (a free port is picked when a command
    /// starts it and this is omitted).
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// PID of an already running target, for CPU and memory figures.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// A name for the target in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Presentities sip:<prefix><j>@<domain>.
    #[arg(long, default_value_t = 100)]
    pub presentities: usize,
    /// Watchers per presentity.
    #[arg(long, default_value_t = 1)]
    pub watchers: usize,
    /// PUBLISH per second over all presentities (open loop), or `max` (closed loop: a
    /// presentity publishes again when every watcher has its last state).
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds to wait for the last states after publishing stops.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Closed loop: publish again after this many ms even if not every watcher has the
    /// last state (counted as overtaken).
    #[arg(long, default_value_t = 2000)]
    pub overtake_ms: u64,
    /// Cap on measured PUBLISHes.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_updates: u64,
    /// SUBSCRIBEs (and initial PUBLISHes) started per second during setup.
    #[arg(long, default_value_t = 2000.0)]
    pub setup_rate: f64,
    /// Seconds allowed for each setup phase (subscriptions, initial publications).
    #[arg(long, default_value_t = 120)]
    pub setup_timeout: u64,
    /// Expires of the SUBSCRIBEs and PUBLISHes (longer than the run: nothing is refreshed).
    #[arg(long, default_value_t = 3600)]
    pub expires: u32,
    /// Only set up the subscriptions and read the memory figures (no PUBLISH at all):
    /// for the memory-per-subscription run at large scale.
    #[arg(long)]
    pub subscribe_only: bool,
    /// Watcher sockets, each with its own receiver thread.
    #[arg(long, default_value_t = 2)]
    pub ua_sockets: usize,
    /// Local address of the tool's sockets (port 0: free ports).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "sip.test")]
    pub sip_domain: String,
    #[arg(long, default_value = "p")]
    pub presentity_prefix: String,
    #[arg(long, default_value = "w")]
    pub watcher_prefix: String,
    /// Seconds to wait until the target answers OPTIONS.
    #[arg(long, default_value_t = 20)]
    pub ready_timeout: u64,
    /// Directory for the generated config, store and logs (default: a new temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub max_time: u64,
}

// ----------------------------------------------------------------------- the report

#[derive(Clone, Debug, Default, Serialize)]
pub struct MemReport {
    /// PSS of the target's process tree (smaps_rollup), KiB: idle, after the
    /// subscriptions, after the initial publications, at the end.
    pub pss_idle_kib: Option<u64>,
    pub pss_subscribed_kib: Option<u64>,
    pub pss_published_kib: Option<u64>,
    pub pss_end_kib: Option<u64>,
    /// VmRSS of the target process itself (the main process of a forking server).
    pub rss_idle_kib: Option<u64>,
    pub rss_subscribed_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// (PSS subscribed − PSS idle) × 1024 ÷ subscriptions.
    pub pss_per_subscription_bytes: Option<f64>,
    /// (VmRSS subscribed − VmRSS idle) × 1024 ÷ subscriptions.
    pub rss_per_subscription_bytes: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentReport {
    pub mode: &'static str,
    pub label: String,
    pub pass: bool,
    pub failures: Vec<String>,
    pub offered: String,
    pub presentities: usize,
    pub watchers_per_presentity: usize,
    pub subscriptions: usize,
    pub subscribe_s: f64,
    pub initial_publish_s: f64,
    /// Measured PUBLISHes sent, answered 2xx, answered otherwise.
    pub publish_sent: u64,
    pub publish_ok: u64,
    pub publish_failed: u64,
    /// Open loop: due PUBLISHes that waited because the previous one of that presentity
    /// was unanswered (its SIP-ETag was not known yet); closed loop: updates overtaken.
    pub publish_deferred: u64,
    pub overtaken: u64,
    /// Updates that reached every watcher of their presentity.
    pub notified: u64,
    /// notified ÷ (last delivery − first PUBLISH).
    pub notified_per_s: f64,
    /// (watcher, update) deliveries and their rate over the same span.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// NOTIFYs received in the measured window (including ones with no new state).
    pub notifies: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub unknown: u64,
    /// Watchers whose last delivered state is not their presentity's last PUBLISH: loss.
    pub wrong_final: usize,
    /// PUBLISH sent → NOTIFY received, over every (watcher, update) delivery.
    pub latency: Percentiles,
    pub target_cpu_s: Option<f64>,
    pub target_cpu_s_per_1000_publish: Option<f64>,
    /// The tool's own CPU seconds (all its threads) over the measured phase: it shares
    /// the machine with the target.
    pub tool_cpu_s: Option<f64>,
    pub memory: MemReport,
    pub counters: BTreeMap<String, u64>,
}

// --------------------------------------------------------------------- shared state

/// State the publisher and the watcher threads share, lock-free on the hot path.
struct Shared {
    t0: Instant,
    per_presentity: usize,
    run: u32,
    /// Send time (ns since `t0`, + 1 so 0 means unsent) and presentity of seq `n` at `n-1`.
    sent_at: Vec<AtomicU64>,
    sent_pres: Vec<AtomicU32>,
    /// Per presentity: (its last seq << 24) | watchers that have it (closed-loop pacing).
    progress: Vec<AtomicU64>,
    /// Per seq (at `n-1`): watchers it reached (a watcher that got a newer state first
    /// never counts for it).
    reached: Vec<AtomicU32>,
    /// Updates that reached every watcher of their presentity, from `measure_from` on.
    notified: AtomicU64,
    last_delivered: Vec<AtomicU64>,
    /// Per watcher: 0 idle, 1 SUBSCRIBE sent, 2 2xx seen, 3 active NOTIFY seen, 4 failed.
    sub_state: Vec<AtomicU8>,
    active: AtomicUsize,
    measure_from: AtomicU64,
    stop: Arc<AtomicBool>,
}

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl Shared {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64 + 1
    }
}

/// What a watcher thread counts; the main thread reads and resets it between phases.
#[derive(Default)]
struct WStats {
    notifies: u64,
    delivered: u64,
    duplicates: u64,
    stale: u64,
    unknown: u64,
    latencies_us: Vec<u32>,
    first_delivery: Option<Instant>,
    last_delivery: Option<Instant>,
    counters: BTreeMap<String, u64>,
}

impl WStats {
    fn count(&mut self, what: &str) {
        *self.counters.entry(what.to_string()).or_insert(0) += 1;
    }
}

// ------------------------------------------------------------ byte-level SIP reading

/// The header section (without the start line) and the body of a datagram.
fn split(msg: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let end = memmem::find(msg, b"\r\n\r\n")?;
    let head = &msg[..end + 2];
    let body = &msg[end + 4..];
    let first = memchr::memchr(b'\n', head)?;
    Some((&head[..first + 1], &head[first + 1..], body))
}

/// Iterates header lines (with their CRLF) of a header section.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split_inclusive(|b| *b == b'\n')
        .filter(|l| l.len() > 2)
}

/// The value of a header line if its name is `long` or `compact` (case-insensitive).
fn value_if<'a>(line: &'a [u8], long: &[u8], compact: Option<u8>) -> Option<&'a [u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = line[..colon].trim_ascii();
    let hit = name.eq_ignore_ascii_case(long)
        || (name.len() == 1 && compact.is_some_and(|c| name[0].eq_ignore_ascii_case(&c)));
    hit.then(|| line[colon + 1..].trim_ascii())
}

fn header<'a>(head: &'a [u8], long: &[u8], compact: Option<u8>) -> Option<&'a [u8]> {
    lines(head).find_map(|l| value_if(l, long, compact))
}

fn digits(s: &[u8]) -> Option<u64> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 18 {
        return None;
    }
    std::str::from_utf8(&s[..n]).ok()?.parse().ok()
}

/// The index in a Call-ID `<prefix><index>@…`.
fn call_id_index(v: &[u8], prefix: &[u8]) -> Option<usize> {
    digits(v.strip_prefix(prefix)?).map(|n| n as usize)
}

/// `seq N` in a PIDF note: the first `>seq ` followed by digits.
fn seq_in_body(body: &[u8]) -> Option<u64> {
    let at = memmem::find(body, b">seq ")?;
    digits(&body[at + 5..])
}

/// A 200 to a request: its Via, From, To, Call-ID and CSeq lines copied as they are.
fn ok_response(start_rest: &[u8], head: &[u8], out: &mut Vec<u8>) {
    let _ = start_rest;
    out.clear();
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    for l in lines(head) {
        let keep = value_if(l, b"via", Some(b'v')).is_some()
            || value_if(l, b"from", Some(b'f')).is_some()
            || value_if(l, b"to", Some(b't')).is_some()
            || value_if(l, b"call-id", Some(b'i')).is_some()
            || value_if(l, b"cseq", None).is_some();
        if keep {
            out.extend_from_slice(l);
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

// ------------------------------------------------------------------ watcher threads

fn watcher_thread(sock: Arc<UdpSocket>, sh: Arc<Shared>, stats: Arc<Mutex<WStats>>) {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(1024);
    let prefix = format!("agw{}-", sh.run).into_bytes();
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    while !sh.stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => {
                if let Ok(mut s) = stats.lock() {
                    s.count("watcher socket errors");
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let now = Instant::now();
        let msg = &buf[..n];
        let Ok(mut st) = stats.lock() else { return };
        let Some((start, head, body)) = split(msg) else {
            st.count("malformed SIP to watchers");
            continue;
        };
        let idx = header(head, b"call-id", Some(b'i')).and_then(|v| call_id_index(v, &prefix));
        if let Some(rest) = start.strip_prefix(b"SIP/2.0 ") {
            // A response to a SUBSCRIBE.
            let code = digits(rest).unwrap_or(0);
            let Some(k) = idx.filter(|k| *k < sh.sub_state.len()) else {
                st.count("responses to watchers for unknown Call-IDs");
                continue;
            };
            if (200..300).contains(&code) {
                let _ = sh.sub_state[k].compare_exchange(1, 2, Ordering::AcqRel, Ordering::Relaxed);
            } else if code >= 300 {
                st.count(&format!("SUBSCRIBE answered {code}"));
                let prev = sh.sub_state[k].swap(4, Ordering::AcqRel);
                if prev == 3 {
                    sh.active.fetch_sub(1, Ordering::AcqRel);
                }
            }
            continue;
        }
        if !start.starts_with(b"NOTIFY ") {
            if start.starts_with(b"OPTIONS ") {
                ok_response(start, head, &mut out);
                let _ = sock.send_to(&out, from);
            } else {
                st.count("other requests to watchers");
            }
            continue;
        }
        ok_response(start, head, &mut out);
        if sock.send_to(&out, from).is_err() {
            st.count("udp send errors (watchers)");
        }
        let Some(k) = idx.filter(|k| *k < sh.sub_state.len()) else {
            st.count("NOTIFY for unknown Call-IDs");
            continue;
        };
        st.notifies += 1;
        let substate = header(head, b"subscription-state", None).unwrap_or(b"");
        if substate.starts_with(b"terminated") {
            st.count("NOTIFY terminated");
            let prev = sh.sub_state[k].swap(4, Ordering::AcqRel);
            if prev == 3 {
                sh.active.fetch_sub(1, Ordering::AcqRel);
            }
            continue;
        }
        if substate.starts_with(b"active") {
            let prev = sh.sub_state[k].load(Ordering::Acquire);
            if (1..=2).contains(&prev)
                && sh.sub_state[k]
                    .compare_exchange(prev, 3, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                sh.active.fetch_add(1, Ordering::AcqRel);
            }
        } else if substate.starts_with(b"pending") {
            st.count("NOTIFY pending");
        }
        let Some(seq) = seq_in_body(body) else {
            continue;
        };
        let j = k / sh.per_presentity;
        let slot = seq.checked_sub(1).map(|i| i as usize);
        let owner = slot
            .and_then(|i| sh.sent_pres.get(i))
            .map(|p| p.load(Ordering::Acquire));
        let sent = slot
            .and_then(|i| sh.sent_at.get(i))
            .map_or(0, |t| t.load(Ordering::Acquire));
        if owner != Some(j as u32) || sent == 0 {
            st.unknown += 1;
            continue;
        }
        let last = sh.last_delivered[k].load(Ordering::Relaxed);
        if seq == last {
            st.duplicates += 1;
            continue;
        }
        if seq < last {
            st.stale += 1;
            continue;
        }
        sh.last_delivered[k].store(seq, Ordering::Release);
        let measured = seq >= sh.measure_from.load(Ordering::Relaxed);
        // Count this watcher for its presentity's current update.
        let p = &sh.progress[j];
        let mut cur = p.load(Ordering::Acquire);
        loop {
            if cur >> COUNT_BITS != seq {
                break;
            }
            match p.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        if let Some(r) = slot.and_then(|i| sh.reached.get(i)) {
            if r.fetch_add(1, Ordering::AcqRel) + 1 == sh.per_presentity as u32 && measured {
                sh.notified.fetch_add(1, Ordering::AcqRel);
            }
        }
        if measured {
            st.delivered += 1;
            let lat = sh.ns(now).saturating_sub(sent) / 1000;
            st.latencies_us.push(lat.min(u64::from(u32::MAX)) as u32);
            st.first_delivery.get_or_insert(now);
            st.last_delivery = Some(now);
        }
    }
}

// ------------------------------------------------------------------------ publisher

#[derive(Clone, Debug, Default)]
struct Pub {
    etag: Option<String>,
    cseq: u32,
    /// The unanswered PUBLISH: CSeq, first send, next retransmission, sends so far.
    in_flight: Option<(u32, Instant, Instant, u8)>,
    bytes: Vec<u8>,
    deferred: bool,
    last_seq: u64,
    last_send: Option<Instant>,
}

/// Retransmission interval after the `sends`-th send (Timer E, RFC 3261 §17.1.2.2).
fn timer_e(sends: u8) -> Duration {
    Duration::from_millis(500 << sends.saturating_sub(1).min(3))
}

struct Agent {
    a: AgentArgs,
    target: SocketAddr,
    sh: Arc<Shared>,
    pub_sock: UdpSocket,
    pub_addr: SocketAddr,
    ua: Vec<(Arc<UdpSocket>, SocketAddr)>,
    stats: Vec<Arc<Mutex<WStats>>>,
    pubs: Vec<Pub>,
    next_seq: u64,
    counters: BTreeMap<String, u64>,
    pid: Option<u32>,
    proc_handle: Arc<Mutex<Option<Gateway>>>,
    deadline: Instant,
    buf: Vec<u8>,
    publish_ok: u64,
    publish_failed: u64,
    deferred: u64,
    overtaken: u64,
}

impl Agent {
    fn count(&mut self, what: impl Into<String>) {
        *self.counters.entry(what.into()).or_insert(0) += 1;
    }

    fn stopped(&self) -> bool {
        self.sh.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn check_alive(&mut self) -> Result<(), String> {
        let Ok(mut g) = self.proc_handle.lock() else {
            return Ok(());
        };
        if let Some(g) = g.as_mut() {
            if let Some(status) = g.exited() {
                return Err(format!(
                    "the target exited ({status}); log: {}",
                    g.log_path().display()
                ));
            }
        }
        Ok(())
    }

    fn subscribe_bytes(&self, k: usize, cseq: u32) -> Vec<u8> {
        let a = &self.a;
        let j = k / a.watchers;
        let (_, local) = &self.ua[k % self.ua.len()];
        let run = self.sh.run;
        format!(
            "SUBSCRIBE sip:{pp}{j}@{d} SIP/2.0\r\n\
Via: SIP/2.0/UDP {local};branch=z9hG4bK-ag{run}-s{k}-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{wp}{k}@{d}>;tag=w{k}t{run}\r\n\
To: <sip:{pp}{j}@{d}>\r\n\
Call-ID: agw{run}-{k}@{ip}\r\n\
CSeq: {cseq} SUBSCRIBE\r\n\
Contact: <sip:{wp}{k}@{local}>\r\n\
Event: presence\r\n\
Accept: application/pidf+xml\r\n\
Expires: {exp}\r\n\
Content-Length: 0\r\n\r\n",
            pp = a.presentity_prefix,
            wp = a.watcher_prefix,
            d = a.sip_domain,
            ip = local.ip(),
            exp = a.expires,
        )
        .into_bytes()
    }

    /// Allocates the next seq for presentity `j` and sends its PUBLISH (initial without
    /// an ETag, else a modify with SIP-If-Match).
    fn publish(&mut self, j: usize, now: Instant) {
        let seq = self.next_seq + 1;
        if seq as usize > self.sh.sent_at.len() {
            return;
        }
        self.next_seq = seq;
        self.sh.sent_pres[seq as usize - 1].store(j as u32, Ordering::Release);
        self.sh.progress[j].store(seq << COUNT_BITS, Ordering::Release);
        let run = self.sh.run;
        let a = &self.a;
        let p = &mut self.pubs[j];
        p.cseq += 1;
        p.last_seq = seq;
        p.deferred = false;
        let entity = format!("sip:{}{j}@{}", a.presentity_prefix, a.sip_domain);
        let body = crate::pidf::build(&entity, &format!("t{j}"), true, &format!("seq {seq}"));
        let if_match = p
            .etag
            .as_ref()
            .map(|e| format!("SIP-If-Match: {e}\r\n"))
            .unwrap_or_default();
        p.bytes = format!(
            "PUBLISH {entity} SIP/2.0\r\n\
Via: SIP/2.0/UDP {local};branch=z9hG4bK-ag{run}-p{j}-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <{entity}>;tag=pub{j}t{run}\r\n\
To: <{entity}>\r\n\
Call-ID: agp{run}-{j}@{ip}\r\n\
CSeq: {cseq} PUBLISH\r\n\
Event: presence\r\n\
Expires: {exp}\r\n\
{if_match}\
Content-Type: application/pidf+xml\r\n\
Content-Length: {len}\r\n\r\n{body}",
            local = self.pub_addr,
            cseq = p.cseq,
            ip = self.pub_addr.ip(),
            exp = a.expires,
            len = body.len(),
        )
        .into_bytes();
        let now_ns = now.saturating_duration_since(self.sh.t0).as_nanos() as u64 + 1;
        self.sh.sent_at[seq as usize - 1].store(now_ns, Ordering::Release);
        p.in_flight = Some((p.cseq, now, now + timer_e(1), 1));
        p.last_send = Some(now);
        if self.pub_sock.send_to(&p.bytes, self.target).is_err() {
            self.count("udp send errors (publisher)");
        }
    }

    /// Reads at most one datagram on the publisher socket (waits up to its read timeout).
    fn poll_publisher(&mut self) -> bool {
        let (n, _) = match self.pub_sock.recv_from(&mut self.buf) {
            Ok(x) => x,
            Err(_) => return false,
        };
        let msg = self.buf[..n].to_vec();
        let Some((start, head, _)) = split(&msg) else {
            self.count("malformed SIP to the publisher");
            return true;
        };
        let Some(rest) = start.strip_prefix(b"SIP/2.0 ") else {
            self.count("requests to the publisher");
            return true;
        };
        let code = digits(rest).unwrap_or(0);
        if code < 200 {
            return true;
        }
        let prefix = format!("agp{}-", self.sh.run).into_bytes();
        let j = header(head, b"call-id", Some(b'i')).and_then(|v| call_id_index(v, &prefix));
        let cseq = header(head, b"cseq", None).and_then(digits);
        let Some(j) = j.filter(|j| *j < self.pubs.len()) else {
            // OPTIONS answers and strays.
            self.count(format!("answers {code} to other requests"));
            return true;
        };
        let matches = self.pubs[j]
            .in_flight
            .is_some_and(|(c, ..)| Some(u64::from(c)) == cseq);
        if !matches {
            self.count("PUBLISH answers repeated or stale");
            return true;
        }
        self.pubs[j].in_flight = None;
        if (200..300).contains(&code) {
            self.publish_ok += 1;
            match header(head, b"sip-etag", None) {
                Some(e) => {
                    self.pubs[j].etag = Some(String::from_utf8_lossy(e).into_owned());
                }
                None => self.count("PUBLISH 2xx without SIP-ETag"),
            }
        } else {
            self.publish_failed += 1;
            self.count(format!("PUBLISH answered {code}"));
            if code == 412 {
                self.pubs[j].etag = None;
            }
        }
        if self.pubs[j].deferred {
            self.publish(j, Instant::now());
        }
        true
    }

    /// Retransmits unanswered PUBLISHes (Timer E); gives up after Timer F (32 s).
    fn retransmit(&mut self, now: Instant) {
        for j in 0..self.pubs.len() {
            let Some((c, first, due, sends)) = self.pubs[j].in_flight else {
                continue;
            };
            if due > now {
                continue;
            }
            if now.duration_since(first) >= Duration::from_secs(32) {
                self.pubs[j].in_flight = None;
                self.publish_failed += 1;
                self.count("PUBLISH unanswered");
                continue;
            }
            let _ = self.pub_sock.send_to(&self.pubs[j].bytes, self.target);
            self.pubs[j].in_flight = Some((c, first, now + timer_e(sends + 1), sends + 1));
            self.count("PUBLISH retransmitted");
        }
    }

    fn reached_all(&self, j: usize) -> bool {
        let p = self.sh.progress[j].load(Ordering::Acquire);
        p >> COUNT_BITS == self.pubs[j].last_seq && (p & COUNT_MASK) as usize >= self.a.watchers
    }

    fn all_settled(&self) -> bool {
        (0..self.pubs.len()).all(|j| self.pubs[j].in_flight.is_none() && self.reached_all(j))
    }

    fn wrong_final(&self) -> usize {
        (0..self.sh.last_delivered.len())
            .filter(|k| {
                self.sh.last_delivered[*k].load(Ordering::Acquire)
                    != self.pubs[k / self.a.watchers].last_seq
            })
            .count()
    }

    // ------------------------------------------------------------------ phases

    fn wait_ready(&mut self) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(self.a.ready_timeout);
        let mut n = 0u32;
        while Instant::now() < end && !self.stopped() {
            self.check_alive()?;
            n += 1;
            let run = self.sh.run;
            let options = format!(
                "OPTIONS sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-ag{run}-o{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:load@{d}>;tag=o{run}\r\nTo: <sip:{d}>\r\nCall-ID: ago{run}-{n}@{ip}\r\n\
CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
                d = self.a.sip_domain,
                l = self.pub_addr,
                ip = self.pub_addr.ip(),
            );
            let _ = self.pub_sock.send_to(options.as_bytes(), self.target);
            let until = Instant::now() + Duration::from_millis(250);
            while Instant::now() < until {
                if let Ok((len, _)) = self.pub_sock.recv_from(&mut self.buf) {
                    if self.buf[..len].starts_with(b"SIP/2.0 ") {
                        return Ok(());
                    }
                }
            }
        }
        Err(format!(
            "the target at {} did not answer OPTIONS within {} s",
            self.target, self.a.ready_timeout
        ))
    }

    fn subscribe_all(&mut self) -> Result<f64, String> {
        let total = self.sh.sub_state.len();
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(self.a.setup_timeout);
        let mut issued = 0usize;
        // (first send, sends) per watcher still unanswered.
        let mut sends: Vec<(Instant, u8)> = vec![(t0, 0); total];
        let mut last_scan = t0;
        let mut last_alive = t0;
        loop {
            let now = Instant::now();
            if self.stopped() || now >= end {
                break;
            }
            if now.duration_since(last_alive) >= Duration::from_millis(200) {
                last_alive = now;
                self.check_alive()?;
            }
            let due = (((now - t0).as_secs_f64() * self.a.setup_rate).ceil() as usize)
                .max(1)
                .min(total);
            while issued < due {
                let k = issued;
                let bytes = self.subscribe_bytes(k, 1);
                self.sh.sub_state[k].store(1, Ordering::Release);
                let (sock, _) = &self.ua[k % self.ua.len()];
                let _ = sock.send_to(&bytes, self.target);
                sends[k] = (now, 1);
                issued += 1;
            }
            if issued == total && self.sh.active.load(Ordering::Acquire) >= total {
                break;
            }
            if now.duration_since(last_scan) >= Duration::from_millis(200) {
                last_scan = now;
                // No answer within 1 s: send again, at most four sends (like the other modes).
                for (k, s) in sends.iter_mut().enumerate().take(issued) {
                    if self.sh.sub_state[k].load(Ordering::Acquire) == 1
                        && s.1 < 4
                        && now.duration_since(s.0) >= Duration::from_secs(u64::from(s.1))
                    {
                        s.1 += 1;
                        let bytes = self.subscribe_bytes(k, 1);
                        let (sock, _) = &self.ua[k % self.ua.len()];
                        let _ = sock.send_to(&bytes, self.target);
                        *self
                            .counters
                            .entry("SUBSCRIBE retransmitted".into())
                            .or_insert(0) += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let secs = t0.elapsed().as_secs_f64();
        let active = self.sh.active.load(Ordering::Acquire);
        if active < total {
            let failed = self
                .sh
                .sub_state
                .iter()
                .filter(|s| s.load(Ordering::Acquire) == 4)
                .count();
            return Err(format!(
                "setup incomplete after {secs:.1} s: {active}/{total} subscriptions active, {failed} failed; counters {:?}",
                self.merged_counters()
            ));
        }
        eprintln!("xsg-load: {total} subscriptions active in {secs:.2} s");
        Ok(secs)
    }

    fn initial_publications(&mut self) -> Result<f64, String> {
        let n = self.pubs.len();
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(self.a.setup_timeout);
        let mut issued = 0usize;
        let mut last_retx = t0;
        loop {
            let now = Instant::now();
            if self.stopped() || now >= end {
                break;
            }
            let due = (((now - t0).as_secs_f64() * self.a.setup_rate).ceil() as usize)
                .max(1)
                .min(n);
            while issued < due {
                self.publish(issued, now);
                issued += 1;
            }
            self.poll_publisher();
            if now.duration_since(last_retx) >= Duration::from_millis(10) {
                last_retx = now;
                self.retransmit(now);
                self.check_alive()?;
                if issued == n && self.all_settled() {
                    break;
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let missing_etag = self.pubs.iter().filter(|p| p.etag.is_none()).count();
        if missing_etag > 0 || !self.all_settled() {
            return Err(format!(
                "initial publications incomplete after {secs:.1} s: {missing_etag} of {n} without SIP-ETag, {} watchers without the state; counters {:?}",
                self.wrong_final(),
                self.merged_counters()
            ));
        }
        eprintln!("xsg-load: {n} presentities published and notified in {secs:.2} s");
        Ok(secs)
    }

    /// The measured phase. Returns (publishes sent, first send, end of drain).
    fn measure(&mut self) -> (u64, Option<Instant>) {
        let n = self.pubs.len();
        let t0 = Instant::now();
        let send_end = t0 + Duration::from_secs(self.a.duration);
        let drain_end = send_end + Duration::from_secs(self.a.drain);
        let overtake = Duration::from_millis(self.a.overtake_ms);
        let first_seq = self.next_seq;
        let mut issued = 0u64;
        let mut rr = 0usize;
        let mut last_retx = t0;
        let mut first_send = None;
        loop {
            let now = Instant::now();
            if self.stopped() || now >= drain_end {
                break;
            }
            let sent = self.next_seq - first_seq;
            if now < send_end && sent < self.a.max_updates {
                match self.a.rate {
                    Rate::PerSecond(r) => {
                        let due =
                            (((now - t0).as_secs_f64() * r) as u64 + 1).min(self.a.max_updates);
                        let mut burst = 0;
                        while issued < due && burst < 10_000 {
                            issued += 1;
                            burst += 1;
                            let j = rr;
                            rr = (rr + 1) % n;
                            if self.pubs[j].in_flight.is_some() {
                                if !self.pubs[j].deferred {
                                    self.pubs[j].deferred = true;
                                }
                                self.deferred += 1;
                            } else {
                                first_send.get_or_insert(now);
                                self.publish(j, now);
                            }
                        }
                    }
                    Rate::Max => {
                        for j in 0..n {
                            if self.next_seq - first_seq >= self.a.max_updates {
                                break;
                            }
                            if self.pubs[j].in_flight.is_some() {
                                continue;
                            }
                            let reached = self.reached_all(j);
                            let late = self.pubs[j]
                                .last_send
                                .is_none_or(|t| now.duration_since(t) >= overtake);
                            if reached || late {
                                if !reached {
                                    self.overtaken += 1;
                                }
                                first_send.get_or_insert(now);
                                self.publish(j, now);
                            }
                        }
                    }
                }
            } else if now >= send_end && self.all_settled() {
                break;
            }
            // Up to 64 answers before the next scheduling step.
            for _ in 0..64 {
                if !self.poll_publisher() {
                    break;
                }
            }
            if now.duration_since(last_retx) >= Duration::from_millis(10) {
                last_retx = now;
                self.retransmit(now);
                if self.check_alive().is_err() {
                    break;
                }
            }
        }
        (self.next_seq - first_seq, first_send)
    }

    fn label(&self) -> String {
        self.a.label.clone().unwrap_or_else(|| {
            if self.a.gateway_cmd.is_some() {
                "gateway".into()
            } else if self.a.target_cmd.is_some() {
                "target-cmd".into()
            } else {
                "external".into()
            }
        })
    }

    /// Receive drops so far (full socket buffers) of the target's UDP socket, when it is
    /// on loopback (so on this host), and of the tool's own sockets.
    fn udp_drops(&self) -> (Option<u64>, Option<u64>) {
        let target = if self.target.ip().is_loopback() {
            procfs::udp_drops(self.target.port())
        } else {
            None
        };
        let tool = std::iter::once(self.pub_addr)
            .chain(self.ua.iter().map(|(_, a)| *a))
            .map(|a| procfs::udp_drops(a.port()))
            .sum::<Option<u64>>();
        (target, tool)
    }

    /// Counts the receive drops since `before` as "… UDP receive drops (`phase`)".
    fn count_drops(&mut self, phase: &str, before: (Option<u64>, Option<u64>)) {
        let after = self.udp_drops();
        for (who, b, a) in [("target", before.0, after.0), ("tool", before.1, after.1)] {
            if let (Some(b), Some(a)) = (b, a) {
                self.counters.insert(
                    format!("{who} UDP receive drops ({phase})"),
                    a.saturating_sub(b),
                );
            }
        }
    }

    fn merged_counters(&self) -> BTreeMap<String, u64> {
        let mut c = self.counters.clone();
        for s in &self.stats {
            if let Ok(s) = s.lock() {
                for (k, v) in &s.counters {
                    *c.entry(k.clone()).or_insert(0) += v;
                }
            }
        }
        c
    }

    fn reset_stats(&self) {
        for s in &self.stats {
            if let Ok(mut s) = s.lock() {
                let counters = std::mem::take(&mut s.counters);
                *s = WStats {
                    counters,
                    ..WStats::default()
                };
            }
        }
    }
}

fn mem(pid: Option<u32>) -> (Option<u64>, Option<u64>) {
    (
        pid.and_then(procfs::tree_pss_kib),
        pid.and_then(procfs::rss_kib),
    )
}

fn per_sub(before: Option<u64>, after: Option<u64>, n: usize) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    }
}

/// Runs a whole `agent` / `agent-check` run in the calling (blocking) thread.
fn run_blocking(
    a: AgentArgs,
    check: bool,
    target: SocketAddr,
    pid: Option<u32>,
    proc_handle: Arc<Mutex<Option<Gateway>>>,
    stop: Arc<AtomicBool>,
) -> Result<AgentReport, String> {
    let deadline = Instant::now() + Duration::from_secs(a.max_time);
    let (np, w) = (a.presentities, a.watchers);
    let total = np * w;
    let cap = (a.max_updates as usize).saturating_add(np).min(50_000_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let run = (std::process::id() ^ nanos) % 1_000_000;
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        per_presentity: w,
        run,
        sent_at: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        sent_pres: (0..cap).map(|_| AtomicU32::new(u32::MAX)).collect(),
        reached: (0..cap).map(|_| AtomicU32::new(0)).collect(),
        progress: (0..np).map(|_| AtomicU64::new(0)).collect(),
        notified: AtomicU64::new(0),
        last_delivered: (0..total).map(|_| AtomicU64::new(0)).collect(),
        sub_state: (0..total).map(|_| AtomicU8::new(0)).collect(),
        active: AtomicUsize::new(0),
        measure_from: AtomicU64::new(u64::MAX),
        stop: stop.clone(),
    });
    let pub_sock = crate::sock::bind_udp(a.listen).map_err(|e| format!("publisher socket: {e}"))?;
    let pub_addr = pub_sock.local_addr().map_err(|e| e.to_string())?;
    pub_sock
        .set_read_timeout(Some(Duration::from_micros(200)))
        .map_err(|e| e.to_string())?;
    let mut ua = Vec::new();
    let mut stats = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..a.ua_sockets.clamp(1, 16) {
        let s = crate::sock::bind_udp(a.listen).map_err(|e| format!("watcher socket: {e}"))?;
        let addr = s.local_addr().map_err(|e| e.to_string())?;
        let s = Arc::new(s);
        let st = Arc::new(Mutex::new(WStats::default()));
        let (s2, sh2, st2) = (s.clone(), sh.clone(), st.clone());
        threads.push(std::thread::spawn(move || watcher_thread(s2, sh2, st2)));
        ua.push((s, addr));
        stats.push(st);
    }
    eprintln!(
        "xsg-load: agent publisher={pub_addr} watchers={} target={target}",
        ua.iter()
            .map(|(_, a)| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut ag = Agent {
        target,
        sh: sh.clone(),
        pub_sock,
        pub_addr,
        ua,
        stats,
        pubs: vec![Pub::default(); np],
        next_seq: 0,
        counters: BTreeMap::new(),
        pid,
        proc_handle,
        deadline,
        buf: vec![0u8; 65536],
        publish_ok: 0,
        publish_failed: 0,
        deferred: 0,
        overtaken: 0,
        a,
    };
    let result = run_phases(&mut ag, check);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result
}

fn run_phases(ag: &mut Agent, check: bool) -> Result<AgentReport, String> {
    let total = ag.sh.sub_state.len();
    ag.wait_ready()?;
    // Settle after start-up (store opened, workers forked) before the idle figure.
    std::thread::sleep(Duration::from_millis(500));
    let mut memr = MemReport::default();
    (memr.pss_idle_kib, memr.rss_idle_kib) = mem(ag.pid);
    let drops0 = ag.udp_drops();
    let subscribe_s = ag.subscribe_all()?;
    std::thread::sleep(Duration::from_millis(500));
    (memr.pss_subscribed_kib, memr.rss_subscribed_kib) = mem(ag.pid);
    memr.pss_per_subscription_bytes = per_sub(memr.pss_idle_kib, memr.pss_subscribed_kib, total);
    memr.rss_per_subscription_bytes = per_sub(memr.rss_idle_kib, memr.rss_subscribed_kib, total);
    if ag.a.subscribe_only {
        ag.count_drops("setup", drops0);
        return Ok(AgentReport {
            mode: "agent",
            label: ag.label(),
            pass: true,
            offered: "none (--subscribe-only)".into(),
            presentities: ag.a.presentities,
            watchers_per_presentity: ag.a.watchers,
            subscriptions: total,
            subscribe_s,
            memory: memr,
            tool_cpu_s: procfs::cpu_seconds(std::process::id()),
            counters: ag.merged_counters(),
            ..AgentReport::default()
        });
    }
    let initial_publish_s = ag.initial_publications()?;
    ag.count_drops("setup", drops0);
    memr.pss_published_kib = mem(ag.pid).0;
    // Everything before this seq was setup.
    ag.sh.measure_from.store(ag.next_seq + 1, Ordering::Release);
    ag.reset_stats();
    let ok0 = ag.publish_ok;
    let failed0 = ag.publish_failed;
    ag.deferred = 0;
    ag.overtaken = 0;
    let cpu0 = ag.pid.and_then(procfs::tree_cpu_seconds);
    let tool0 = procfs::cpu_seconds(std::process::id());
    let drops1 = ag.udp_drops();
    let (sent, first_send) = ag.measure();
    ag.count_drops("publishing and drain", drops1);
    let cpu1 = ag.pid.and_then(procfs::tree_cpu_seconds);
    let tool_cpu_s = match (tool0, procfs::cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    // A few ms for the last answers to the watchers' 200s to be counted.
    std::thread::sleep(Duration::from_millis(50));
    (memr.pss_end_kib, memr.rss_end_kib) = mem(ag.pid);
    let mut lat = Vec::new();
    let (mut notifies, mut delivered, mut dup, mut stale, mut unknown) = (0, 0, 0, 0, 0);
    let mut last_delivery: Option<Instant> = None;
    for s in &ag.stats {
        if let Ok(s) = s.lock() {
            notifies += s.notifies;
            delivered += s.delivered;
            dup += s.duplicates;
            stale += s.stale;
            unknown += s.unknown;
            lat.extend(s.latencies_us.iter().map(|v| u64::from(*v)));
            last_delivery = last_delivery.max(s.last_delivery);
        }
    }
    let span = match (first_send, last_delivery) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let rate_of = |n: u64| if span > 0.0 { n as f64 / span } else { 0.0 };
    let notified = ag.sh.notified.load(Ordering::Acquire);
    let cpu = match (cpu0, cpu1) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let wrong_final = ag.wrong_final();
    let counters = ag.merged_counters();
    let mut failures = Vec::new();
    if check {
        if wrong_final > 0 {
            failures.push(format!(
                "{wrong_final} of {total} watchers did not end in their presentity's last state"
            ));
        }
        if unknown > 0 || stale > 0 {
            failures.push(format!(
                "{unknown} unknown and {stale} out-of-order deliveries"
            ));
        }
        if sent == 0 || ag.publish_ok - ok0 != sent {
            failures.push(format!(
                "{} of {sent} measured PUBLISHes answered 2xx",
                ag.publish_ok - ok0
            ));
        }
        for (name, n) in &counters {
            let bad = name.contains("answered")
                || name.contains("terminated")
                || name.contains("unanswered")
                || name.contains("malformed")
                || name.contains("without SIP-ETag")
                || name.contains("unknown Call-IDs");
            if bad {
                failures.push(format!("{name}: {n}"));
            }
        }
    }
    Ok(AgentReport {
        mode: if check { "agent-check" } else { "agent" },
        label: ag.label(),
        pass: failures.is_empty(),
        failures,
        offered: match ag.a.rate {
            Rate::PerSecond(r) => format!("{r}/s"),
            Rate::Max => "max".into(),
        },
        presentities: ag.a.presentities,
        watchers_per_presentity: ag.a.watchers,
        subscriptions: total,
        subscribe_s,
        initial_publish_s,
        publish_sent: sent,
        publish_ok: ag.publish_ok - ok0,
        publish_failed: ag.publish_failed - failed0,
        publish_deferred: ag.deferred,
        overtaken: ag.overtaken,
        notified,
        notified_per_s: rate_of(notified),
        deliveries: delivered,
        deliveries_per_s: rate_of(delivered),
        notifies,
        duplicates: dup,
        stale,
        unknown,
        wrong_final,
        latency: percentiles(&lat),
        target_cpu_s: cpu,
        target_cpu_s_per_1000_publish: cpu.filter(|_| sent > 0).map(|c| c * 1000.0 / sent as f64),
        tool_cpu_s,
        memory: memr,
        counters,
    })
}

/// Stops the target by PID and the threads when the run ends, is cut short by
/// `--max-time`, or is interrupted (the future holding it is dropped).
struct Guard {
    proc_handle: Arc<Mutex<Option<Gateway>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let g = self.proc_handle.lock().ok().and_then(|mut g| g.take());
        drop(g);
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn print_report(r: &AgentReport) {
    println!(
        "agent [{}]: {} presentities x {} watchers = {} subscriptions (set up in {:.2} s, first publications {:.2} s), offered {}",
        r.label, r.presentities, r.watchers_per_presentity, r.subscriptions, r.subscribe_s, r.initial_publish_s, r.offered
    );
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>8} {:>6} {:>10} {:>10}",
        "target",
        "PUBLISH",
        "notif/s",
        "NOTIFY/s",
        "deliveries",
        "p50 ms",
        "p99 ms",
        "max ms",
        "wrong",
        "cpu/1000",
        "pss KiB"
    );
    println!(
        "{:<22} {:>10} {:>10.0} {:>12.0} {:>12} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>10} {:>10}",
        r.label,
        r.publish_sent,
        r.notified_per_s,
        r.deliveries_per_s,
        r.deliveries,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.wrong_final,
        fmt_opt(r.target_cpu_s_per_1000_publish, 3),
        r.memory
            .pss_end_kib
            .map(|v| v.to_string())
            .unwrap_or("-".into())
    );
    println!(
        "publish ok {} failed {} deferred {} overtaken {}; notified updates {}; notifies {} duplicates {} stale {} unknown {}; target cpu {} s, tool cpu {} s",
        r.publish_ok, r.publish_failed, r.publish_deferred, r.overtaken, r.notified, r.notifies, r.duplicates, r.stale, r.unknown,
        fmt_opt(r.target_cpu_s, 2), fmt_opt(r.tool_cpu_s, 2)
    );
    println!(
        "memory: pss idle {} KiB, subscribed {} KiB -> {} B per subscription (VmRSS: {} B)",
        r.memory
            .pss_idle_kib
            .map(|v| v.to_string())
            .unwrap_or("-".into()),
        r.memory
            .pss_subscribed_kib
            .map(|v| v.to_string())
            .unwrap_or("-".into()),
        fmt_opt(r.memory.pss_per_subscription_bytes, 0),
        fmt_opt(r.memory.rss_per_subscription_bytes, 0),
    );
    if !r.counters.is_empty() {
        println!("counters: {:?}", r.counters);
    }
}

/// `agent` / `agent-check`: starts (or finds) the target, runs, stops it.
pub async fn agent(a: AgentArgs, check: bool) -> Result<(u8, String), String> {
    if a.presentities == 0 || a.watchers == 0 {
        return Err("usage: --presentities and --watchers must be at least 1".into());
    }
    if a.watchers as u64 >= COUNT_MASK {
        return Err("usage: --watchers is too large".into());
    }
    if !a.listen.ip().is_loopback() {
        return Err(format!(
            "usage: --listen {} is not a loopback address",
            a.listen
        ));
    }
    let target = match (a.target, a.gateway_cmd.is_some() || a.target_cmd.is_some()) {
        (Some(t), _) => t,
        (None, true) => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            s.local_addr().map_err(|e| e.to_string())?
        }
        (None, false) => {
            return Err("usage: --target is required without --gateway-cmd or --target-cmd".into())
        }
    };
    if !target.ip().is_loopback() {
        return Err(format!(
            "usage: --target {target} is not a loopback address"
        ));
    }
    let dir = a.work_dir.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!("xsg-agent-{}-{nanos}", std::process::id()))
    });
    let proc_handle: Arc<Mutex<Option<Gateway>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = Guard {
        proc_handle: proc_handle.clone(),
        stop: stop.clone(),
    };
    let mut pid = a.gateway_pid;
    if let Some(cmd) = &a.gateway_cmd {
        let text = gateway::agent_config_toml(&gateway::AgentConfigInputs {
            gateway_sip: target,
            sip_domain: a.sip_domain.clone(),
            max_expires: a.expires.max(60),
            max_subscriptions_per_presentity: a.watchers.max(256),
            store_path: dir.join("gateway.db"),
        });
        let g = Gateway::start(cmd, &dir, &text).map_err(|e| format!("gateway start: {e}"))?;
        pid = g.pid();
        eprintln!(
            "xsg-load: started gateway pid={} config={} log={}",
            pid.unwrap_or(0),
            dir.join("gateway.toml").display(),
            g.log_path().display()
        );
        *proc_handle.lock().map_err(|e| e.to_string())? = Some(g);
    } else if let Some(cmd) = &a.target_cmd {
        let cmd = cmd
            .replace("{port}", &target.port().to_string())
            .replace("{addr}", &target.to_string())
            .replace("{dir}", &dir.display().to_string());
        let g = Gateway::start_plain(&cmd, &dir, "target.log")
            .map_err(|e| format!("target start: {e}"))?;
        pid = g.pid();
        eprintln!(
            "xsg-load: started target pid={} log={}",
            pid.unwrap_or(0),
            g.log_path().display()
        );
        *proc_handle.lock().map_err(|e| e.to_string())? = Some(g);
    }
    let ph = proc_handle.clone();
    let st = stop.clone();
    let report = tokio::task::spawn_blocking(move || run_blocking(a, check, target, pid, ph, st))
        .await
        .map_err(|e| e.to_string())??;
    print_report(&report);
    if check {
        for f in &report.failures {
            println!("FAIL {f}");
        }
        println!("agent-check: {}", if report.pass { "PASS" } else { "FAIL" });
    }
    let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
    Ok((u8::from(check && !report.pass), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &[u8] = b"NOTIFY sip:w3@127.0.0.1:5090 SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\n\
f: <sip:p1@sip.test>;tag=gw1\r\n\
To: <sip:w3@sip.test>;tag=w3t\r\n\
i: agw77-3@127.0.0.1\r\n\
CSeq: 2 NOTIFY\r\n\
Event: presence\r\n\
Subscription-State: active;expires=599\r\n\
Content-Length: 60\r\n\r\n<tuple id='a'><note xml:lang='en'>seq 42</note></tuple>";

    #[test]
    fn notify_is_answered_with_its_dialog_headers_copied() {
        let (start, head, body) = split(NOTIFY).expect("splits");
        assert!(start.starts_with(b"NOTIFY "));
        let mut out = Vec::new();
        ok_response(start, head, &mut out);
        let m = crate::sipmsg::Msg::parse(&out).expect("parses");
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.header_all("via").len(), 2);
        assert_eq!(m.call_id(), Some("agw77-3@127.0.0.1"));
        assert_eq!(m.cseq(), Some((2, "NOTIFY")));
        assert!(m.header("to").is_some_and(|t| t.ends_with("tag=w3t")));
        assert_eq!(seq_in_body(body), Some(42));
    }

    #[test]
    fn call_id_and_headers_are_read_in_compact_and_long_form() {
        let (_, head, _) = split(NOTIFY).expect("splits");
        let cid = header(head, b"call-id", Some(b'i')).expect("call-id");
        assert_eq!(call_id_index(cid, b"agw77-"), Some(3));
        assert_eq!(call_id_index(cid, b"agw78-"), None);
        assert_eq!(
            header(head, b"subscription-state", None),
            Some(&b"active;expires=599"[..])
        );
        assert_eq!(
            header(head, b"from", Some(b'f')),
            Some(&b"<sip:p1@sip.test>;tag=gw1"[..])
        );
    }

    #[test]
    fn body_without_seq_note_has_no_seq() {
        assert_eq!(seq_in_body(b"<note>init</note>"), None);
        assert_eq!(seq_in_body(b"<note>seq x</note>"), None);
        assert_eq!(seq_in_body(b"<p:note>seq 7</p:note>"), Some(7));
    }

    #[test]
    fn per_subscription_figure_is_delta_over_count() {
        assert_eq!(per_sub(Some(1000), Some(3000), 1024), Some(2000.0));
        assert_eq!(per_sub(None, Some(3000), 10), None);
    }

    #[test]
    fn agent_cli_parses() {
        use clap::Parser;
        let cli = crate::modes::Cli::try_parse_from([
            "xsg-load",
            "agent",
            "--presentities",
            "10",
            "--watchers",
            "1000",
            "--rate",
            "max",
            "--target-cmd",
            "kamailio -l udp:127.0.0.1:{port}",
        ]);
        assert!(cli.is_ok(), "{:?}", cli.err());
        let bad = crate::modes::Cli::try_parse_from([
            "xsg-load",
            "agent",
            "--gateway-cmd",
            "a",
            "--target-cmd",
            "b",
        ]);
        assert!(bad.is_err());
    }
}
