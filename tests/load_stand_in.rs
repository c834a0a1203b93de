//! `xsg-load` modes against a stand-in gateway over real loopback sockets.
//!
//! The stand-in plays the gateway's part of standards.md §7 in the simplest faithful way:
//! it connects to the tool's XMPP server as a XEP-0114 component, serves SIP watchers as a
//! notifier (§7.3, §16 cases 34–35) and subscribes to SIP presentities through the tool's
//! presence server (§7.1, §16 cases 15–18), mapping PIDF notes to `<status>` and back
//! (§7.5–7.6). A variant that never forwards one user's updates proves the check can fail.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(dead_code)]
#[path = "../src/bin/xsg-load/pidf.rs"]
mod pidf;
#[allow(dead_code)]
#[path = "../src/bin/xsg-load/sipmsg.rs"]
mod sipmsg;
#[allow(dead_code)]
#[path = "../src/bin/xsg-load/xmpp.rs"]
mod xmpp;

use sipmsg::{index_of, tag_of, uri_of, user_of, Msg};
use xmpp::{bare, Item, StreamReader};

const COMPONENT: &str = "sip.xmpp.test";
const XMPP_DOMAIN: &str = "xmpp.test";
const SIP_DOMAIN: &str = "sip.test";
const SECRET: &str = "component-secret";

/// How the stand-in misbehaves, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// Never forwards presence updates of XMPP user u0 to its watcher.
    DropUpdatesOfU0,
    /// Loses (neither answers nor maps) the first `seq` NOTIFY of each SIP presentity,
    /// as a lossy network would.
    LoseFirstSeqNotify,
    /// Sends every initial SUBSCRIBE twice, as a UDP retransmission would.
    DuplicateSubscribes,
}

/// One notifier dialog of the stand-in (a SIP watcher of XMPP user i).
struct WatcherDialog {
    peer: SocketAddr,
    target: String,
    watcher_from: String,
    call_id: String,
    cseq: u32,
    last_pidf: Option<String>,
}

struct Shared {
    sip: UdpSocket,
    xmpp: Mutex<TcpStream>,
    watchers: Mutex<HashMap<usize, WatcherDialog>>,
    granted: Mutex<HashMap<usize, bool>>,
    ps: Mutex<Option<SocketAddr>>,
    fault: Fault,
    lost_once: Mutex<std::collections::HashSet<usize>>,
    stop: AtomicBool,
    /// Bumped at each simulated restart; part of new X2S Call-IDs.
    generation: AtomicU32,
}

impl Shared {
    fn send_stanza(&self, s: &str) {
        let mut w = self.xmpp.lock().expect("xmpp lock");
        let _ = w.write_all(s.as_bytes());
    }

    fn notify_watcher(&self, i: usize, state: &str, pidf_body: Option<String>) {
        let mut dialogs = self.watchers.lock().expect("lock");
        let Some(d) = dialogs.get_mut(&i) else { return };
        if let Some(b) = pidf_body {
            d.last_pidf = Some(b);
        }
        d.cseq += 1;
        let local_addr = self.sip.local_addr().expect("addr");
        let body = d.last_pidf.clone().unwrap_or_default();
        let mut headers = vec![
            (
                "Via",
                format!("SIP/2.0/UDP {local_addr};branch=z9hG4bKsn{i}x{}", d.cseq),
            ),
            ("Max-Forwards", "70".into()),
            ("From", format!("<sip:u{i}@{XMPP_DOMAIN}>;tag=gw{i}")),
            ("To", d.watcher_from.clone()),
            ("Call-ID", d.call_id.clone()),
            ("CSeq", format!("{} NOTIFY", d.cseq)),
            ("Contact", format!("<sip:u{i}@{local_addr}>")),
            ("Event", "presence".into()),
            ("Subscription-State", state.into()),
        ];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/pidf+xml".into()));
        }
        let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let bytes = sipmsg::build(
            &format!("NOTIFY {} SIP/2.0", d.target),
            &refs,
            body.as_bytes(),
        );
        let _ = self.sip.send_to(&bytes, d.peer);
    }
}

/// The stand-in's SIP side: watchers' SUBSCRIBEs, the presence server's NOTIFYs.
fn sip_loop(sh: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    while !sh.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sh.sip.recv_from(&mut buf) else {
            continue;
        };
        let Ok(msg) = Msg::parse(&buf[..n]) else {
            continue;
        };
        let Some(method) = msg.method().map(str::to_string) else {
            continue; // responses (to our NOTIFYs and SUBSCRIBEs) need nothing here
        };
        match method.as_str() {
            "OPTIONS" => {
                let _ = sh
                    .sip
                    .send_to(&sipmsg::response(&msg, 200, "OK", Some("gw"), &[]), from);
            }
            "SUBSCRIBE" => {
                let Some(i) = msg.uri().and_then(user_of).and_then(|u| index_of(u, "u")) else {
                    continue;
                };
                let local_addr = sh.sip.local_addr().expect("addr");
                let contact = format!("<sip:u{i}@{local_addr}>");
                // Grant what was asked, up to an hour (§16 case 39).
                let granted = msg.expires().unwrap_or(3600).min(3600).to_string();
                let resp = sipmsg::response(
                    &msg,
                    200,
                    "OK",
                    Some(&format!("gw{i}")),
                    &[("Contact", &contact), ("Expires", &granted)],
                );
                let _ = sh.sip.send_to(&resp, from);
                let refresh = msg.header("to").and_then(tag_of).is_some();
                if !refresh {
                    sh.watchers.lock().expect("lock").insert(
                        i,
                        WatcherDialog {
                            peer: from,
                            target: msg.header("contact").map(uri_of).unwrap_or("").to_string(),
                            watcher_from: msg.header("from").unwrap_or("").to_string(),
                            call_id: msg.call_id().unwrap_or("").to_string(),
                            cseq: 0,
                            last_pidf: None,
                        },
                    );
                    // RFC 6665: an immediate NOTIFY; pending until XMPP authorizes (§7.3).
                    sh.notify_watcher(i, "pending;expires=3600", None);
                    sh.send_stanza(&xmpp::presence_typed(
                        "subscribe",
                        &format!("w{i}@{COMPONENT}"),
                        &format!("u{i}@{XMPP_DOMAIN}"),
                    ));
                } else {
                    sh.notify_watcher(i, "active;expires=3600", None);
                }
            }
            "NOTIFY" => {
                if sh.fault == Fault::LoseFirstSeqNotify
                    && String::from_utf8_lossy(&msg.body).contains("seq ")
                {
                    let j = msg
                        .call_id()
                        .and_then(|c| c.strip_prefix("x2s-"))
                        .and_then(|c| c.split(['-', '@']).next())
                        .and_then(|c| c.parse::<usize>().ok());
                    if let Some(j) = j {
                        if sh.lost_once.lock().expect("lock").insert(j) {
                            continue;
                        }
                    }
                }
                let _ = sh
                    .sip
                    .send_to(&sipmsg::response(&msg, 200, "OK", None, &[]), from);
                let Some(j) = msg
                    .call_id()
                    .and_then(|c| c.strip_prefix("x2s-"))
                    .and_then(|c| c.split(['-', '@']).next())
                    .and_then(|c| c.parse::<usize>().ok())
                else {
                    continue;
                };
                let active = msg
                    .header("subscription-state")
                    .is_some_and(|s| s.starts_with("active"));
                if !active {
                    continue;
                }
                let first = {
                    let mut g = sh.granted.lock().expect("lock");
                    !std::mem::replace(g.entry(j).or_insert(false), true)
                };
                let (from_jid, to_jid) =
                    (format!("p{j}@{COMPONENT}"), format!("x{j}@{XMPP_DOMAIN}"));
                if first {
                    sh.send_stanza(&xmpp::presence_typed("subscribed", &from_jid, &to_jid));
                }
                if let Ok(summary) = pidf::read(&msg.body) {
                    if let Some(note) = summary.notes.first() {
                        sh.send_stanza(&xmpp::presence_available(
                            &format!("{from_jid}/standin"),
                            &to_jid,
                            "away",
                            note,
                        ));
                    }
                }
            }
            _ => {
                let _ = sh.sip.send_to(
                    &sipmsg::response(&msg, 501, "Not Implemented", Some("gw"), &[]),
                    from,
                );
            }
        }
    }
}

/// SUBSCRIBEs SIP presentity `j` in a new dialog via the tool's presence server (§7.1).
fn subscribe_presentity(sh: &Shared, j: usize) {
    let gen = sh.generation.load(Ordering::Relaxed);
    let Some(ps) = *sh.ps.lock().expect("lock") else {
        return;
    };
    let local_addr = sh.sip.local_addr().expect("addr");
    let bytes = sipmsg::build(
        &format!("SUBSCRIBE sip:p{j}@{SIP_DOMAIN} SIP/2.0"),
        &[
            (
                "Via",
                &format!("SIP/2.0/UDP {local_addr};branch=z9hG4bKsx{j}"),
            ),
            ("Max-Forwards", "70"),
            ("From", &format!("<sip:x{j}@{XMPP_DOMAIN}>;tag=gx{j}g{gen}")),
            ("To", &format!("<sip:p{j}@{SIP_DOMAIN}>")),
            ("Call-ID", &format!("x2s-{j}-{gen}@standin")),
            ("CSeq", "1 SUBSCRIBE"),
            ("Contact", &format!("<sip:x{j}@{local_addr}>")),
            ("Event", "presence"),
            ("Accept", "application/pidf+xml"),
            ("Expires", "3600"),
        ],
        b"",
    );
    let _ = sh.sip.send_to(&bytes, ps);
    if sh.fault == Fault::DuplicateSubscribes {
        let _ = sh.sip.send_to(&bytes, ps);
    }
}

/// The stand-in's XMPP side: stanzas from the tool's XMPP server.
fn xmpp_loop(sh: Arc<Shared>, mut reader: StreamReader<BufReader<TcpStream>>) {
    while let Ok(Some(item)) = reader.next_item() {
        let Item::Stanza(s) = item else { break };
        if s.name != "presence" {
            continue;
        }
        let to_local = bare(&s.to).split('@').next().unwrap_or("").to_string();
        let from_local = bare(&s.from).split('@').next().unwrap_or("").to_string();
        match s.typ.as_deref() {
            Some("subscribe") => {
                // X2S (§7.1): SUBSCRIBE the SIP presentity via the outbound proxy.
                let Some(j) = index_of(&to_local, "p") else {
                    continue;
                };
                subscribe_presentity(&sh, j);
            }
            Some("subscribed") => {
                if let Some(i) = index_of(&to_local, "w") {
                    sh.notify_watcher(i, "active;expires=3599", None);
                }
            }
            None => {
                let Some(i) = index_of(&from_local, "u") else {
                    continue;
                };
                if sh.fault == Fault::DropUpdatesOfU0 && i == 0 {
                    continue;
                }
                let note = s.status.clone().unwrap_or_default();
                let body = pidf::build(&format!("pres:u{i}@{XMPP_DOMAIN}"), "ID-r", true, &note);
                sh.notify_watcher(i, "active;expires=3599", Some(body));
            }
            _ => {}
        }
    }
}

/// Connects to the tool as a component (XEP-0114): stream header, handshake with
/// `secret`. Returns the stream, its reader, and whether the handshake was accepted.
fn component_connect(
    addr: SocketAddr,
    secret: &str,
) -> (TcpStream, StreamReader<BufReader<TcpStream>>, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect to the tool");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = StreamReader::new(BufReader::new(stream.try_clone().expect("clone")));
    write!(
        stream,
        "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{COMPONENT}'>"
    )
    .expect("write header");
    let id = match reader.next_item() {
        Ok(Some(Item::Open { id: Some(id), .. })) => id,
        other => panic!("no stream header with an id: {other:?}"),
    };
    write!(
        stream,
        "<handshake>{}</handshake>",
        xmpp::handshake_digest(&id, secret)
    )
    .expect("write handshake");
    let accepted = matches!(
        reader.next_item(),
        Ok(Some(Item::Stanza(ref s))) if s.name == "handshake"
    );
    (stream, reader, accepted)
}

struct Tool {
    child: Child,
    xmpp: SocketAddr,
    ps: SocketAddr,
}

/// Starts `xsg-load MODE …` aimed at the stand-in's SIP address. `args[0]` is the mode.
fn start_tool(gateway_sip: SocketAddr, args: &[&str]) -> Tool {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--gateway-sip".into(), gateway_sip.to_string()]);
    for (flag, default) in [("--max-time", "60"), ("--ready-timeout", "10")] {
        if !args.contains(&flag) {
            all.extend([flag.to_string(), default.to_string()]);
        }
    }
    let args = all;
    let mut child = Command::new(env!("CARGO_BIN_EXE_xsg-load"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xsg-load");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut found = None;
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        if let Some(rest) = line.strip_prefix("xsg-load: listening ") {
            let field = |k: &str| -> SocketAddr {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .expect("address in the listening line")
            };
            found = Some((field("xmpp="), field("ps=")));
            break;
        }
    }
    // Keep draining stderr so the tool never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let (xmpp, ps) = found.expect("the tool printed its addresses");
    Tool { child, xmpp, ps }
}

/// Runs the stand-in until the tool exits; returns (exit code, stdout).
fn run_tool(fault: Fault, args: &[&str]) -> (Option<i32>, String) {
    run_tool_restartable(fault, args, None)
}

/// Simulates a gateway restart each time `flag` appears (the tool's --restart-cmd
/// creates it): drops the component connection, connects again, and SUBSCRIBEs every
/// authorized SIP presentity in a new dialog, as a gateway resynchronising would.
fn restart_watcher(sh: Arc<Shared>, flag: std::path::PathBuf, xmpp_addr: SocketAddr) {
    while !sh.stop.load(Ordering::Relaxed) {
        if std::fs::remove_file(&flag).is_err() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let _ = sh
            .xmpp
            .lock()
            .expect("lock")
            .shutdown(std::net::Shutdown::Both);
        let (stream, reader, accepted) = component_connect(xmpp_addr, SECRET);
        assert!(accepted, "the tool refused the reconnecting stand-in");
        stream.set_read_timeout(None).expect("no timeout");
        *sh.xmpp.lock().expect("lock") = stream;
        {
            let sh = sh.clone();
            std::thread::spawn(move || xmpp_loop(sh, reader));
        }
        sh.generation.fetch_add(1, Ordering::Relaxed);
        let authorized: Vec<usize> = sh.granted.lock().expect("lock").keys().copied().collect();
        for j in authorized {
            subscribe_presentity(&sh, j);
        }
    }
}

fn run_tool_restartable(
    fault: Fault,
    args: &[&str],
    restart_flag: Option<std::path::PathBuf>,
) -> (Option<i32>, String) {
    let sip = UdpSocket::bind("127.0.0.1:0").expect("bind sip");
    sip.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut tool = start_tool(sip.local_addr().expect("addr"), args);
    let (stream, reader, accepted) = component_connect(tool.xmpp, SECRET);
    assert!(accepted, "the tool refused the stand-in's handshake");
    stream.set_read_timeout(None).expect("no timeout");
    let sh = Arc::new(Shared {
        sip,
        xmpp: Mutex::new(stream),
        watchers: Mutex::new(HashMap::new()),
        granted: Mutex::new(HashMap::new()),
        ps: Mutex::new(Some(tool.ps)),
        fault,
        lost_once: Mutex::new(std::collections::HashSet::new()),
        stop: AtomicBool::new(false),
        generation: AtomicU32::new(0),
    });
    let sip_thread = {
        let sh = sh.clone();
        std::thread::spawn(move || sip_loop(sh))
    };
    {
        let sh = sh.clone();
        std::thread::spawn(move || xmpp_loop(sh, reader));
    }
    if let Some(flag) = restart_flag {
        let sh = sh.clone();
        let addr = tool.xmpp;
        std::thread::spawn(move || restart_watcher(sh, flag, addr));
    }
    let mut out = String::new();
    tool.child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let status = tool.child.wait().expect("tool exits");
    sh.stop.store(true, Ordering::Relaxed);
    let _ = sip_thread.join();
    // Shown with --nocapture, and by the harness when a test fails.
    println!("{out}");
    (status.code(), out)
}

#[test]
fn check_passes_against_a_faithful_stand_in() {
    let (code, out) = run_tool(Fault::None, &["check", "--users", "4", "--updates", "3"]);
    assert_eq!(code, Some(0), "stdout:\n{out}");
    assert!(out.contains("check: PASS"), "stdout:\n{out}");
    let json: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("json line")).expect("JSON summary");
    assert_eq!(json["pass"], true);
    for d in json["directions"].as_array().expect("directions") {
        assert_eq!(d["flow"]["sent"], 12);
        assert_eq!(d["flow"]["wrong_final"], 0);
    }
}

#[test]
fn check_fails_when_a_presentity_misses_its_last_state() {
    let (code, out) = run_tool(
        Fault::DropUpdatesOfU0,
        &["check", "--users", "3", "--updates", "2", "--timeout", "2"],
    );
    assert_eq!(code, Some(1), "stdout:\n{out}");
    assert!(
        out.contains("did not end in their last state"),
        "stdout:\n{out}"
    );
}

#[test]
fn tool_refuses_a_component_with_the_wrong_secret() {
    let sip = UdpSocket::bind("127.0.0.1:0").expect("bind sip");
    let mut tool = start_tool(
        sip.local_addr().expect("addr"),
        &[
            "check",
            "--secret",
            "another-secret",
            "--ready-timeout",
            "2",
        ],
    );
    let (_stream, _reader, accepted) = component_connect(tool.xmpp, SECRET);
    assert!(!accepted, "a handshake with the wrong secret was accepted");
    let status = tool.child.wait().expect("tool exits");
    assert_eq!(status.code(), Some(1));
}

fn last_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().expect("json line")).expect("JSON summary")
}

#[test]
fn throughput_at_max_rate_reports_latency_and_ratios_per_direction() {
    let (code, out) = run_tool(
        Fault::None,
        &[
            "throughput",
            "--users",
            "5",
            "--duration",
            "1",
            "--drain",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "stdout:\n{out}");
    let json = last_json(&out);
    assert!(json["baseline"]["per_s"].as_f64().is_some_and(|r| r > 0.0));
    let dirs = json["directions"].as_array().expect("directions");
    assert_eq!(dirs.len(), 2);
    for d in dirs {
        assert_eq!(d["flow"]["wrong_final"], 0, "{d}");
        assert!(
            d["flow"]["delivered"].as_u64().is_some_and(|n| n > 0),
            "{d}"
        );
        assert!(d["ratios"]["rate"].as_f64().is_some_and(|r| r > 0.0), "{d}");
    }
}

#[test]
fn scale_reports_rss_per_subscription_and_counts_watcher_refreshes() {
    let me = std::process::id().to_string();
    let (code, out) = run_tool(
        Fault::None,
        &[
            "scale",
            "--subscriptions",
            "40",
            "--expires",
            "2",
            "--period",
            "3",
            "--gateway-pid",
            &me,
        ],
    );
    assert_eq!(code, Some(0), "stdout:\n{out}");
    let json = last_json(&out);
    assert_eq!(json["established"], 40);
    assert_eq!(
        (json["s2x"].clone(), json["x2s"].clone()),
        (20.into(), 20.into())
    );
    assert!(json["rss_after_kib"].as_u64().is_some_and(|k| k > 0));
    assert!(json["rss_per_subscription_bytes"].is_number());
    // Expires 2 s: every watcher refreshes at least once within 3 s.
    assert!(
        json["watcher_refreshes"]["total"]
            .as_u64()
            .is_some_and(|n| n >= 20),
        "{json}"
    );
    assert_eq!(json["lost_s2x"], 0, "{json}");
}

#[test]
fn scale_restart_times_the_resync_of_every_sip_dialog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("restart");
    let cmd = format!("touch {}", flag.display());
    let (code, out) = run_tool_restartable(
        Fault::None,
        &[
            "scale",
            "--subscriptions",
            "20",
            "--expires",
            "60",
            "--period",
            "1",
            "--restart",
            "--restart-cmd",
            &cmd,
            "--resync-timeout",
            "10",
        ],
        Some(flag),
    );
    assert_eq!(code, Some(0), "stdout:\n{out}");
    let r = &last_json(&out)["resync"];
    assert_eq!(
        (r["x2s_resubscribed"].as_u64(), r["x2s_total"].as_u64()),
        (Some(10), Some(10)),
        "{r}"
    );
    assert!(r["resync_s"].as_f64().is_some_and(|s| s < 10.0), "{r}");
    assert!(r["reconnect_s"].is_number(), "{r}");
    assert!(r["peak_per_s"].as_u64().is_some_and(|p| p >= 1), "{r}");
}

#[test]
fn gateway_started_by_the_tool_is_stopped_by_pid_when_it_never_connects() {
    let out = Command::new(env!("CARGO_BIN_EXE_xsg-load"))
        .args([
            "check",
            "--gateway-cmd",
            "sleep 30 #",
            "--ready-timeout",
            "1",
        ])
        .output()
        .expect("run xsg-load");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid: u32 = stderr
        .split("started gateway pid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("the tool reported the gateway pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still running"
    );
}

#[test]
fn gateway_that_exits_early_fails_the_run_with_its_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_xsg-load"))
        .args(["check", "--gateway-cmd", "exit 7 #", "--ready-timeout", "5"])
        .output()
        .expect("run xsg-load");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway exited"));
}

/// Each presentity's only update is lost once: only a retransmission (Timer E) can
/// deliver the last state.
#[test]
fn check_passes_when_lost_notifies_are_retransmitted() {
    let (code, out) = run_tool(
        Fault::LoseFirstSeqNotify,
        &["check", "--users", "3", "--updates", "1"],
    );
    assert_eq!(code, Some(0), "stdout:\n{out}");
    let json = last_json(&out);
    assert_eq!(
        json["counters"]["sip->xmpp NOTIFY retransmitted"], 3,
        "{json}"
    );
}

/// A retransmitted initial SUBSCRIBE is the same transaction: answered again with the
/// same To tag, not a second dialog (whose NOTIFYs the gateway would refuse, §16 case 29).
#[test]
fn retransmitted_subscribe_is_replied_to_again_not_a_new_dialog() {
    let (code, out) = run_tool(Fault::DuplicateSubscribes, &["check", "--users", "3"]);
    assert_eq!(code, Some(0), "stdout:\n{out}");
    let counters = &last_json(&out)["counters"];
    assert_eq!(
        counters["sip->xmpp SUBSCRIBE retransmission replied to again"], 3,
        "{counters}"
    );
    assert!(
        counters["sip->xmpp new dialogs after the first"].is_null(),
        "{counters}"
    );
}
