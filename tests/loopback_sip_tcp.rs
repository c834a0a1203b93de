//! SIP over TCP against the real binary: Content-Length framing, answers on the same
//! connection (RFC 3261 §18.2.2), broken framing closes the connection only.

mod loopback_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use loopback_support::{header, request, status_of, Gateway, WAIT};

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.tcp.unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads one response: the head, then Content-Length bytes of body.
fn read_response(s: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("an answer within the wait");
        assert!(
            n > 0,
            "connection closed before an answer: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let len: usize = header(&head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// Waits for the gateway to close the connection (EOF or reset), bounded by the timeout.
fn closed_by_gateway(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn garbage_on_a_connection_leaves_the_gateway_running() {
    let mut gw = Gateway::start();
    let mut s = connect(&gw);
    let _ = s.write_all(b"\x00\x01\x02 not sip at all\r\n\r\n");
    let _ = s.write_all(&[0xffu8; 10000]);
    drop(s);
    let mut again = connect(&gw);
    let _ = again.write_all(b"\r\n\r\n");
    gw.terminate();
    gw.assert_exit_code(0);
}

/// RFC 3261 §8.2.1 and §18.2.2: 501 for an unknown method, on the request's connection.
#[test]
fn unknown_method_over_tcp_gets_501_on_same_connection() {
    let gw = Gateway::start();
    let mut s = connect(&gw);
    let local = s.local_addr().unwrap();
    s.write_all(request("FROB", "TCP", local, "tcp501").as_bytes())
        .unwrap();
    let answer = read_response(&mut s);
    assert_eq!(status_of(&answer), Some(501), "{answer}");
    assert_eq!(header(&answer, "Call-ID"), Some("tcp501"));
}

/// Two requests in one write are framed apart by Content-Length (RFC 3261 §18.3).
#[test]
fn two_pipelined_requests_get_two_answers() {
    let gw = Gateway::start();
    let mut s = connect(&gw);
    let local = s.local_addr().unwrap();
    let both = request("FROB", "TCP", local, "pipe1") + &request("FROB", "TCP", local, "pipe2");
    s.write_all(both.as_bytes()).unwrap();
    let first = read_response(&mut s);
    let second = read_response(&mut s);
    assert_eq!(header(&first, "Call-ID"), Some("pipe1"));
    assert_eq!(header(&second, "Call-ID"), Some("pipe2"));
}

/// A request without Content-Length cannot be framed on a stream (RFC 3261 §18.3): the
/// gateway closes that connection.
#[test]
fn missing_content_length_closes_the_connection() {
    let gw = Gateway::start();
    let mut s = connect(&gw);
    let local = s.local_addr().unwrap();
    let unframed = request("FROB", "TCP", local, "nolen").replace("Content-Length: 0\r\n", "");
    s.write_all(unframed.as_bytes()).unwrap();
    assert!(closed_by_gateway(&mut s));
}

/// A message over max_message_size (4096 here) is refused (513 when the head can be
/// salvaged, RFC 3261 §21.5.14) and the connection is closed.
#[test]
fn oversized_message_gets_513_and_the_connection_closes() {
    let gw = Gateway::start();
    let mut s = connect(&gw);
    let local = s.local_addr().unwrap();
    let big =
        request("FROB", "TCP", local, "big").replace("Content-Length: 0", "Content-Length: 10000");
    s.write_all(big.as_bytes()).unwrap();
    let _ = s.write_all(&vec![b'x'; 10000]);
    let answer = read_response(&mut s);
    assert_eq!(status_of(&answer), Some(513), "{answer}");
    assert!(closed_by_gateway(&mut s));
}
