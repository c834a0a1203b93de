//! REGISTER-driven presence (usrloc) through the engine on a manual clock: every source
//! of registrations (embedded registrar, REGISTER copies, `reg` events) turns into a
//! presence publication for the AOR, `closed` when the last binding goes (the two anchor
//! bugs, anchors.md §6.1), composed with the phone's own publication, kept across restarts.

mod registrations_support;
mod support;

use registrations_support::*;
use support::*;
use xmpp_sip_gateway::core::engine::{Input, Output};
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply};
use xmpp_sip_gateway::core::modules::registrar::{RegEventConfig, RegistrarModuleConfig};
use xmpp_sip_gateway::core::modules::usrloc::UsrlocConfig;
use xmpp_sip_gateway::core::sip::{Method, Request};

const CAROL_CONTACT: &str = "sip:carol@127.0.0.1:5070;transport=tcp";

/// A watcher of `presentity`; returns the first NOTIFY.
fn watch(h: &mut Harness, presentity: &str) -> Request {
    // A watcher of the presentity's own domain: allowed by default.
    let domain = presentity.rsplit('@').next().unwrap().to_string();
    let watcher = format!("sip:watcher@{domain}");
    let sub = subscribe(h, presentity, "presence", &watcher, CAROL_CONTACT);
    let outs = h.peer_request(sub);
    assert_eq!(final_status(&outs), 200);
    let n = one_request(&outs, Method::Notify);
    h.answer(&n, 200, |_| {});
    n
}

/// The PIDF bodies of the NOTIFYs among `outs` (answered 200).
fn notified(h: &mut Harness, outs: &[Output]) -> Vec<String> {
    let bodies = requests(outs, Method::Notify)
        .iter()
        .map(body_text)
        .collect();
    ack_notifies(h, outs);
    bodies
}

fn usrloc_views(h: &mut Harness) -> Vec<xmpp_sip_gateway::core::admin_api::UsrlocView> {
    let (_, outs) = h.admin(AdminCommand::ListUsrloc);
    match admin_replies(&outs).pop() {
        Some((_, AdminReply::Usrloc(v))) => v,
        other => panic!("no usrloc listing: {other:?}"),
    }
}

#[test]
fn registered_phone_is_published_open_with_one_tuple_per_binding() {
    let mut h = harness();
    watch(&mut h, BOB);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 1);
    assert_eq!(final_status(&outs), 200);
    let bodies = notified(&mut h, &outs);
    let last = bodies.last().expect("a NOTIFY after the REGISTER");
    assert_eq!(basics(last), ["open"]);
    assert_eq!(contacts(last), ["sip:bob@192.0.2.1:5060"]);

    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.2:5060", 600, "c2", 1);
    let bodies = notified(&mut h, &outs);
    let last = bodies.last().expect("a NOTIFY for the second binding");
    assert_eq!(basics(last), ["open", "open"]);
    let mut c = contacts(last);
    c.sort();
    assert_eq!(c, ["sip:bob@192.0.2.1:5060", "sip:bob@192.0.2.2:5060"]);
}

#[test]
fn tuple_ids_stay_the_same_when_a_binding_is_refreshed() {
    let mut h = harness();
    watch(&mut h, BOB);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 1);
    let first = notified(&mut h, &outs).pop().unwrap();
    h.advance(secs(300));
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 2);
    // Same binding, same document: watchers are not notified again.
    assert!(notified(&mut h, &outs).is_empty(), "a refresh re-published");
    let id = |b: &str| {
        b.split("tuple id='")
            .nth(1)
            .map(|s| s[..s.find('\'').unwrap()].to_string())
    };
    assert!(id(&first).is_some_and(|i| i.starts_with("ul-")), "{first}");
}

#[test]
fn last_binding_expiring_publishes_closed_then_removes_the_publication_after_linger() {
    let mut h = harness();
    watch(&mut h, BOB);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 60, "c1", 1);
    notified(&mut h, &outs);
    // kamailio#3273: Kamailio publishes nothing on expiry; we publish closed at once.
    let outs = h.advance(secs(60));
    let bodies = notified(&mut h, &outs);
    let last = bodies.last().expect("a NOTIFY when the binding expired");
    assert_eq!(basics(last), ["closed"], "{last}");
    assert_eq!(contacts(last), ["sip:bob@192.0.2.1:5060"]);
    assert_eq!(usrloc_views(&mut h)[0].state, "closed");

    let outs = h.advance(secs(31));
    let bodies = notified(&mut h, &outs);
    let last = bodies
        .last()
        .expect("a NOTIFY when the publication was removed");
    assert!(basics(last).is_empty(), "no tuples left: {last}");
    assert!(usrloc_views(&mut h).is_empty());
}

#[test]
fn unregistering_the_last_binding_publishes_closed() {
    let mut h = harness();
    watch(&mut h, BOB);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 1);
    notified(&mut h, &outs);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 0, "c1", 2);
    assert_eq!(final_status(&outs), 200);
    let last = notified(&mut h, &outs)
        .pop()
        .expect("a NOTIFY after the unregister");
    assert_eq!(basics(&last), ["closed"]);
}

#[test]
fn registering_again_while_closed_reopens_the_publication() {
    let mut h = harness();
    watch(&mut h, BOB);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 1);
    notified(&mut h, &outs);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 0, "c1", 2);
    notified(&mut h, &outs);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 3);
    let last = notified(&mut h, &outs).pop().unwrap();
    assert_eq!(basics(&last), ["open"]);
    // The linger timer of the closed state no longer removes anything.
    let outs = h.advance(secs(40));
    assert!(notified(&mut h, &outs).is_empty());
    assert_eq!(usrloc_views(&mut h)[0].state, "open");
}

#[test]
fn a_phone_publishing_its_own_presence_wins_over_the_derived_tuple_of_its_device() {
    let mut h = harness();
    watch(&mut h, BOB);
    for (c, id) in [
        ("sip:bob@192.0.2.1:5060", "c1"),
        ("sip:bob@192.0.2.2:5060", "c2"),
    ] {
        let outs = registered(&mut h, BOB, c, 600, id, 1);
        notified(&mut h, &outs);
    }
    let mut p = base(&mut h, Method::Publish, BOB, BOB, BOB);
    p.headers.push("Event", "presence");
    p.headers.push("Expires", "600");
    p.headers.push("Content-Type", "application/pidf+xml");
    p.body = "<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:bob@sip.test'>\
<tuple id='desk'><status><basic>closed</basic></status><contact>sip:bob@192.0.2.1:5060</contact>\
<note>In a meeting</note></tuple></presence>"
        .as_bytes()
        .to_vec();
    let outs = h.peer_request(p);
    assert_eq!(final_status(&outs), 200);
    let last = notified(&mut h, &outs).pop().unwrap();
    // Device 1 is what it published (closed); device 2 keeps its derived open tuple.
    assert_eq!(contacts(&last).len(), 2, "{last}");
    assert!(last.contains("tuple id='desk'"), "{last}");
    assert_eq!(
        basics(&last).iter().filter(|b| *b == "open").count(),
        1,
        "{last}"
    );
    assert!(last.contains("In a meeting"));
}

#[test]
fn aors_outside_the_selection_are_not_published() {
    let mut h = harness_with(
        sources(),
        UsrlocConfig {
            domains: Vec::new(),
            patterns: vec!["sip:desk-*@sip.test".into()],
            ..usrloc_config()
        },
    );
    watch(&mut h, BOB);
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 1);
    assert_eq!(final_status(&outs), 200);
    assert!(notified(&mut h, &outs).is_empty());
    let desk = "sip:desk-7@sip.test";
    watch(&mut h, desk);
    let outs = registered(&mut h, desk, "sip:desk-7@192.0.2.7", 600, "c7", 1);
    assert_eq!(basics(&notified(&mut h, &outs).pop().unwrap()), ["open"]);
}

#[test]
fn entity_prefix_names_the_pidf_entity_of_the_published_document() {
    let mut h = harness_with(
        RegistrarModuleConfig {
            copy_domains: vec!["remote.test".into()],
            ..sources()
        },
        UsrlocConfig {
            domains: vec!["remote.test".into()],
            entity_prefix: Some("pres".into()),
            ..usrloc_config()
        },
    );
    let outs = registered(
        &mut h,
        "sip:erin@remote.test",
        "sip:erin@192.0.2.5",
        120,
        "e1",
        1,
    );
    let publish = one_request(&outs, Method::Publish);
    assert_eq!(publish.uri, "sip:erin@remote.test");
    assert!(
        body_text(&publish).contains("entity='pres:erin@remote.test'"),
        "{}",
        body_text(&publish)
    );
}

#[test]
fn default_domain_completes_an_aor_reported_without_one() {
    let mut h = harness_with(
        reg_event_sources(),
        UsrlocConfig {
            default_domain: Some("sip.test".into()),
            ..usrloc_config()
        },
    );
    let sub = accept_reg_subscribe(&mut h);
    watch(&mut h, REG_AOR);
    // A registrar without domains reports `sip:carol` for the subscribed sip:carol@sip.test.
    let body = reginfo(0, &[("sip:carol@192.0.2.3", "active", 300)])
        .replace(&format!("aor='{REG_AOR}'"), "aor='sip:carol'");
    let outs = reg_notify(&mut h, &sub, 1, &body);
    assert_eq!(final_status(&outs), 200);
    let last = notified(&mut h, &outs)
        .pop()
        .expect("carol published under sip:carol@sip.test");
    assert_eq!(basics(&last), ["open"]);
    assert_eq!(usrloc_views(&mut h)[0].aor, REG_AOR);
}

#[test]
fn register_copy_from_a_trusted_proxy_is_mirrored_answered_200_and_published() {
    let mut h = harness_with(
        sources(),
        UsrlocConfig {
            domains: Vec::new(),
            ..usrloc_config()
        },
    );
    let dave = "sip:dave@pbx.test";
    watch(&mut h, dave);
    // Not selected by the config, and no mark: mirrored but not published.
    let outs = registered(&mut h, dave, "sip:dave@192.0.2.4", 120, "d1", 1);
    assert_eq!(final_status(&outs), 200);
    assert!(notified(&mut h, &outs).is_empty());
    let (_, outs) = h.admin(AdminCommand::ListBindings {
        aor: Some(dave.into()),
    });
    match admin_replies(&outs).pop() {
        Some((_, AdminReply::Bindings(v))) => {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].source, "copy");
        }
        other => panic!("{other:?}"),
    }
    // The proxy marks the next copy (pua_set_publish): now it is published.
    let mut marked = register(&mut h, dave, "sip:dave@192.0.2.4", 120, "d1", 2);
    marked.headers.push("X-Publish", "yes");
    let outs = h.peer_request(marked);
    assert_eq!(final_status(&outs), 200);
    assert_eq!(basics(&notified(&mut h, &outs).pop().unwrap()), ["open"]);
    assert!(usrloc_views(&mut h)[0].marked);
}

#[test]
fn register_copy_from_an_untrusted_peer_is_refused_403_and_stores_nothing() {
    let mut h = harness();
    let req = register(
        &mut h,
        "sip:dave@pbx.test",
        "sip:dave@192.0.2.4",
        120,
        "d1",
        1,
    );
    let outs = h.input(Input::Sip {
        from: stranger(),
        message: xmpp_sip_gateway::core::sip::SipMessage::Request(req),
    });
    assert_eq!(final_status(&outs), 403);
    assert!(store_ops(&outs).is_empty(), "{outs:#?}");
}

#[test]
fn malformed_contact_or_expires_in_a_copy_is_400_and_stores_nothing() {
    let mut h = harness();
    let mut bad = register(
        &mut h,
        "sip:dave@pbx.test",
        "sip:dave@192.0.2.4",
        120,
        "d1",
        1,
    );
    bad.headers.set("Contact", "<not a uri");
    let outs = h.peer_request(bad);
    assert_eq!(final_status(&outs), 400);
    assert!(store_ops(&outs).is_empty());
    let mut bad = register(
        &mut h,
        "sip:dave@pbx.test",
        "sip:dave@192.0.2.4",
        120,
        "d2",
        1,
    );
    bad.headers.set("Contact", "<sip:dave@192.0.2.4>;q=7");
    let outs = h.peer_request(bad);
    assert_eq!(final_status(&outs), 400);
    assert!(store_ops(&outs).is_empty());
}

#[test]
fn copies_are_mirrored_with_their_own_expiry_even_below_the_registrar_minimum() {
    let mut h = harness_with(
        sources(),
        UsrlocConfig {
            domains: vec!["pbx.test".into()],
            ..usrloc_config()
        },
    );
    let dave = "sip:dave@pbx.test";
    watch(&mut h, dave);
    // The proxy granted 20 s; the embedded minimum (60 s) does not apply to a copy.
    let outs = registered(&mut h, dave, "sip:dave@192.0.2.4", 20, "d1", 1);
    assert_eq!(final_status(&outs), 200);
    assert_eq!(basics(&notified(&mut h, &outs).pop().unwrap()), ["open"]);
    let outs = h.advance(secs(20));
    assert_eq!(basics(&notified(&mut h, &outs).pop().unwrap()), ["closed"]);
}

fn reg_event_sources() -> RegistrarModuleConfig {
    RegistrarModuleConfig {
        reg_event: RegEventConfig {
            aors: vec![REG_AOR.into()],
            expires: 600,
            watcher: "sip:gateway@127.0.0.1".into(),
            server: None,
        },
        ..sources()
    }
}

fn reginfo(version: u32, contacts: &[(&str, &str, u32)]) -> String {
    let mut s = format!(
        "<?xml version='1.0'?><reginfo xmlns='urn:ietf:params:xml:ns:reginfo' version='{version}' state='full'>\
<registration aor='{REG_AOR}' id='0x1' state='{}'>",
        if contacts.is_empty() { "terminated" } else { "active" }
    );
    for (uri, state, expires) in contacts {
        s += &format!(
            "<contact id='0x2' state='{state}' event='registered' expires='{expires}' callid='cc' cseq='1'><uri>{uri}</uri></contact>"
        );
    }
    s + "</registration></reginfo>"
}

/// The gateway's `reg` SUBSCRIBE, accepted; returns it.
fn accept_reg_subscribe(h: &mut Harness) -> Request {
    let outs = h.input(Input::Restore(Vec::new()));
    let sub = one_request(&outs, Method::Subscribe);
    assert_eq!(sub.headers.get("Event"), Some("reg"));
    assert_eq!(sub.uri, REG_AOR);
    assert_eq!(sub.headers.get("Accept"), Some("application/reginfo+xml"));
    h.answer(&sub, 200, |r| r.headers.push("Expires", "600"));
    sub
}

fn reg_notify(h: &mut Harness, sub: &Request, cseq: u32, body: &str) -> Vec<Output> {
    let mut n = h.notify_with_event(sub, "kam", cseq, "active;expires=600", Some(body), "reg");
    n.headers.set("Content-Type", "application/reginfo+xml");
    h.peer_request(n)
}

#[test]
fn reg_event_bindings_are_published_and_a_contact_missing_from_a_full_document_is_gone() {
    let mut h = harness_with(reg_event_sources(), usrloc_config());
    let sub = accept_reg_subscribe(&mut h);
    watch(&mut h, REG_AOR);
    let outs = reg_notify(
        &mut h,
        &sub,
        1,
        &reginfo(
            0,
            &[
                ("sip:carol@192.0.2.3", "active", 300),
                ("sip:carol@192.0.2.4", "active", 300),
            ],
        ),
    );
    assert_eq!(final_status(&outs), 200);
    assert_eq!(
        basics(&notified(&mut h, &outs).pop().unwrap()),
        ["open", "open"]
    );
    // Kamailio lists an unregistered contact as terminated once, an expired one not at all.
    let outs = reg_notify(
        &mut h,
        &sub,
        2,
        &reginfo(
            1,
            &[
                ("sip:carol@192.0.2.3", "terminated", 300),
                ("sip:carol@192.0.2.4", "active", 300),
            ],
        ),
    );
    let last = notified(&mut h, &outs).pop().unwrap();
    assert_eq!(contacts(&last), ["sip:carol@192.0.2.4"]);
    let outs = reg_notify(&mut h, &sub, 3, &reginfo(2, &[]));
    assert_eq!(basics(&notified(&mut h, &outs).pop().unwrap()), ["closed"]);
}

#[test]
fn reg_event_notify_that_is_not_reginfo_is_400_and_changes_nothing() {
    let mut h = harness_with(reg_event_sources(), usrloc_config());
    let sub = accept_reg_subscribe(&mut h);
    let outs = reg_notify(
        &mut h,
        &sub,
        1,
        &reginfo(0, &[("sip:carol@192.0.2.3", "active", 300)]),
    );
    assert_eq!(final_status(&outs), 200);
    let outs = reg_notify(
        &mut h,
        &sub,
        2,
        "<reginfo xmlns='urn:ietf:params:xml:ns:reginfo'/>",
    );
    assert_eq!(final_status(&outs), 400);
    assert_eq!(usrloc_views(&mut h)[0].state, "open");
}

#[test]
fn a_resent_reginfo_document_keeps_the_binding_expiry() {
    let mut h = harness_with(reg_event_sources(), usrloc_config());
    let sub = accept_reg_subscribe(&mut h);
    let doc = reginfo(0, &[("sip:carol@192.0.2.3", "active", 300)]);
    reg_notify(&mut h, &sub, 1, &doc);
    h.advance(secs(200));
    // The same document again (after a re-SUBSCRIBE): its expires=300 is 200 s stale.
    reg_notify(&mut h, &sub, 2, &doc);
    h.advance(secs(99));
    assert_eq!(usrloc_views(&mut h)[0].state, "open");
    h.advance(secs(2));
    assert_eq!(usrloc_views(&mut h)[0].state, "closed");
}

#[test]
fn after_a_restart_nothing_is_published_twice_and_lapsed_bindings_close_at_once() {
    let mut h = harness();
    h.input(Input::Restore(Vec::new()));
    registered(&mut h, BOB, "sip:bob@192.0.2.1:5060", 600, "c1", 1);
    let dave = "sip:desk-1@sip.test";
    registered(&mut h, dave, "sip:desk-1@192.0.2.9", 60, "c9", 1);
    let rows = rows_after(&store_ops(&h.all));

    // Restart before anything lapsed: no PUBLISH-side change, no new publication.
    let mut h2 = harness();
    h2.clock.set(h.now() + secs(10));
    let outs = h2.input(Input::Restore(rows.clone()));
    assert!(
        !store_ops(&outs)
            .iter()
            .any(|op| format!("{op:?}").contains("presentity_publications")
                && format!("{op:?}").contains("Put")),
        "restored publications were published again: {outs:#?}"
    );
    assert_eq!(usrloc_views(&mut h2).len(), 2);

    // Restart after desk-1's binding lapsed: closed at once.
    let mut h3 = harness();
    h3.clock.set(h.now() + secs(61));
    h3.input(Input::Restore(rows));
    let views = usrloc_views(&mut h3);
    let desk = views
        .iter()
        .find(|v| v.aor == dave)
        .expect("desk-1 still listed");
    assert_eq!(desk.state, "closed");
    let bob = views.iter().find(|v| v.aor == BOB).unwrap();
    assert_eq!(bob.state, "open");
}

#[test]
fn an_aor_of_a_domain_not_served_here_is_published_to_the_presence_server() {
    let mut h = harness_with(
        RegistrarModuleConfig {
            copy_domains: vec!["remote.test".into()],
            ..sources()
        },
        UsrlocConfig {
            domains: vec!["remote.test".into()],
            ..usrloc_config()
        },
    );
    let erin = "sip:erin@remote.test";
    let outs = registered(&mut h, erin, "sip:erin@192.0.2.5", 120, "e1", 1);
    let publish = one_request(&outs, Method::Publish);
    assert_eq!(publish.uri, erin);
    assert_eq!(basics(&body_text(&publish)), ["open"]);
    h.answer(&publish, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "3600");
    });
    let outs = h.advance(secs(120));
    let closed = one_request(&outs, Method::Publish);
    assert_eq!(closed.headers.get("SIP-If-Match"), Some("e1"));
    assert_eq!(basics(&body_text(&closed)), ["closed"]);
}
