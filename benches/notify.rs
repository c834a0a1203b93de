//! A whole presence NOTIFY through the hot paths: wire bytes → parsed message → PIDF model
//! (what the subscriber side does per NOTIFY), and PIDF model → NOTIFY bytes (what the
//! notifier side does). Target (issue: foundation): each ≤ 10 µs on the 2-core machine.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use xmpp_sip_gateway::core::engine::Input;
use xmpp_sip_gateway::core::presence::pidf::{build_pidf, parse_pidf};
use xmpp_sip_gateway::core::presence::{parse_body, Body};
use xmpp_sip_gateway::core::sip::{Method, Peer, Request, SipMessage, Transport};
use xmpp_sip_gateway::io::sip_codec::decode_message;

const PIDF: &str = "<?xml version='1.0' encoding='UTF-8'?>
<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model'
  xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='pres:ben@sip.example'>
  <tuple id='ID-ph7'>
    <status><basic>open</basic><show xmlns='jabber:client'>away</show></status>
    <contact priority='0.5'>sip:ben@sip.example;gr=ph7</contact>
    <note xml:lang='en'>Lunch</note>
  </tuple>
  <dm:person id='p1'><rpid:activities><rpid:away/></rpid:activities></dm:person>
</presence>
";

fn notify_request(body: &[u8]) -> Request {
    let mut r = Request::new(Method::Notify, "sip:anna@127.0.0.1:5060");
    let h = &mut r.headers;
    h.push(
        "Via",
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds8;rport",
    );
    h.push("Max-Forwards", "70");
    h.push("From", "<sip:ben@sip.example>;tag=ps-1");
    h.push("To", "<sip:anna@xmpp.example>;tag=gw-1");
    h.push("Call-ID", "a84b4c76e66710@gw.example");
    h.push("CSeq", "7 NOTIFY");
    h.push("Contact", "<sip:ps@127.0.0.1:5070>");
    h.push("Event", "presence");
    h.push("Subscription-State", "active;expires=3599");
    h.push("Content-Type", "application/pidf+xml");
    r.body = body.to_vec();
    r
}

fn bench_notify(c: &mut Criterion) {
    let from = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse::<SocketAddr>().unwrap(),
    };
    let wire = notify_request(PIDF.as_bytes()).to_bytes();

    c.bench_function("notify_parse_wire_to_pidf_model", |b| {
        b.iter(|| {
            let Some(Input::Sip {
                message: SipMessage::Request(req),
                ..
            }) = decode_message(from, black_box(&wire), 65536)
            else {
                panic!("the benchmark NOTIFY parses");
            };
            let ct = req.headers.get("Content-Type");
            match parse_body(ct, &req.body).expect("valid PIDF") {
                Body::Pidf(doc) => doc,
                other => panic!("unexpected body {other:?}"),
            }
        })
    });

    // The two halves of the figure above, to see where its time goes.
    c.bench_function("notify_parse_part_sip_only", |b| {
        b.iter(|| decode_message(from, black_box(&wire), 65536).expect("a message"))
    });
    c.bench_function("notify_parse_part_pidf_only", |b| {
        b.iter(|| parse_pidf(black_box(PIDF.as_bytes())).expect("valid"))
    });

    // Same-run baseline (the machine is shared and its speed drifts between runs): quick-xml
    // alone walking the body's events, the floor under any PIDF reading. BENCHMARKS.md
    // gives the parse figure as a ratio to it as well.
    c.bench_function("baseline_quick_xml_events_on_notify_body", |b| {
        b.iter(|| {
            let mut r = quick_xml::Reader::from_str(black_box(PIDF));
            let mut n = 0usize;
            while !matches!(r.read_event(), Ok(quick_xml::events::Event::Eof) | Err(_)) {
                n += 1;
            }
            n
        })
    });

    let doc = parse_pidf(PIDF.as_bytes()).expect("valid");
    c.bench_function("notify_build_pidf_model_to_wire", |b| {
        b.iter(|| {
            let body = build_pidf(black_box(&doc));
            notify_request(body.as_bytes()).to_bytes()
        })
    });
}

criterion_group!(benches, bench_notify);
criterion_main!(benches);
