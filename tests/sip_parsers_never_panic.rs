//! Property tests: no input makes a SIP parser panic (architecture habit 6: a peer's
//! mistake becomes a protocol reply, never a panic), and parsed values print back to
//! text that parses to the same value.

use proptest::prelude::*;

use xmpp_sip_gateway::core::engine::Input;
use xmpp_sip_gateway::core::sip::digest::{authorization, DigestChallenge};
use xmpp_sip_gateway::core::sip::headers::{
    media_type, parse_accept, parse_delta_seconds, parse_retry_after, CSeq, EventHeader, NameAddr,
    SubState, Via,
};
use xmpp_sip_gateway::core::sip::message::{salvage_for_reply, stamp_via_received};
use xmpp_sip_gateway::core::sip::transaction::{TransactionLayer, TxConfig};
use xmpp_sip_gateway::core::sip::uri::SipUri;
use xmpp_sip_gateway::core::sip::{Peer, SipMessage, Transport};
use xmpp_sip_gateway::core::time::Timestamp;
use xmpp_sip_gateway::io::sip_codec::{decode_message, Framed, StreamFramer};

const VALID: &str = "SUBSCRIBE sip:ben@sip.example SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKabc;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Anna, A\" <sip:anna@gw.example>;tag=a1\r\n\
To: <sip:ben@sip.example>\r\n\
Call-ID: c1@gw.example\r\n\
CSeq: 1 SUBSCRIBE\r\n\
o: presence.winfo;x=1\r\n\
Accept: application/pidf+xml, */*\r\n\
Subscription-State: terminated;reason=probation;retry-after=30\r\n\
Expires: 3600\r\n\
WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth\"\r\n\
c: application/pidf+xml\r\n\
l: 5\r\n\
\r\n\
hello";

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
    }
}

/// Byte-level mutations of a valid message: replace, insert or delete at positions.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8);
    edits.prop_map(|edits| {
        let mut bytes = VALID.as_bytes().to_vec();
        for (idx, kind, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = idx.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        bytes
    })
}

/// Text built from SIP's structural characters, which reaches deeper into parsers
/// than uniformly random strings.
fn sipish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "sip:",
            "sips:",
            "tel:",
            "<",
            ">",
            "\"",
            "\\",
            ";",
            ",",
            "=",
            ":",
            "@",
            "[",
            "]",
            " ",
            "\t",
            "/",
            "?",
            "&",
            "%",
            "%4",
            "%ff",
            "SIP",
            "2.0",
            "UDP",
            "tag",
            "branch",
            "z9hG4bK",
            "expires",
            "reason",
            "retry-after",
            "active",
            "pending",
            "terminated",
            "Digest",
            "realm",
            "nonce",
            "qop",
            "algorithm",
            "MD5",
            "0",
            "65536",
            "99999999999",
            "a",
            "é",
            "\r\n",
            "::1",
            ".",
            "-",
        ]),
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn all_header_parsers(s: &str) {
    let _ = NameAddr::parse("To", s);
    let _ = NameAddr::parse_list("Contact", s);
    let _ = Via::parse(s);
    let _ = Via::parse_list(s);
    let _ = CSeq::parse(s);
    let _ = EventHeader::parse(s);
    let _ = SubState::parse(s);
    let _ = parse_delta_seconds("Expires", s);
    let _ = parse_retry_after(s);
    let _ = parse_accept(s);
    let _ = media_type(s);
    let _ = SipUri::parse(s);
    if let Ok(ch) = DigestChallenge::parse(s) {
        let _ = authorization(&ch, "SUBSCRIBE", s, s, s, s, 1);
    }
}

fn decode_and_use(bytes: &[u8]) {
    let mut layer = TransactionLayer::new(TxConfig::default());
    match decode_message(peer(), bytes, 4096) {
        Some(Input::Sip {
            message: SipMessage::Request(r),
            ..
        }) => {
            let mut r2 = r.clone();
            stamp_via_received(&mut r2, peer());
            let _ = layer.on_request(Timestamp::ZERO, peer(), &r);
            let _ = r.to_bytes();
        }
        Some(Input::Sip {
            message: SipMessage::Response(r),
            ..
        }) => {
            let _ = layer.on_response(Timestamp::ZERO, peer(), r);
        }
        _ => {}
    }
    if let Some(s) = salvage_for_reply(bytes) {
        layer.respond_stateless(peer(), s.top_via(), s.response(400, "Bad Request"));
    }
}

fn frame_in_chunks(bytes: &[u8], chunk: usize) {
    let mut f = StreamFramer::new();
    for c in bytes.chunks(chunk.max(1)) {
        f.push(c);
        while let Some(item) = f.next_item(2048) {
            if let Framed::Message(m) = item {
                decode_and_use(&m);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_decoder_framer_or_salvage(bytes in prop::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64) {
        decode_and_use(&bytes);
        frame_in_chunks(&bytes, chunk);
    }

    #[test]
    fn mutated_valid_messages_never_panic(bytes in mutated(), chunk in 1usize..200) {
        decode_and_use(&bytes);
        frame_in_chunks(&bytes, chunk);
    }

    #[test]
    fn arbitrary_strings_never_panic_header_parsers(s in any::<String>()) {
        all_header_parsers(&s);
    }

    #[test]
    fn sip_shaped_strings_never_panic_header_parsers(s in sipish()) {
        all_header_parsers(&s);
        decode_and_use(format!("NOTIFY {s} SIP/2.0\r\nVia: {s}\r\nFrom: {s}\r\nTo: {s}\r\nCall-ID: {s}\r\nCSeq: {s}\r\n\r\n").as_bytes());
    }

    #[test]
    fn parsed_headers_print_back_to_the_same_value(s in sipish()) {
        if let Ok(v) = Via::parse(&s) {
            prop_assert_eq!(Via::parse(&v.to_string()), Ok(v));
        }
        if let Ok(n) = NameAddr::parse("To", &s) {
            prop_assert_eq!(NameAddr::parse("To", &n.to_string()), Ok(n));
        }
        if let Ok(st) = SubState::parse(&s) {
            prop_assert_eq!(SubState::parse(&st.to_string()), Ok(st));
        }
        if let Ok(e) = EventHeader::parse(&s) {
            prop_assert_eq!(EventHeader::parse(&e.to_string()), Ok(e));
        }
        if let Ok(u) = SipUri::parse(&s) {
            prop_assert_eq!(SipUri::parse(&u.to_string()), Ok(u));
        }
    }
}

#[test]
fn the_valid_seed_message_decodes() {
    assert!(matches!(
        decode_message(peer(), VALID.as_bytes(), 4096),
        Some(Input::Sip { .. })
    ));
}
