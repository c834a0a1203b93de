//! State survives a restart (product.md, Persistence): a publication acknowledged by the
//! presence server is in the store before the gateway stops, and is listed again after
//! the real binary restarts on the same store.

mod loopback_support;

use std::net::UdpSocket;
use std::thread;

use loopback_support::{header, run_to_exit, Gateway, WAIT};

/// Answers one PUBLISH with 200, a SIP-ETag and Expires (RFC 3903 §6), as a presence
/// server would. Returns the request it answered.
fn answer_one_publish(server: UdpSocket, etag: &'static str) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        server.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 65536];
        loop {
            let (n, from) = server
                .recv_from(&mut buf)
                .expect("a PUBLISH within the wait");
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !req.starts_with("PUBLISH ") {
                continue;
            }
            let mut resp = String::from("SIP/2.0 200 OK\r\n");
            for line in req.lines().skip(1) {
                let name = line
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                match name.as_str() {
                    "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                        resp.push_str(line);
                        resp.push_str("\r\n");
                    }
                    "to" | "t" => {
                        resp.push_str(line);
                        resp.push_str(";tag=ps1\r\n");
                    }
                    _ => {}
                }
            }
            resp.push_str(&format!(
                "SIP-ETag: {etag}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
            ));
            server.send_to(resp.as_bytes(), from).unwrap();
            return req;
        }
    })
}

fn ctl(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let url = format!("http://{}", gw.admin.unwrap());
    let mut all = vec!["ctl", "--admin", url.as_str()];
    all.extend_from_slice(args);
    let (status, out, err) = run_to_exit(&all, &[]);
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn acknowledged_publication_is_listed_after_restart() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy = server.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_support::loopback_config(dir.path(), "").replace(
        "[sip]\n",
        &format!("[sip]\noutbound_proxy = \"udp:{proxy}\"\n"),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();

    let mut first = Gateway::start_file(&path, &[], None);
    let responder = answer_one_publish(server, "etag-restart-1");
    let pidf = "<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' \
                entity='sip:alice@127.0.0.1'><tuple id='t1'><status><basic>open</basic>\
                </status></tuple></presence>";
    let (code, out, err) = ctl(
        &first,
        &[
            "publish",
            "--presentity",
            "sip:alice@127.0.0.1",
            "--event",
            "presence",
            "--expires",
            "3600",
            "--content-type",
            "application/pidf+xml",
            "--body",
            pidf,
        ],
    );
    let publish = responder.join().expect("responder");
    assert_eq!(header(&publish, "Event"), Some("presence"), "{publish}");
    assert_eq!(code, 0, "publish: {out}\n{err}");
    assert!(out.contains("etag-restart-1"), "{out}");

    first.terminate();
    assert_eq!(first.wait_exit().code(), Some(0));

    let second = Gateway::start_file(&path, &[], None);
    let (code, out, err) = ctl(&second, &["list", "publications"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sip:alice@127.0.0.1"),
        "restored publication listed: {out}"
    );
}
