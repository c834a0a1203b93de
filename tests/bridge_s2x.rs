//! S2X in notifier mode: a SIP user watches an XMPP user; the gateway is the notifier
//! (RFC 8048 §5.3, standards.md §16 groups B, D, E).

mod bridge_support;
mod support;

use bridge_support::*;
use support::*;
use xmpp_sip_gateway::core::engine::{Input, Output};
use xmpp_sip_gateway::core::modules::bridge::SipSideMode;
use xmpp_sip_gateway::core::presence::pidf::parse_pidf;
use xmpp_sip_gateway::core::presence::{Basic, Show};
use xmpp_sip_gateway::core::sip::{Method, Request};
use xmpp_sip_gateway::core::xmpp::stanza::PresenceType;

/// Ben's phone subscribes to Anna; returns the outputs.
fn phone_subscribes(h: &mut support::Harness, call_id: &str) -> Vec<Output> {
    let b = h.branch();
    let outs = from_phone(
        h,
        subscribe_from_phone(BEN_URI, ANNA_URI, call_id, None, &b),
    );
    phone_answers(h, outs)
}

fn notifies(outs: &[Output]) -> Vec<Request> {
    requests(outs, Method::Notify)
}

fn state(n: &Request) -> String {
    header(n, "Subscription-State").unwrap().to_string()
}

/// Anna approves; returns the outputs.
fn approve(h: &mut support::Harness) -> Vec<Output> {
    let outs = stanza_in(h, pres(ANNA, BEN, PresenceType::Subscribed));
    phone_answers(h, outs)
}

/// A stanza in, the phone answering every NOTIFY it causes.
fn xmpp(
    h: &mut support::Harness,
    p: xmpp_sip_gateway::core::xmpp::stanza::Presence,
) -> Vec<Output> {
    let outs = stanza_in(h, p);
    phone_answers(h, outs)
}

/// Case 34.
#[test]
fn sip_subscribe_gets_200_pending_notify_and_xmpp_subscribe() {
    let mut h = harness(SipSideMode::Notifier);
    let outs = phone_subscribes(&mut h, "c1");
    let ok = one_response(&outs);
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("To").unwrap().contains("tag="));
    assert!(ok.headers.get("Contact").is_some());
    assert_eq!(ok.headers.get("Expires"), Some("3600"));
    let n = one_request(&outs, Method::Notify);
    assert!(state(&n).starts_with("pending;expires="), "{}", state(&n));
    assert!(n.body.is_empty());
    let s = of_kind(&outs, PresenceType::Subscribe);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].from.to_string(), BEN);
    assert_eq!(s[0].to.to_string(), ANNA);
}

/// Case 35.
#[test]
fn xmpp_subscribed_activates_the_dialog() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    let outs = approve(&mut h);
    let n = one_request(&outs, Method::Notify);
    assert!(state(&n).starts_with("active;expires="), "{}", state(&n));
}

/// Case 36.
#[test]
fn xmpp_unsubscribed_terminates_with_rejected() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    let outs = xmpp(&mut h, pres(ANNA, BEN, PresenceType::Unsubscribed));
    let n = one_request(&outs, Method::Notify);
    assert_eq!(state(&n), "terminated;reason=rejected");
    assert!(n.body.is_empty());
}

/// Cases 45 and 47: an XMPP presence becomes a full-state PIDF NOTIFY.
#[test]
fn presence_becomes_pidf_with_show_note_and_priority() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    approve(&mut h);
    let mut p = pres("anna@xmpp.example/desk", BEN, PresenceType::Available);
    p.show = Some(Show::Away);
    p.statuses = vec![(None, "Lunch".into())];
    p.priority = Some(5);
    p.lang = Some("en".into());
    let outs = xmpp(&mut h, p);
    let n = one_request(&outs, Method::Notify);
    assert_eq!(header(&n, "Content-Type"), Some("application/pidf+xml"));
    assert_eq!(header(&n, "Content-Language"), Some("en"));
    let doc = parse_pidf(&n.body).unwrap();
    let t = &doc.tuples[0];
    assert_eq!(t.id, "ID-desk");
    assert_eq!(t.basic, Some(Basic::Open));
    assert_eq!(t.show, Some(Show::Away));
    assert_eq!(t.notes[0].text, "Lunch");
    assert_eq!(t.notes[0].lang.as_deref(), Some("en"));
    assert_eq!(t.contact.as_ref().unwrap().priority_milli, Some(39));
    let p1 = pres("anna@xmpp.example/1phone", BEN, PresenceType::Available);
    let n = one_request(&xmpp(&mut h, p1), Method::Notify);
    let doc = parse_pidf(&n.body).unwrap();
    assert_eq!(doc.tuples.len(), 2, "full state: one tuple per resource");
    assert!(doc.tuples.iter().any(|t| t.id == "ID-1phone"));
}

/// Case 48.
#[test]
fn unavailable_resource_becomes_closed_tuple() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    approve(&mut h);
    xmpp(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    let outs = xmpp(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Unavailable),
    );
    let doc = parse_pidf(&one_request(&outs, Method::Notify).body).unwrap();
    assert_eq!(doc.tuples[0].id, "ID-desk");
    assert_eq!(doc.tuples[0].basic, Some(Basic::Closed));
}

/// Case 49.
#[test]
fn xmpp_subscribe_is_never_a_notify() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    approve(&mut h);
    let outs = stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    assert!(notifies(&outs).is_empty());
}

/// Case 41.
#[test]
fn expires_zero_in_dialog_sends_closed_timeout_notify_and_unavailable() {
    let mut h = harness(SipSideMode::Notifier);
    let outs = phone_subscribes(&mut h, "c1");
    let ok = one_response(&outs);
    approve(&mut h);
    let mut un = subscribe_from_phone(BEN_URI, ANNA_URI, "c1", Some(0), &h.branch());
    un.headers.set("To", ok.headers.get("To").unwrap());
    un.headers.set("CSeq", "2 SUBSCRIBE");
    let outs = from_phone(&mut h, un);
    let outs = phone_answers(&mut h, outs);
    assert_eq!(one_response(&outs).status, 200);
    let n = one_request(&outs, Method::Notify);
    assert_eq!(state(&n), "terminated;reason=timeout");
    let doc = parse_pidf(&n.body).unwrap();
    assert!(doc.tuples.iter().all(|t| t.basic == Some(Basic::Closed)));
    let u = of_kind(&outs, PresenceType::Unavailable);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].from.to_string(), BEN);
    assert!(of_kind(&outs, PresenceType::Unsubscribe).is_empty());
}

/// Case 42.
#[test]
fn poll_without_state_sends_an_xmpp_probe() {
    let mut h = harness(SipSideMode::Notifier);
    let b = h.branch();
    let outs = from_phone(
        &mut h,
        subscribe_from_phone(BEN_URI, ANNA_URI, "p1", Some(0), &b),
    );
    assert_eq!(one_response(&outs).status, 200);
    assert!(state(&one_request(&outs, Method::Notify)).starts_with("terminated;reason=timeout"));
    let probes = of_kind(&outs, PresenceType::Probe);
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].from.to_string(), BEN);
    assert_eq!(probes[0].to.to_string(), ANNA);
}

/// Case 14: a sips: target is never translated.
#[test]
fn sips_target_is_rejected_without_xmpp() {
    let mut h = harness(SipSideMode::Notifier);
    let b = h.branch();
    let outs = from_phone(
        &mut h,
        subscribe_from_phone(BEN_URI, "sips:anna@xmpp.example", "s1", None, &b),
    );
    assert!(one_response(&outs).status >= 400);
    assert!(stanzas(&outs).is_empty());
}

#[test]
fn unknown_xmpp_domain_gets_404() {
    let mut h = harness(SipSideMode::Notifier);
    let b = h.branch();
    let outs = from_phone(
        &mut h,
        subscribe_from_phone(BEN_URI, "sip:zed@elsewhere.example", "s1", None, &b),
    );
    assert_eq!(one_response(&outs).status, 404);
    assert!(stanzas(&outs).is_empty());
}

/// SylkServer's rule (product.md): several SIP dialogs of one watcher share one XMPP
/// subscription.
#[test]
fn two_dialogs_of_one_watcher_ask_the_xmpp_user_once() {
    let mut h = harness(SipSideMode::Notifier);
    let a = phone_subscribes(&mut h, "c1");
    let b = phone_subscribes(&mut h, "c2");
    assert_eq!(
        of_kind(&a, PresenceType::Subscribe).len() + of_kind(&b, PresenceType::Subscribe).len(),
        1
    );
    let outs = approve(&mut h);
    assert_eq!(notifies(&outs).len(), 2, "both dialogs activated");
}

/// An authorized watcher who subscribes again is active at once, with the cached state.
#[test]
fn authorized_watcher_is_active_at_once_with_cached_state() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    approve(&mut h);
    xmpp(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    let outs = phone_subscribes(&mut h, "c2");
    let n = one_request(&outs, Method::Notify);
    assert!(state(&n).starts_with("active"));
    assert!(!n.body.is_empty());
    assert!(of_kind(&outs, PresenceType::Subscribe).is_empty());
}

/// After (re)connecting, the gateway probes every XMPP user with an S2X authorization.
#[test]
fn link_up_probes_authorized_users() {
    let mut h = harness(SipSideMode::Notifier);
    phone_subscribes(&mut h, "c1");
    approve(&mut h);
    let mut outs = h.input(Input::XmppLinkUp);
    outs.extend(h.advance(secs(1)));
    let probes = of_kind(&outs, PresenceType::Probe);
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].to.to_string(), ANNA);
}

/// Persistence: after a restart the SIP watcher keeps getting NOTIFYs on its dialog.
#[test]
fn restart_keeps_notifying_the_existing_dialog() {
    let mut h = harness(SipSideMode::Notifier);
    let first = phone_subscribes(&mut h, "c1");
    approve(&mut h);
    let rows = support::Harness::rows_from_puts(&h.all);
    let mut h2 = harness(SipSideMode::Notifier);
    h2.input(Input::Restore(rows));
    let outs = stanza_in(
        &mut h2,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    let n = one_request(&outs, Method::Notify);
    assert_eq!(header(&n, "Call-ID"), Some("c1"));
    assert!(state(&n).starts_with("active"));
    let _ = first;
}

/// Directed presence to a SIP user without an authorization is not mapped.
#[test]
fn directed_presence_without_authorization_is_not_mapped() {
    let mut h = harness(SipSideMode::Notifier);
    let outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    assert!(notifies(&outs).is_empty());
    assert!(stanzas(&outs).is_empty());
}

#[test]
fn component_answers_disco_info() {
    use xmpp_sip_gateway::core::xmpp::stanza::{Element, Iq, IqType, Stanza};
    let mut h = harness(SipSideMode::Notifier);
    let iq = Iq {
        from: jid("anna@xmpp.example/desk"),
        to: jid("sip.example"),
        id: "d1".into(),
        kind: IqType::Get,
        payload: Some(Element::new(
            "query",
            "http://jabber.org/protocol/disco#info",
        )),
        error: None,
    };
    let outs = h.input(Input::Stanza(Stanza::Iq(iq)));
    let s = stanzas(&outs);
    assert_eq!(s.len(), 1);
    assert!(matches!(&s[0], Stanza::Iq(r) if r.kind == IqType::Result && r.id == "d1"));
}

/// After (re)connecting, the probes to many authorized users are paced at the restore
/// rate (a batch at once, the rest later), and every user is probed once.
#[test]
fn link_up_probes_are_paced_and_reach_every_user() {
    let mut h = harness(SipSideMode::Notifier);
    let users: Vec<String> = (0..120).map(|i| format!("u{i}@xmpp.example")).collect();
    for (i, user) in users.iter().enumerate() {
        let b = h.branch();
        let outs = from_phone(
            &mut h,
            subscribe_from_phone(BEN_URI, &format!("sip:{user}"), &format!("c{i}"), None, &b),
        );
        phone_answers(&mut h, outs);
        let outs = stanza_in(&mut h, pres(user, BEN, PresenceType::Subscribed));
        phone_answers(&mut h, outs);
    }
    let first = of_kind(&h.input(Input::XmppLinkUp), PresenceType::Probe).len()
        + of_kind(&h.advance(secs(0)), PresenceType::Probe).len();
    assert!(first > 0 && first < users.len(), "{first} probes at once");
    let mut probed = first;
    for _ in 0..60 {
        probed += of_kind(&h.advance(secs(1)), PresenceType::Probe).len();
    }
    assert_eq!(probed, users.len());
}
