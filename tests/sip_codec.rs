//! The SIP wire codec: datagram decoding and stream framing (RFC 3261 §7, §18.3).

use xmpp_sip_gateway::core::engine::Input;
use xmpp_sip_gateway::core::sip::{Method, Peer, SipMessage, Transport};
use xmpp_sip_gateway::io::sip_codec::{decode_message, Framed, StreamFramer};

const MAX: usize = 65_535;

fn from() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
    }
}

fn notify(extra: &str, body: &str) -> String {
    format!(
        "NOTIFY sip:anna@gw.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
         f: <sip:ben@sip.example>;tag=b\r\n\
         t: <sip:anna@gw.example>;tag=a\r\n\
         i: call-1\r\n\
         CSeq: 3 NOTIFY\r\n\
         o: presence\r\n\
         Subscription-State: active;expires=60\r\n\
         {extra}\
         l: {}\r\n\r\n{body}",
        body.len()
    )
}

fn decoded(bytes: &[u8]) -> SipMessage {
    match decode_message(from(), bytes, MAX) {
        Some(Input::Sip { message, .. }) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn malformed(bytes: &[u8]) -> String {
    match decode_message(from(), bytes, MAX) {
        Some(Input::SipMalformed { error, raw, .. }) => {
            assert_eq!(raw, bytes);
            error
        }
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn request_headers_keep_order_and_get_canonical_names() {
    let SipMessage::Request(r) = decoded(notify("", "<x/>").as_bytes()) else {
        panic!()
    };
    assert_eq!(r.method, Method::Notify);
    assert_eq!(r.uri, "sip:anna@gw.example");
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Event",
            "Subscription-State",
            "Content-Length"
        ]
    );
    assert_eq!(r.headers.get("Event"), Some("presence"));
    assert_eq!(r.body, b"<x/>");
}

#[test]
fn repeated_headers_are_kept_separately() {
    let m = decoded(
        notify(
            "Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n",
            "",
        )
        .as_bytes(),
    );
    assert_eq!(
        m.headers().get_all("Record-Route"),
        ["<sip:p1;lr>", "<sip:p2;lr>"]
    );
}

#[test]
fn folded_header_lines_are_joined() {
    let m = decoded(notify("Subject: a\r\n  b\r\n", "").as_bytes());
    assert_eq!(m.headers().get("Subject"), Some("a b"));
}

#[test]
fn extension_method_reaches_the_core() {
    let raw = notify("", "")
        .replace("NOTIFY sip", "FROB sip")
        .replace("3 NOTIFY", "3 FROB");
    let SipMessage::Request(r) = decoded(raw.as_bytes()) else {
        panic!()
    };
    assert_eq!(r.method, Method::Other("FROB".into()));
}

#[test]
fn response_is_decoded_with_reason() {
    let raw = notify("", "").replace(
        "NOTIFY sip:anna@gw.example SIP/2.0",
        "SIP/2.0 489 Bad Event Here",
    );
    let SipMessage::Response(r) = decoded(raw.as_bytes()) else {
        panic!()
    };
    assert_eq!(r.status, 489);
    assert_eq!(r.reason, "Bad Event Here");
}

#[test]
fn request_via_gets_received_and_rport_from_the_source() {
    let raw = notify("", "").replace("5060;branch=z9hG4bK1", "5060;rport;branch=z9hG4bK1");
    let m = decoded(raw.as_bytes());
    assert_eq!(
        m.headers().get("Via"),
        Some("SIP/2.0/UDP 192.0.2.1:5060;rport=5060;branch=z9hG4bK1;received=192.0.2.1")
    );
}

#[test]
fn keepalive_crlf_gives_nothing_and_leading_crlf_is_skipped() {
    assert_eq!(decode_message(from(), b"\r\n\r\n", MAX), None);
    assert_eq!(decode_message(from(), b"\r\n", MAX), None);
    let raw = format!("\r\n{}", notify("", ""));
    assert!(matches!(
        decode_message(from(), raw.as_bytes(), MAX),
        Some(Input::Sip { .. })
    ));
}

#[test]
fn oversized_datagram_gives_its_head() {
    let raw = notify("", &"x".repeat(2000));
    match decode_message(from(), raw.as_bytes(), 1000) {
        Some(Input::SipOversized { head, .. }) => {
            assert!(head.starts_with(b"NOTIFY "));
            assert!(!head.ends_with(b"x"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn extra_bytes_after_content_length_are_discarded() {
    let raw = format!("{}trailing", notify("", "abc"));
    assert_eq!(decoded(raw.as_bytes()).body(), b"abc");
}

#[test]
fn malformed_messages_name_the_problem() {
    let ok = notify("", "");
    let cases = [
        (ok.replace("l: 0\r\n\r\n", "l: 0\r\n"), "no blank line"),
        (ok.replace("l: 0", "l: 10"), "shorter than Content-Length"),
        (ok.replace("l: 0", "l: zero"), "Content-Length"),
        (
            ok.replace("o: presence\r\n", "o presence\r\n"),
            "without a colon",
        ),
        (ok.replace("i: call-1\r\n", ""), "missing Call-ID"),
        (ok.replace("CSeq: 3 NOTIFY", "CSeq: x NOTIFY"), "CSeq"),
        (
            ok.replace("CSeq: 3 NOTIFY", "CSeq: 3 SUBSCRIBE"),
            "CSeq method",
        ),
        (
            ok.replace("Via: SIP/2.0/UDP", "Via: SIP/2.0/UDP\r\nX-A: "),
            "Via",
        ),
        (
            ok.replace("t: <sip:anna@gw.example>;tag=a", "t: <sip:anna"),
            "To",
        ),
        (ok.replace("SIP/2.0\r\n", "SIP/3.0\r\n"), "version"),
        (
            ok.replace("sip:anna@gw.example SIP", "sip: SIP"),
            "Request-URI",
        ),
        (
            ok.replace("i: call-1\r\n", "i: call-1\r\ni: call-2\r\n"),
            "more than one Call-ID",
        ),
    ];
    for (raw, want) in cases {
        let e = malformed(raw.as_bytes());
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn non_utf8_header_section_is_malformed() {
    let raw = notify("X-Bin: \u{1}\r\n", "");
    assert!(malformed(raw.as_bytes()).contains("control character"));
    let mut raw = notify("", "").into_bytes();
    raw[60] = 0xff;
    assert!(malformed(&raw).contains("UTF-8"));
}

#[test]
fn framer_cuts_messages_by_content_length_across_pushes() {
    let a = notify("", "hello");
    let b = notify("", "");
    let stream = format!("\r\n\r\n{a}{b}");
    let mut f = StreamFramer::new();
    let (first, second) = stream.as_bytes().split_at(40);
    f.push(first);
    assert_eq!(f.next_item(MAX), None);
    f.push(second);
    assert_eq!(f.next_item(MAX), Some(Framed::Message(a.into_bytes())));
    assert_eq!(f.next_item(MAX), Some(Framed::Message(b.into_bytes())));
    assert_eq!(f.next_item(MAX), None);
}

#[test]
fn framer_waits_for_the_whole_body() {
    let a = notify("", "hello world");
    let mut f = StreamFramer::new();
    f.push(&a.as_bytes()[..a.len() - 3]);
    assert_eq!(f.next_item(MAX), None);
    f.push(&a.as_bytes()[a.len() - 3..]);
    assert!(matches!(f.next_item(MAX), Some(Framed::Message(_))));
}

#[test]
fn framer_without_content_length_is_broken() {
    let a = notify("", "").replace("l: 0\r\n", "");
    let mut f = StreamFramer::new();
    f.push(a.as_bytes());
    assert!(matches!(f.next_item(MAX), Some(Framed::Broken(e)) if e.contains("Content-Length")));
}

#[test]
fn framer_reports_oversized_announced_body_without_waiting() {
    let a = notify("", "").replace("l: 0", "l: 100000");
    let mut f = StreamFramer::new();
    f.push(a.as_bytes());
    match f.next_item(MAX) {
        Some(Framed::Oversized(head)) => assert!(head.starts_with(b"NOTIFY")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn framer_reports_oversized_head_without_separator() {
    let mut f = StreamFramer::new();
    f.push(&vec![b'a'; 2000]);
    assert!(matches!(f.next_item(1000), Some(Framed::Oversized(h)) if h.len() == 1000));
}

#[test]
fn framer_skips_keepalives_between_messages() {
    let a = notify("", "");
    let mut f = StreamFramer::new();
    f.push(b"\r\n\r\n\r\n");
    assert_eq!(f.next_item(MAX), None);
    assert_eq!(f.buffered(), 0);
    f.push(a.as_bytes());
    assert!(matches!(f.next_item(MAX), Some(Framed::Message(_))));
}
