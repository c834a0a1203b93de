//! The registrar (RFC 3261 §10.3, RFC 3327 Path, RFC 5626 instance/reg-id) on a manual
//! clock: one behaviour per test, named after the section it checks.

use std::time::Duration;

use proptest::prelude::*;

use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable, StoredRow};
use xmpp_sip_gateway::core::registrar::{
    BindingEvent, RegisterOutcome, Registrar, RegistrarConfig,
};
use xmpp_sip_gateway::core::sip::{Method, Peer, Request, Transport};
use xmpp_sip_gateway::core::time::{ManualClock, Timestamp};

const AOR: &str = "sip:anna@sip.example";
const PHONE: &str = "sip:anna@192.0.2.10:5060";
const LAPTOP: &str = "sip:anna@198.51.100.7:5062";

fn clock() -> ManualClock {
    ManualClock::starting_at(Timestamp::from_secs(1_700_000_000))
}

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "192.0.2.10:5060".parse().unwrap(),
    }
}

fn registrar() -> Registrar {
    Registrar::new(RegistrarConfig::default())
}

/// A REGISTER with these Contact rows and an optional Expires header.
fn register(call_id: &str, cseq: u32, contacts: &[&str], expires: Option<&str>) -> Request {
    let mut r = Request::new(Method::Register, "sip:sip.example");
    r.headers
        .push("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx");
    r.headers.push("From", format!("<{AOR}>;tag=f1"));
    r.headers.push("To", format!("<{AOR}>"));
    r.headers.push("Call-ID", call_id);
    r.headers.push("CSeq", format!("{cseq} REGISTER"));
    for c in contacts {
        r.headers.push("Contact", *c);
    }
    if let Some(e) = expires {
        r.headers.push("Expires", e);
    }
    r
}

fn contacts(out: &RegisterOutcome) -> Vec<&str> {
    out.headers
        .iter()
        .filter(|(n, _)| n == "Contact")
        .map(|(_, v)| v.as_str())
        .collect()
}

fn header<'a>(out: &'a RegisterOutcome, name: &str) -> Option<&'a str> {
    out.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn uris(reg: &Registrar) -> Vec<&str> {
    reg.bindings(AOR)
        .into_iter()
        .map(|b| b.contact.as_str())
        .collect()
}

/// Registers `PHONE` for 3600 s with Call-ID `c1`, CSeq 1.
fn with_phone(now: Timestamp) -> Registrar {
    let mut reg = registrar();
    let out = reg.on_register(now, AOR, &register("c1", 1, &[PHONE], None), peer());
    assert_eq!(out.status, 200);
    reg
}

fn rows(ops: &[StoreOp]) -> Vec<StoredRow> {
    ops.iter()
        .filter_map(|op| match op {
            StoreOp::Put {
                table,
                key,
                owner,
                data,
                ..
            } => Some(StoredRow {
                table: *table,
                key: key.clone(),
                owner: owner.clone(),
                data: data.clone(),
            }),
            StoreOp::Delete { .. } => None,
        })
        .collect()
}

#[test]
fn rfc3261_s10_3_step5_no_contact_is_a_query_listing_current_bindings() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let out = reg.on_register(c.now(), AOR, &register("c2", 1, &[], None), peer());
    assert_eq!(out.status, 200);
    assert_eq!(contacts(&out), vec![format!("<{PHONE}>;expires=3600")]);
    assert!(out.events.is_empty());
    assert!(out.store.is_empty(), "a query writes nothing");
}

#[test]
fn rfc3261_s10_3_step5_query_of_an_unknown_aor_is_an_empty_200() {
    let c = clock();
    let mut reg = registrar();
    let out = reg.on_register(c.now(), AOR, &register("c1", 1, &[], None), peer());
    assert_eq!(out.status, 200);
    assert!(contacts(&out).is_empty());
}

#[test]
fn rfc3261_s10_3_step7_new_contact_is_added_with_the_default_interval() {
    let c = clock();
    let mut reg = registrar();
    let out = reg.on_register(c.now(), AOR, &register("c1", 1, &[PHONE], None), peer());
    assert_eq!(out.status, 200);
    assert!(matches!(&out.events[..], [BindingEvent::Added(b)] if b.contact == PHONE));
    let b = reg.bindings(AOR)[0];
    assert_eq!(b.expires_at, c.now() + Duration::from_secs(3600));
    assert_eq!(b.call_id, "c1");
    assert_eq!(b.cseq, 1);
    assert_eq!(b.source, "udp:192.0.2.10:5060");
}

#[test]
fn rfc3261_s10_3_step6_contact_expires_param_wins_over_the_expires_header() {
    let c = clock();
    let mut reg = registrar();
    let contact = format!("<{PHONE}>;expires=120");
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[&contact], Some("1800")),
        peer(),
    );
    assert_eq!(contacts(&out), vec![format!("<{PHONE}>;expires=120")]);
}

#[test]
fn rfc3261_s10_3_step6_expires_header_applies_to_contacts_without_the_param() {
    let c = clock();
    let mut reg = registrar();
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[PHONE], Some("1800")),
        peer(),
    );
    assert_eq!(contacts(&out), vec![format!("<{PHONE}>;expires=1800")]);
}

#[test]
fn rfc3261_s10_3_step6_interval_below_the_minimum_gets_423_with_min_expires() {
    let c = clock();
    let mut reg = registrar();
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[PHONE], Some("30")),
        peer(),
    );
    assert_eq!(out.status, 423);
    assert_eq!(header(&out, "Min-Expires"), Some("60"));
    assert_eq!(reg.binding_count(), 0);
    assert!(out.store.is_empty());
}

#[test]
fn rfc3261_s10_3_step6_interval_above_the_maximum_is_shortened() {
    let c = clock();
    let mut reg = registrar();
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[PHONE], Some("86400")),
        peer(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(contacts(&out), vec![format!("<{PHONE}>;expires=3600")]);
}

#[test]
fn rfc3261_s10_3_step6_423_only_below_one_hour() {
    let c = clock();
    let mut reg = Registrar::new(RegistrarConfig {
        min_expires: 7200,
        max_expires: 86400,
        default_expires: 7200,
        max_contacts_per_aor: 10,
    });
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[PHONE], Some("4000")),
        peer(),
    );
    assert_eq!(out.status, 200, "4000 s is not below one hour");
    assert_eq!(contacts(&out), vec![format!("<{PHONE}>;expires=4000")]);
}

#[test]
fn rfc3261_s20_19_malformed_expires_is_taken_as_3600() {
    let c = clock();
    let mut reg = Registrar::new(RegistrarConfig {
        default_expires: 600,
        max_expires: 7200,
        ..RegistrarConfig::default()
    });
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[PHONE], Some("soon")),
        peer(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(contacts(&out), vec![format!("<{PHONE}>;expires=3600")]);
}

#[test]
fn rfc3261_s10_3_step6_star_requires_expires_zero() {
    let c = clock();
    let mut reg = with_phone(c.now());
    for expires in [None, Some("60")] {
        let out = reg.on_register(c.now(), AOR, &register("c1", 2, &["*"], expires), peer());
        assert_eq!(out.status, 400, "{expires:?}");
        assert_eq!(reg.binding_count(), 1);
    }
}

#[test]
fn rfc3261_s10_3_step6_star_must_be_the_only_contact() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 2, &["*", LAPTOP], Some("0")),
        peer(),
    );
    assert_eq!(out.status, 400);
    assert_eq!(reg.binding_count(), 1);
}

#[test]
fn rfc3261_s10_3_step6_star_with_expires_zero_removes_every_binding() {
    let c = clock();
    let mut reg = with_phone(c.now());
    reg.on_register(c.now(), AOR, &register("c9", 1, &[LAPTOP], None), peer());
    let out = reg.on_register(c.now(), AOR, &register("c1", 2, &["*"], Some("0")), peer());
    assert_eq!(out.status, 200);
    assert!(contacts(&out).is_empty());
    assert_eq!(out.events.len(), 2);
    assert!(out
        .events
        .iter()
        .all(|e| matches!(e, BindingEvent::Removed(_))));
    assert_eq!(reg.binding_count(), 0);
    assert_eq!(reg.aors().count(), 0);
}

#[test]
fn rfc3261_s10_3_step6_star_with_an_old_cseq_fails_and_removes_nothing() {
    let c = clock();
    let mut reg = with_phone(c.now());
    reg.on_register(c.now(), AOR, &register("c9", 5, &[LAPTOP], None), peer());
    // Same Call-ID as the laptop binding, CSeq not higher: the whole request fails.
    let out = reg.on_register(c.now(), AOR, &register("c9", 5, &["*"], Some("0")), peer());
    assert_eq!(out.status, 400);
    assert_eq!(out.reason, "Invalid CSeq Number");
    assert_eq!(reg.binding_count(), 2);
    assert!(out.store.is_empty());
}

#[test]
fn rfc3261_s10_3_step7_same_call_id_without_higher_cseq_fails_and_changes_nothing() {
    let c = clock();
    let mut reg = registrar();
    reg.on_register(c.now(), AOR, &register("c1", 5, &[PHONE], None), peer());
    let before: Vec<_> = reg.bindings(AOR).into_iter().cloned().collect();
    for cseq in [5, 4] {
        let out = reg.on_register(
            c.now() + Duration::from_secs(10),
            AOR,
            &register("c1", cseq, &[PHONE], Some("1800")),
            peer(),
        );
        assert_eq!(
            (out.status, out.reason.as_str()),
            (400, "Invalid CSeq Number")
        );
        assert!(out.events.is_empty() && out.store.is_empty());
    }
    let after: Vec<_> = reg.bindings(AOR).into_iter().cloned().collect();
    assert_eq!(before, after);
}

#[test]
fn rfc3261_s10_3_step7_same_call_id_with_higher_cseq_refreshes_the_binding() {
    let mut c = clock();
    let mut reg = with_phone(c.now());
    c.advance(Duration::from_secs(1000));
    let out = reg.on_register(c.now(), AOR, &register("c1", 2, &[PHONE], None), peer());
    assert_eq!(out.status, 200);
    assert!(matches!(&out.events[..], [BindingEvent::Refreshed(b)] if b.cseq == 2));
    assert_eq!(
        reg.bindings(AOR)[0].expires_at,
        c.now() + Duration::from_secs(3600)
    );
    assert_eq!(reg.binding_count(), 1);
}

#[test]
fn rfc3261_s10_3_step7_different_call_id_updates_the_binding_whatever_the_cseq() {
    let c = clock();
    let mut reg = registrar();
    reg.on_register(c.now(), AOR, &register("c1", 50, &[PHONE], None), peer());
    let out = reg.on_register(c.now(), AOR, &register("c2", 1, &[PHONE], None), peer());
    assert_eq!(out.status, 200);
    let b = reg.bindings(AOR)[0];
    assert_eq!((b.call_id.as_str(), b.cseq), ("c2", 1));
    assert_eq!(reg.binding_count(), 1);
}

#[test]
fn rfc3261_s10_3_step7_expires_zero_removes_the_binding() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let contact = format!("<{PHONE}>;expires=0");
    let out = reg.on_register(c.now(), AOR, &register("c1", 2, &[&contact], None), peer());
    assert_eq!(out.status, 200);
    assert!(matches!(&out.events[..], [BindingEvent::Removed(b)] if b.contact == PHONE));
    assert_eq!(reg.binding_count(), 0);
    assert_eq!(
        out.store,
        vec![StoreOp::Delete {
            table: StoreTable::Bindings,
            key: AOR.into()
        }]
    );
}

#[test]
fn rfc3261_s10_3_step7_expires_zero_for_an_unknown_contact_changes_nothing() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 2, &[LAPTOP], Some("0")),
        peer(),
    );
    assert_eq!(out.status, 200);
    assert!(out.events.is_empty() && out.store.is_empty());
    assert_eq!(uris(&reg), vec![PHONE]);
}

#[test]
fn rfc3261_s19_1_4_an_equivalent_contact_uri_refreshes_the_same_binding() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 2, &["<sip:%61nna@192.0.2.10:5060>"], None),
        peer(),
    );
    assert!(matches!(&out.events[..], [BindingEvent::Refreshed(_)]));
    assert_eq!(reg.binding_count(), 1);
}

#[test]
fn rfc3261_s10_3_several_contacts_per_aor_are_listed_highest_q_first() {
    let c = clock();
    let mut reg = registrar();
    let low = format!("<{PHONE}>;q=0.1");
    let high = format!("<{LAPTOP}>;q=0.9");
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[&low, &high], None),
        peer(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(uris(&reg), vec![LAPTOP, PHONE]);
    assert_eq!(
        contacts(&out),
        vec![
            format!("<{LAPTOP}>;expires=3600;q=0.9"),
            format!("<{PHONE}>;expires=3600;q=0.1"),
        ]
    );
}

#[test]
fn rfc3261_s10_3_step8_ok_lists_every_binding_with_the_time_left() {
    let mut c = clock();
    let mut reg = with_phone(c.now());
    c.advance(Duration::from_secs(600));
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c7", 1, &[LAPTOP], Some("1200")),
        peer(),
    );
    assert_eq!(
        contacts(&out),
        vec![
            format!("<{PHONE}>;expires=3000"),
            format!("<{LAPTOP}>;expires=1200"),
        ]
    );
}

#[test]
fn rfc3261_s10_3_contact_limit_per_aor_gives_403_and_changes_nothing() {
    let c = clock();
    let mut reg = Registrar::new(RegistrarConfig {
        max_contacts_per_aor: 1,
        ..RegistrarConfig::default()
    });
    reg.on_register(c.now(), AOR, &register("c1", 1, &[PHONE], None), peer());
    let out = reg.on_register(c.now(), AOR, &register("c2", 1, &[LAPTOP], None), peer());
    assert_eq!(
        (out.status, out.reason.as_str()),
        (403, "Too Many Contacts")
    );
    assert_eq!(uris(&reg), vec![PHONE]);
    assert!(out.store.is_empty());
    // Refreshing the one binding at the limit is still fine.
    let out = reg.on_register(c.now(), AOR, &register("c1", 2, &[PHONE], None), peer());
    assert_eq!(out.status, 200);
}

#[test]
fn rfc3261_s10_3_a_refused_request_applies_none_of_its_contacts() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let brief = format!("<{LAPTOP}>;expires=5");
    let gone = format!("<{PHONE}>;expires=0");
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 2, &[&gone, &brief], None),
        peer(),
    );
    assert_eq!(out.status, 423);
    assert_eq!(
        uris(&reg),
        vec![PHONE],
        "the removal before the bad Contact is not applied"
    );
}

#[test]
fn rfc3261_s10_3_step7_the_same_contact_twice_in_one_request_ends_as_the_last_says() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let short = format!("<{PHONE}>;expires=600");
    let gone = format!("<{PHONE}>;expires=0");
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 2, &[&short, &gone], None),
        peer(),
    );
    assert_eq!(
        out.status, 200,
        "the second Contact is not an out-of-order CSeq"
    );
    assert!(matches!(&out.events[..], [BindingEvent::Removed(_)]));
    assert_eq!(reg.binding_count(), 0);
    let mut reg = registrar();
    let new = format!("<{LAPTOP}>;expires=600");
    let longer = format!("<{LAPTOP}>;expires=1200");
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c1", 1, &[&new, &longer], None),
        peer(),
    );
    assert!(matches!(&out.events[..], [BindingEvent::Added(_)]));
    assert_eq!(contacts(&out), vec![format!("<{LAPTOP}>;expires=1200")]);
}

#[test]
fn rfc3261_s10_3_missing_call_id_or_bad_cseq_is_400() {
    let c = clock();
    let mut reg = registrar();
    let mut r = register("c1", 1, &[PHONE], None);
    r.headers.remove("Call-ID");
    assert_eq!(reg.on_register(c.now(), AOR, &r, peer()).status, 400);
    let mut r = register("c1", 1, &[PHONE], None);
    r.headers.set("CSeq", "one REGISTER");
    assert_eq!(reg.on_register(c.now(), AOR, &r, peer()).status, 400);
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn rfc3261_s20_10_bad_contact_is_400() {
    let c = clock();
    let mut reg = registrar();
    for bad in ["<sip:anna@h", "no-scheme", "<sip:anna@h>;q=2"] {
        let out = reg.on_register(c.now(), AOR, &register("c1", 1, &[bad], None), peer());
        assert_eq!(
            (out.status, out.reason.as_str()),
            (400, "Bad Contact"),
            "{bad}"
        );
    }
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn rfc3261_s10_3_bindings_expire_through_handle_timeout_at_the_deadline() {
    let mut c = clock();
    let mut reg = with_phone(c.now());
    let deadline = reg.next_deadline().unwrap();
    assert_eq!(deadline, c.now() + Duration::from_secs(3600));
    c.set(Timestamp::from_millis(deadline.as_millis() - 1));
    assert_eq!(reg.handle_timeout(c.now()), (vec![], vec![]));
    c.set(deadline);
    let (events, store) = reg.handle_timeout(c.now());
    assert!(matches!(&events[..], [BindingEvent::Expired(b)] if b.contact == PHONE));
    assert_eq!(
        store,
        vec![StoreOp::Delete {
            table: StoreTable::Bindings,
            key: AOR.into()
        }]
    );
    assert_eq!(reg.next_deadline(), None);
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn rfc3261_s10_3_a_lapsed_binding_is_expired_before_a_register_is_applied() {
    let mut c = clock();
    let mut reg = with_phone(c.now());
    c.advance(Duration::from_secs(3601));
    let out = reg.on_register(c.now(), AOR, &register("c2", 1, &[], None), peer());
    assert_eq!(out.status, 200);
    assert!(contacts(&out).is_empty());
    assert!(matches!(&out.events[..], [BindingEvent::Expired(_)]));
}

#[test]
fn store_one_row_per_aor_with_the_latest_expiry() {
    let c = clock();
    let mut reg = with_phone(c.now());
    let out = reg.on_register(
        c.now(),
        AOR,
        &register("c2", 1, &[LAPTOP], Some("600")),
        peer(),
    );
    let [StoreOp::Put {
        table,
        key,
        owner,
        subject,
        expires_at,
        data,
    }] = &out.store[..]
    else {
        panic!("{:?}", out.store)
    };
    assert_eq!(*table, StoreTable::Bindings);
    assert_eq!(
        (key.as_str(), owner.as_str(), subject.as_str()),
        (AOR, "registrar", AOR)
    );
    assert_eq!(*expires_at, Some(c.now() + Duration::from_secs(3600)));
    assert_eq!(data["bindings"].as_array().map(Vec::len), Some(2));
}

#[test]
fn restore_keeps_each_binding_expiry() {
    let mut c = clock();
    let mut first = registrar();
    let out = first.on_register(
        c.now(),
        AOR,
        &register("c1", 7, &[PHONE], Some("1800")),
        peer(),
    );
    c.advance(Duration::from_secs(600));
    let mut second = registrar();
    let restored = second.restore(&rows(&out.store), c.now());
    assert!(restored.events.is_empty() && restored.store.is_empty());
    assert!(restored.rejected.is_empty());
    assert_eq!(second.bindings(AOR), first.bindings(AOR));
    assert_eq!(
        second.next_deadline(),
        Some(Timestamp::from_secs(1_700_000_000 + 1800))
    );
    // The stored CSeq still orders requests after the restart.
    let again = second.on_register(c.now(), AOR, &register("c1", 7, &[PHONE], None), peer());
    assert_eq!(again.status, 400);
}

#[test]
fn restore_drops_bindings_that_lapsed_while_down() {
    let mut c = clock();
    let mut first = with_phone(c.now());
    let out = first.on_register(
        c.now(),
        AOR,
        &register("c2", 1, &[LAPTOP], Some("600")),
        peer(),
    );
    c.advance(Duration::from_secs(601));
    let mut second = registrar();
    let restored = second.restore(&rows(&out.store), c.now());
    assert!(matches!(&restored.events[..], [BindingEvent::Expired(b)] if b.contact == LAPTOP));
    assert_eq!(uris(&second), vec![PHONE]);
    assert!(matches!(&restored.store[..], [StoreOp::Put { .. }]));
}

#[test]
fn restore_reports_unreadable_rows() {
    let c = clock();
    let mut reg = registrar();
    let restored = reg.restore(
        &[StoredRow {
            table: StoreTable::Bindings,
            key: AOR.into(),
            owner: "registrar".into(),
            data: serde_json::json!({"bindings": "nope"}),
        }],
        c.now(),
    );
    assert_eq!(restored.rejected.len(), 1);
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn rfc5626_s6_same_instance_and_reg_id_replace_the_binding_with_a_new_uri() {
    let c = clock();
    let mut reg = registrar();
    let inst = "\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"";
    let first = format!("<{PHONE}>;+sip.instance={inst};reg-id=1");
    let moved = format!("<sip:anna@203.0.113.5:40000>;+sip.instance={inst};reg-id=1");
    reg.on_register(c.now(), AOR, &register("c1", 1, &[&first], None), peer());
    let out = reg.on_register(c.now(), AOR, &register("c2", 1, &[&moved], None), peer());
    assert!(matches!(&out.events[..], [BindingEvent::Refreshed(_)]));
    assert_eq!(uris(&reg), vec!["sip:anna@203.0.113.5:40000"]);
    let b = reg.bindings(AOR)[0];
    assert_eq!(
        b.instance.as_deref(),
        Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
    );
    assert_eq!(b.reg_id, Some(1));
    assert_eq!(
        contacts(&out),
        vec![format!(
            "<sip:anna@203.0.113.5:40000>;expires=3600;+sip.instance={inst};reg-id=1"
        )]
    );
}

#[test]
fn rfc3327_s5_3_path_is_stored_and_echoed() {
    let c = clock();
    let mut reg = registrar();
    let mut r = register("c1", 1, &[PHONE], None);
    r.headers.push("Path", "<sip:edge.example;lr>");
    r.headers.push("User-Agent", "Phone/1.0");
    let out = reg.on_register(c.now(), AOR, &r, peer());
    assert_eq!(header(&out, "Path"), Some("<sip:edge.example;lr>"));
    let b = reg.bindings(AOR)[0];
    assert_eq!(b.path, vec!["<sip:edge.example;lr>"]);
    assert_eq!(b.user_agent.as_deref(), Some("Phone/1.0"));
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        Just("*".to_string()),
        Just("0".to_string()),
        "<sip:[a-z]{1,4}@[a-z0-9.]{1,8}(:[0-9]{1,5})?>(;(expires|q|reg-id|\\+sip.instance)=[-0-9.\"a-z<>:]{0,6}){0,3}",
    ]
}

proptest! {
    /// A peer's mistake becomes a status, never a panic; a refusal changes no binding.
    #[test]
    fn registrar_never_panics_on_arbitrary_register_headers(
        contacts in proptest::collection::vec(header_value(), 0..4),
        expires in proptest::option::of(header_value()),
        call_id in header_value(),
        cseq in header_value(),
        path in proptest::option::of(header_value()),
    ) {
        let c = clock();
        let mut reg = with_phone(c.now());
        let before: Vec<_> = reg.bindings(AOR).into_iter().cloned().collect();
        let mut r = Request::new(Method::Register, "sip:sip.example");
        r.headers.push("Call-ID", call_id);
        r.headers.push("CSeq", cseq);
        for v in &contacts {
            r.headers.push("Contact", v.as_str());
        }
        if let Some(e) = expires {
            r.headers.push("Expires", e);
        }
        if let Some(p) = path {
            r.headers.push("Path", p);
        }
        let out = reg.on_register(c.now(), AOR, &r, peer());
        if out.status != 200 {
            let after: Vec<_> = reg.bindings(AOR).into_iter().cloned().collect();
            prop_assert_eq!(before, after);
            prop_assert!(out.store.is_empty());
        }
        prop_assert!(reg.binding_count() <= 10);
    }
}
