//! PIDF parse and build on a realistic NOTIFY body: two tuples (desk + phone) and an RPID
//! person. Target: each ≤ 10 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use xmpp_sip_gateway::core::presence::pidf::{build_pidf, parse_pidf};

const BODY: &str = "<?xml version='1.0' encoding='UTF-8'?>
<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model'
  xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='pres:anna@xmpp.example'>
  <tuple id='ID-desk'>
    <status><basic>open</basic><show xmlns='jabber:client'>dnd</show></status>
    <contact priority='0.039'>sip:anna@xmpp.example;gr=desk</contact>
    <note xml:lang='en'>In a meeting</note>
    <timestamp>2026-11-26T08:00:00Z</timestamp>
  </tuple>
  <tuple id='ID-phone'>
    <status><basic>open</basic><show xmlns='jabber:client'>away</show></status>
    <contact priority='0.007'>sip:anna@xmpp.example;gr=phone</contact>
    <note xml:lang='en'>Out to lunch &amp; back soon</note>
    <timestamp>2026-11-26T07:55:00Z</timestamp>
  </tuple>
  <dm:person id='p-anna'>
    <rpid:activities><rpid:busy/><rpid:meeting/></rpid:activities>
    <rpid:user-input idle-threshold='600' last-input='2026-11-26T07:50:00Z'>active</rpid:user-input>
    <dm:note xml:lang='en'>In a meeting</dm:note>
    <dm:timestamp>2026-11-26T08:00:00Z</dm:timestamp>
  </dm:person>
</presence>
";

fn bench_pidf(c: &mut Criterion) {
    c.bench_function("pidf_parse_2_tuples_rpid_person", |b| {
        b.iter(|| parse_pidf(black_box(BODY.as_bytes())).expect("valid"))
    });
    // Baseline: quick-xml alone walking the same body, to read the figures above against.
    c.bench_function("baseline_quick_xml_events_only", |b| {
        b.iter(|| {
            let mut r = quick_xml::Reader::from_str(black_box(BODY));
            let mut n = 0usize;
            loop {
                match r.read_event() {
                    Ok(quick_xml::events::Event::Eof) => break,
                    Ok(_) => n += 1,
                    Err(_) => break,
                }
            }
            n
        })
    });
    let doc = parse_pidf(BODY.as_bytes()).expect("valid");
    c.bench_function("pidf_build_2_tuples_rpid_person", |b| {
        b.iter(|| build_pidf(black_box(&doc)))
    });
}

criterion_group!(benches, bench_pidf);
criterion_main!(benches);
