//! The real binary as registrar with digest authentication (RFC 3261 §10.3, §22): a user
//! added at run time with `ctl users add` registers from an untrusted peer after a 401
//! challenge, `ctl bindings` lists the binding, and both the user and the binding survive
//! a restart on the same store (product.md, Persistence).

mod loopback_support;

use std::net::UdpSocket;

use loopback_support::{header, run_to_exit, status_of, Gateway, WAIT};
use xmpp_sip_gateway::core::sip::digest::{authorization, DigestChallenge};

const AGENT: &str = "[presence_agent]\ndomains = [\"sip.test\"]\n[auth]\nalgorithms = [\"MD5\"]\n";

fn ctl(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let url = format!("http://{}", gw.admin.unwrap());
    let mut all = vec!["ctl", "--admin", url.as_str()];
    all.extend_from_slice(args);
    let (status, out, err) = run_to_exit(&all, &[]);
    (status.code().unwrap_or(-1), out, err)
}

fn register(sock: &UdpSocket, cseq: u32, auth: Option<&str>) -> String {
    let local = sock.local_addr().unwrap();
    let mut msg = format!(
        "REGISTER sip:sip.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKreg{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dave@sip.test>;tag=d1\r\n\
         To: <sip:dave@sip.test>\r\n\
         Call-ID: reg-dave@{local}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:dave@{local}>\r\n\
         Expires: 600\r\n"
    );
    if let Some(a) = auth {
        msg.push_str(&format!("Authorization: {a}\r\n"));
    }
    msg.push_str("Content-Length: 0\r\n\r\n");
    msg
}

fn exchange(sock: &UdpSocket, to: std::net::SocketAddr, msg: &str) -> String {
    sock.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("an answer within the wait");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_of(&text).is_some_and(|s| s >= 200) {
            return text;
        }
    }
}

/// REGISTER, answer the 401 with dave's password, return the final response.
fn register_with_digest(gw: &Gateway, cseq: u32) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let to = gw.udp.unwrap();
    let first = exchange(&sock, to, &register(&sock, cseq, None));
    assert_eq!(status_of(&first), Some(401), "{first}");
    let ch = DigestChallenge::parse(header(&first, "WWW-Authenticate").unwrap()).unwrap();
    let auth = authorization(&ch, "REGISTER", "sip:sip.test", "dave", "davepw", "cn", 1);
    exchange(&sock, to, &register(&sock, cseq + 1, Some(&auth)))
}

#[test]
fn run_time_user_registers_with_digest_and_survives_a_restart_with_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_support::loopback_config(dir.path(), AGENT)
        .replace("[sip]\n", "[sip]\ntrusted = []\n");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();

    let mut first = Gateway::start_file(&path, &[], None);
    let (code, out, err) = ctl(
        &first,
        &[
            "users",
            "add",
            "--username",
            "dave",
            "--domain",
            "sip.test",
            "--password",
            "davepw",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains("davepw"),
        "the password is never echoed: {out}"
    );
    let ok = register_with_digest(&first, 1);
    assert_eq!(status_of(&ok), Some(200), "{ok}");
    assert!(header(&ok, "Contact").unwrap().contains("expires="), "{ok}");
    first.terminate();
    assert_eq!(first.wait_exit().code(), Some(0));

    let second = Gateway::start_file(&path, &[], None);
    let (code, out, err) = ctl(&second, &["bindings", "--aor", "sip:dave@sip.test"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sip:dave@127.0.0.1"),
        "the binding is restored: {out}"
    );
    let again = register_with_digest(&second, 10);
    assert_eq!(
        status_of(&again),
        Some(200),
        "the stored user still authenticates: {again}"
    );
}

fn subscribe_from(sock: &UdpSocket, watcher: &str) -> String {
    let local = sock.local_addr().unwrap();
    format!(
        "SUBSCRIBE sip:dave@sip.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKsub1\r\n\
         Max-Forwards: 70\r\n\
         From: <{watcher}>;tag=w1\r\n\
         To: <sip:dave@sip.test>\r\n\
         Call-ID: sub-1@{local}\r\n\
         CSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:w@{local}>\r\n\
         Event: presence\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Reads requests arriving at `sock` until a NOTIFY whose Subscription-State starts with
/// `state`; answers each NOTIFY 200. Returns that NOTIFY.
fn notify_with_state(sock: &UdpSocket, state: &str) -> String {
    let mut buf = [0u8; 65536];
    for _ in 0..20 {
        let (n, from) = sock.recv_from(&mut buf).expect("a NOTIFY within the wait");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("NOTIFY ") {
            continue;
        }
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = header(&text, name) {
                ok.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        sock.send_to(ok.as_bytes(), from).unwrap();
        if header(&text, "Subscription-State").is_some_and(|s| s.starts_with(state)) {
            return text;
        }
    }
    panic!("no NOTIFY with state {state}");
}

#[test]
fn ctl_rules_set_activates_a_pending_watcher_of_the_real_binary() {
    let mut gw = Gateway::start_with(AGENT);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let ok = exchange(
        &sock,
        gw.udp.unwrap(),
        &subscribe_from(&sock, "sip:alice@xmpp.test"),
    );
    assert_eq!(status_of(&ok), Some(200), "{ok}");
    notify_with_state(&sock, "pending");
    let (code, out, err) = ctl(&gw, &["watchers", "--presentity", "sip:dave@sip.test"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sip:alice@xmpp.test") && out.contains("pending"),
        "{out}"
    );
    let (code, _, err) = ctl(
        &gw,
        &[
            "rules",
            "set",
            "--presentity",
            "sip:dave@sip.test",
            "--watcher",
            "sip:alice@xmpp.test",
            "--action",
            "allow",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let active = notify_with_state(&sock, "active");
    assert!(active.contains("sip:dave@sip.test"), "{active}");
    gw.wait_for_line("watcher rule set");
}
