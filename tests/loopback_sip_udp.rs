//! SIP over UDP against the real binary: answers come back to the sender, bad datagrams
//! never take the gateway down.

mod loopback_support;

use std::net::UdpSocket;

use loopback_support::{header, request, status_of, Gateway, WAIT};

fn client() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock
}

fn recv(sock: &UdpSocket) -> String {
    let mut buf = [0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer within the wait");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn garbage_datagrams_leave_the_gateway_running() {
    let mut gw = Gateway::start();
    let sock = client();
    let udp = gw.udp.unwrap();
    for garbage in [
        &b"\x00\xff\xfe garbage"[..],
        b"\r\n\r\n",
        b"SIP/2.0",
        b"INVITE\r\n\r\n",
        &[0u8; 1500],
    ] {
        sock.send_to(garbage, udp).unwrap();
    }
    // A datagram larger than max_message_size (4096 in the test config).
    sock.send_to(&vec![b'A'; 8000], udp).unwrap();
    gw.terminate();
    gw.assert_exit_code(0);
}

/// RFC 3261 §8.2.1: an unrecognised method gets 501; the response goes back to the
/// source port (§18.2.2, rport).
#[test]
fn unknown_method_over_udp_gets_501_at_source_port() {
    let gw = Gateway::start();
    let sock = client();
    let local = sock.local_addr().unwrap();
    sock.send_to(
        request("FROB", "UDP", local, "udp501").as_bytes(),
        gw.udp.unwrap(),
    )
    .unwrap();
    let answer = recv(&sock);
    assert_eq!(status_of(&answer), Some(501), "{answer}");
    assert_eq!(header(&answer, "Call-ID"), Some("udp501"));
}

/// A malformed request whose headers can be salvaged gets 400 (standards.md: bad input
/// gets a protocol error).
#[test]
fn malformed_request_over_udp_gets_400() {
    let gw = Gateway::start();
    let sock = client();
    let local = sock.local_addr().unwrap();
    let bad =
        request("OPTIONS", "UDP", local, "udp400").replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
    sock.send_to(bad.as_bytes(), gw.udp.unwrap()).unwrap();
    let answer = recv(&sock);
    assert_eq!(status_of(&answer), Some(400), "{answer}");
}

/// product.md, Security: requests from outside `sip.trusted` (and without digest) get 403.
#[test]
fn request_from_outside_trusted_networks_gets_403() {
    let gw = Gateway::start_custom(
        |c| c.replace("[sip]\n", "[sip]\ntrusted = [\"10.0.0.0/8\"]\n"),
        &[],
    );
    let sock = client();
    let local = sock.local_addr().unwrap();
    sock.send_to(
        request("SUBSCRIBE", "UDP", local, "untrusted").as_bytes(),
        gw.udp.unwrap(),
    )
    .unwrap();
    let answer = recv(&sock);
    assert_eq!(status_of(&answer), Some(403), "{answer}");
}
