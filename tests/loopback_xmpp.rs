//! The real binary's XEP-0114 component link, against a scripted XMPP server socket:
//! it connects where `[xmpp]` says, reports the link up, and fails fast (exit 1) when the
//! very first handshake is refused (product.md, What peers taught: biboumi).

mod loopback_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use loopback_support::{Gateway, WAIT};
use sha1::{Digest, Sha1};

const COMPONENT: &str = "sip.xmpp.test";
const SECRET: &str = "s3cret";
const STREAM_ID: &str = "loopback-stream-1";

fn start_with_xmpp(server: &TcpListener) -> Gateway {
    let addr = server.local_addr().unwrap();
    Gateway::start_with(&format!(
        "[xmpp]\ncomponent_jid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\nserver = \"{addr}\"\n"
    ))
}

/// Reads until `end` appears (bounded by the socket timeout), returning what was read.
fn read_until(s: &mut TcpStream, end: &str) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&data).contains(end) {
        let n = s.read(&mut buf).expect("data within the wait");
        assert!(
            n > 0,
            "closed before {end:?}: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&data).into_owned()
}

/// Accepts the gateway, answers its stream header, and returns its handshake element.
fn accept_until_handshake(server: &TcpListener) -> (TcpStream, String, String) {
    let (mut s, _) = server.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let header = read_until(&mut s, ">");
    s.write_all(
        format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns='jabber:component:accept' from='{COMPONENT}' id='{STREAM_ID}'>"
        )
        .as_bytes(),
    )
    .unwrap();
    let handshake = read_until(&mut s, "</handshake>");
    (s, header, handshake)
}

/// XEP-0114 §3: the handshake is hex(SHA-1(stream id ‖ secret)) (standards.md §16 case 1).
#[test]
fn component_link_connects_and_handshakes_as_configured() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gw = start_with_xmpp(&server);
    let (mut s, header, handshake) = accept_until_handshake(&server);
    assert!(header.contains("jabber:component:accept"), "{header}");
    assert!(header.contains(COMPONENT), "{header}");
    let expected = hex::encode(Sha1::digest(format!("{STREAM_ID}{SECRET}").as_bytes()));
    assert!(handshake.contains(&expected), "{handshake}");
    s.write_all(b"<handshake/>").unwrap();
    gw.wait_for_line("xmpp component link up");
}

#[test]
fn refused_first_handshake_exits_1() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gw = start_with_xmpp(&server);
    let (mut s, _, _) = accept_until_handshake(&server);
    s.write_all(
        b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
          </stream:error></stream:stream>",
    )
    .unwrap();
    drop(s);
    gw.assert_exit_code(1);
    gw.wait_for_line("xmpp.secret");
}

/// Graceful shutdown closes the component stream (RFC 6120 §4.4) and exits 0.
#[test]
fn sigterm_closes_the_component_stream() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gw = start_with_xmpp(&server);
    let (mut s, _, _) = accept_until_handshake(&server);
    s.write_all(b"<handshake/>").unwrap();
    gw.wait_for_line("xmpp component link up");
    gw.terminate();
    let rest = read_until(&mut s, "</stream:stream>");
    assert!(rest.contains("</stream:stream>"));
    gw.assert_exit_code(0);
}

/// End to end through the real binary: an XMPP `subscribe` to a SIP contact becomes a SIP
/// SUBSCRIBE (Event: presence) at the outbound proxy (RFC 8048 §5.2; product.md, Address
/// mapping, scheme `domain`).
#[test]
fn xmpp_subscribe_reaches_the_sip_proxy_as_subscribe() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    proxy.set_read_timeout(Some(WAIT)).unwrap();
    let xmpp_addr = server.local_addr().unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let mut gw = Gateway::start_custom(
        |c| {
            c.replace(
                "[sip]\n",
                &format!("[sip]\noutbound_proxy = \"udp:{proxy_addr}\"\n"),
            ) + &format!(
                "[xmpp]\ncomponent_jid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\n\
                     server = \"{xmpp_addr}\"\n\
                     [bridge]\nmode = \"notifier\"\n[[bridge.domains]]\n\
                     xmpp_domain = \"xmpp.test\"\ncomponent_domain = \"{COMPONENT}\"\n\
                     sip_domain = \"sip.test\"\nscheme = \"domain\"\n"
            )
        },
        &[],
    );
    let (mut s, _, _) = accept_until_handshake(&server);
    s.write_all(b"<handshake/>").unwrap();
    gw.wait_for_line("xmpp component link up");
    s.write_all(
        format!("<presence from='alice@xmpp.test' to='bob@{COMPONENT}' type='subscribe'/>")
            .as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 65536];
    let subscribe = loop {
        let (n, _) = proxy
            .recv_from(&mut buf)
            .expect("a SUBSCRIBE within the wait");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.starts_with("SUBSCRIBE ") {
            break msg;
        }
    };
    assert!(
        subscribe.starts_with("SUBSCRIBE sip:bob@sip.test"),
        "{subscribe}"
    );
    assert_eq!(
        loopback_support::header(&subscribe, "Event"),
        Some("presence")
    );
}
