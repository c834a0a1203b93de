//! X2S: an XMPP user watches a SIP user; the gateway is the SIP subscriber
//! (RFC 8048 §5.2, standards.md §16 groups C, E, F, J).

mod bridge_support;
mod support;

use bridge_support::*;
use support::*;
use xmpp_sip_gateway::core::engine::Input;
use xmpp_sip_gateway::core::modules::bridge::{BridgeModule, SipSideMode};
use xmpp_sip_gateway::core::presence::Show;
use xmpp_sip_gateway::core::sip::{Method, Request};
use xmpp_sip_gateway::core::xmpp::stanza::{Condition, PresenceType};

const PIDF_BEN_OPEN: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
<tuple id='t1'><status><basic>open</basic></status>\
<contact priority='0.5'>sip:ben@sip.example;gr=ph7</contact></tuple></presence>";

const PIDF_BEN_CLOSED: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
<tuple id='t1'><status><basic>closed</basic></status>\
<contact>sip:ben@sip.example;gr=ph7</contact></tuple></presence>";

/// Anna subscribes to Ben; returns the SUBSCRIBE that went out.
fn subscribe(h: &mut support::Harness) -> Request {
    let outs = stanza_in(h, pres(ANNA, BEN, PresenceType::Subscribe));
    assert!(
        stanzas(&outs).is_empty(),
        "no XMPP output on subscribe: {outs:#?}"
    );
    one_request(&outs, Method::Subscribe)
}

/// Subscribe, 200, active NOTIFY with Ben open; returns the SUBSCRIBE.
fn active(h: &mut support::Harness) -> Request {
    let sub = subscribe(h);
    h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
    let n = h.notify(&sub, "ps1", 1, "active;expires=3600", Some(PIDF_BEN_OPEN));
    h.peer_request(n);
    sub
}

/// Case 15.
#[test]
fn xmpp_subscribe_sends_presence_subscribe_without_xmpp_output() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = subscribe(&mut h);
    assert_eq!(sub.uri, BEN_URI);
    assert_eq!(header(&sub, "Event"), Some("presence"));
    assert_eq!(header(&sub, "Accept"), Some("application/pidf+xml"));
    assert!(header(&sub, "Expires").is_some());
    assert!(header(&sub, "From").unwrap().contains(ANNA_URI));
    assert!(header(&sub, "From").unwrap().contains("tag="));
    assert!(!header(&sub, "To").unwrap().contains("tag="));
    assert_eq!(header(&sub, "Max-Forwards"), Some("70"));
    assert!(header(&sub, "Contact").is_some());
}

/// Cases 16 and 17.
#[test]
fn ok_and_pending_notify_keep_the_pair_neutral() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = subscribe(&mut h);
    let outs = h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
    assert!(stanzas(&outs).is_empty());
    let n = h.notify(&sub, "ps1", 1, "pending;expires=3600", None);
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    assert!(stanzas(&outs).is_empty(), "pending is neutral: {outs:#?}");
}

/// Case 18.
#[test]
fn first_active_notify_sends_subscribed_then_presence_per_tuple() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = subscribe(&mut h);
    h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
    let n = h.notify(&sub, "ps1", 1, "active;expires=499", Some(PIDF_BEN_OPEN));
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    let p = presences(&outs);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(p[0].kind, PresenceType::Subscribed);
    assert_eq!(p[0].from.to_string(), BEN);
    assert_eq!(p[0].to.to_string(), ANNA);
    assert_eq!(p[1].kind, PresenceType::Available);
    assert_eq!(p[1].from.to_string(), "ben@sip.example/ph7");
    // Case 55: priority 0.5 → 64.
    assert_eq!(p[1].priority, Some(64));
    // A refresh is scheduled before 499 s.
    let (refresh, waited) = h.next_request(Method::Subscribe, 499);
    assert!(waited < 499);
    assert_eq!(header(&refresh, "Call-ID"), header(&sub, "Call-ID"));
}

/// Case 19.
#[test]
fn second_active_notify_sends_no_second_subscribed() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "active;expires=3000", Some(PIDF_BEN_OPEN));
    let outs = h.peer_request(n);
    assert!(of_kind(&outs, PresenceType::Subscribed).is_empty());
}

/// Case 20, three variants.
#[test]
fn final_403_489_603_send_unsubscribed_and_no_retry() {
    for code in [403, 489, 603] {
        let mut h = harness(SipSideMode::Notifier);
        let sub = subscribe(&mut h);
        let outs = h.answer(&sub, code, |_| {});
        let u = of_kind(&outs, PresenceType::Unsubscribed);
        assert_eq!(u.len(), 1, "{code}: {outs:#?}");
        assert_eq!(u[0].from.to_string(), BEN);
        assert_eq!(u[0].to.to_string(), ANNA);
        let later = h.advance(secs(1200));
        assert!(
            requests(&later, Method::Subscribe).is_empty(),
            "{code}: retried"
        );
    }
}

/// Case 24.
#[test]
fn terminated_rejected_sends_unsubscribed_without_resubscribe() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "terminated;reason=rejected", None);
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    assert_eq!(of_kind(&outs, PresenceType::Unsubscribed).len(), 1);
    assert!(requests(&h.advance(secs(1200)), Method::Subscribe).is_empty());
}

/// Case 25.
#[test]
fn terminated_deactivated_resubscribes_at_once_keeping_authorization() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "terminated;reason=deactivated", None);
    let mut outs = h.peer_request(n);
    outs.extend(h.advance(secs(1)));
    let again = one_request(&outs, Method::Subscribe);
    assert_ne!(header(&again, "Call-ID"), header(&sub, "Call-ID"));
    assert!(of_kind(&outs, PresenceType::Unsubscribed).is_empty());
}

/// Case 27.
#[test]
fn terminated_timeout_never_unsubscribes() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "terminated;reason=timeout", None);
    let mut outs = h.peer_request(n);
    outs.extend(h.advance(secs(5)));
    assert!(
        !requests(&outs, Method::Subscribe).is_empty(),
        "re-SUBSCRIBE expected"
    );
    assert!(of_kind(&outs, PresenceType::Unsubscribed).is_empty());
    assert!(of_kind(&outs, PresenceType::Unsubscribe).is_empty());
}

/// Case 28.
#[test]
fn xmpp_unsubscribe_sends_expires_zero_in_dialog_then_unsubscribed() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let outs = stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Unsubscribe));
    let un = one_request(&outs, Method::Subscribe);
    assert_eq!(header(&un, "Expires"), Some("0"));
    assert_eq!(header(&un, "Call-ID"), header(&sub, "Call-ID"));
    assert_eq!(cseq_of(&un), cseq_of(&sub) + 1);
    assert!(
        of_kind(&outs, PresenceType::Unsubscribed).is_empty(),
        "only after the 200"
    );
    let outs = h.answer(&un, 200, |r| r.headers.push("Expires", "0"));
    assert_eq!(of_kind(&outs, PresenceType::Unsubscribed).len(), 1);
}

/// Case 50.
#[test]
fn closed_pidf_becomes_unavailable() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "active;expires=3000", Some(PIDF_BEN_CLOSED));
    let outs = h.peer_request(n);
    let u = of_kind(&outs, PresenceType::Unavailable);
    assert_eq!(u.len(), 1, "{outs:#?}");
    assert_eq!(u[0].from.to_string(), "ben@sip.example/ph7");
}

/// Cases 51 and 52: a valid jabber:client show is copied, an invalid one dropped.
#[test]
fn jabber_show_is_copied_and_invalid_show_dropped() {
    let doc = |show: &str| {
        format!(
            "<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
             <tuple id='t1'><status><basic>open</basic><show xmlns='jabber:client'>{show}</show></status>\
             <note>Busy</note></tuple></presence>"
        )
    };
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let mut n = h.notify(&sub, "ps1", 2, "active;expires=3000", Some(&doc("dnd")));
    n.headers.push("Content-Language", "de");
    let p = of_kind(&h.peer_request(n), PresenceType::Available);
    assert_eq!(p[0].show, Some(Show::Dnd));
    assert_eq!(
        p[0].statuses[0],
        (Some("de".to_string()), "Busy".to_string())
    );
    assert_eq!(
        p[0].lang.as_deref(),
        Some("de"),
        "Content-Language → xml:lang"
    );
    let n = h.notify(&sub, "ps1", 3, "active;expires=3000", Some(&doc("busy")));
    let p = of_kind(&h.peer_request(n), PresenceType::Available);
    assert_eq!(p[0].show, None);
}

/// Case 53.
#[test]
fn bodiless_active_notify_changes_nothing() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "active;expires=3000", None);
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    assert!(stanzas(&outs).is_empty(), "{outs:#?}");
}

/// Case 56: a probe whose SUBSCRIBE gets 404 → presence error item-not-found, probe id.
#[test]
fn probe_answered_404_becomes_item_not_found_with_probe_id() {
    let mut h = harness(SipSideMode::Notifier);
    let mut probe = pres(ANNA, BEN, PresenceType::Probe);
    probe.id = Some("pr1".into());
    let outs = stanza_in(&mut h, probe);
    let sub = one_request(&outs, Method::Subscribe);
    let outs = h.answer(&sub, 404, |_| {});
    let e = of_kind(&outs, PresenceType::Error);
    assert_eq!(e.len(), 1, "{outs:#?}");
    assert_eq!(e[0].id.as_deref(), Some("pr1"));
    assert_eq!(
        e[0].error.as_ref().unwrap().condition,
        Condition::ItemNotFound
    );
}

/// Case 57: 503 → internal-server-error, never service-unavailable.
#[test]
fn probe_answered_503_becomes_internal_server_error() {
    let mut h = harness(SipSideMode::Notifier);
    let outs = stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Probe));
    let sub = one_request(&outs, Method::Subscribe);
    let outs = h.answer(&sub, 503, |_| {});
    let e = of_kind(&outs, PresenceType::Error);
    assert_eq!(
        e[0].error.as_ref().unwrap().condition,
        Condition::InternalServerError
    );
}

/// Case 77.
#[test]
fn subscribe_from_unserved_domain_is_forbidden_without_sip() {
    let mut h = harness(SipSideMode::Notifier);
    let outs = stanza_in(
        &mut h,
        pres("eve@other.example", BEN, PresenceType::Subscribe),
    );
    assert!(requests(&outs, Method::Subscribe).is_empty());
    let e = of_kind(&outs, PresenceType::Error);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].error.as_ref().unwrap().condition, Condition::Forbidden);
}

/// Case 78: a NOTIFY for Anna produces stanzas addressed only to Anna.
#[test]
fn notify_reaches_only_its_watcher() {
    let mut h = harness(SipSideMode::Notifier);
    // Carl watches another SIP user; Anna watches Ben.
    stanza_in(
        &mut h,
        pres(
            "carl@xmpp.example",
            "dora@sip.example",
            PresenceType::Subscribe,
        ),
    );
    let sub = active(&mut h);
    let n = h.notify(&sub, "ps1", 2, "active;expires=3000", Some(PIDF_BEN_CLOSED));
    let outs = h.peer_request(n);
    for p in presences(&outs) {
        assert_eq!(p.to.bare(), ANNA, "leaked to {}", p.to);
    }
}

/// Case 79: a probe for an authorized pair without a live dialog creates one (Expires > 0).
#[test]
fn probe_for_authorized_pair_creates_a_dialog() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    // The dialog fails for good (no retry): 481 to a refresh, then 404 to the new one.
    let n = h.notify(&sub, "ps1", 2, "terminated;reason=noresource", None);
    h.peer_request(n);
    let outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Probe),
    );
    let again = one_request(&outs, Method::Subscribe);
    assert_ne!(header(&again, "Expires"), Some("0"));
}

/// Case 80: after a restart, the pair and its dialog survive; the next NOTIFY maps.
#[test]
fn restart_keeps_the_pair_and_its_dialog() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    let rows = support::Harness::rows_from_puts(&h.all);
    let mut h2 = harness(SipSideMode::Notifier);
    h2.input(Input::Restore(rows));
    let n = h2.notify(&sub, "ps1", 5, "active;expires=3000", Some(PIDF_BEN_CLOSED));
    let outs = h2.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    assert_eq!(
        of_kind(&outs, PresenceType::Unavailable).len(),
        1,
        "{outs:#?}"
    );
    assert!(
        of_kind(&outs, PresenceType::Subscribed).is_empty(),
        "authorization was restored"
    );
}

/// Case 3 over a whole scenario: every emitted stanza is from the component domain.
#[test]
fn every_emitted_stanza_is_from_the_component_domain() {
    let mut h = harness(SipSideMode::Notifier);
    let sub = active(&mut h);
    stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Probe));
    let n = h.notify(&sub, "ps1", 2, "terminated;reason=rejected", None);
    h.peer_request(n);
    assert_stanzas_well_addressed(&h);
}

/// Shutdown: `unavailable` from every SIP contact the gateway speaks for.
#[test]
fn shutdown_sends_unavailable_for_each_available_contact() {
    let mut h = harness(SipSideMode::Notifier);
    active(&mut h);
    let outs = h.input(Input::Shutdown);
    let u = of_kind(&outs, PresenceType::Unavailable);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].from.to_string(), "ben@sip.example/ph7");
}

#[test]
fn one_dialog_is_shared_by_the_users_resources() {
    let mut h = harness(SipSideMode::Notifier);
    active(&mut h);
    let outs = stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    assert!(
        requests(&outs, Method::Subscribe).is_empty(),
        "the live dialog is reused"
    );
    assert_eq!(
        of_kind(&outs, PresenceType::Subscribed).len(),
        1,
        "idempotent answer"
    );
    let _ = BridgeModule::new;
}

/// `max_subscriptions_per_user` counts one user's contacts only: past it that user's
/// subscribe gets policy-violation without SIP, while another user can still subscribe.
#[test]
fn per_user_contact_limit_counts_only_that_users_contacts() {
    let mut cfg = bridge_config(SipSideMode::Notifier);
    cfg.max_subscriptions_per_user = 2;
    let mut h =
        support::Harness::with_modules(test_config(), vec![Box::new(BridgeModule::new(cfg))]);
    for c in ["c1@sip.example", "c2@sip.example"] {
        let outs = stanza_in(&mut h, pres(ANNA, c, PresenceType::Subscribe));
        assert_eq!(requests(&outs, Method::Subscribe).len(), 1);
    }
    let outs = stanza_in(
        &mut h,
        pres(ANNA, "c3@sip.example", PresenceType::Subscribe),
    );
    assert!(requests(&outs, Method::Subscribe).is_empty());
    let e = of_kind(&outs, PresenceType::Error);
    assert_eq!(
        e[0].error.as_ref().unwrap().condition,
        Condition::PolicyViolation
    );
    let outs = stanza_in(
        &mut h,
        pres(
            "zoe@xmpp.example",
            "c1@sip.example",
            PresenceType::Subscribe,
        ),
    );
    assert_eq!(requests(&outs, Method::Subscribe).len(), 1);
}

/// After the component link comes back (the XMPP server restarted, so the user's login
/// probe may have bounced while it was down), the SIP contact's known presence is
/// announced to the user again.
#[test]
fn link_up_announces_known_sip_presence_again() {
    let mut h = harness(SipSideMode::Notifier);
    active(&mut h);
    h.input(Input::XmppLinkDown);
    let mut outs = h.input(Input::XmppLinkUp);
    outs.extend(h.advance(secs(1)));
    let avail = of_kind(&outs, PresenceType::Available);
    assert_eq!(avail.len(), 1, "{outs:#?}");
    assert_eq!(avail[0].from.to_string(), format!("{BEN}/ph7"));
    assert_eq!(avail[0].to.to_string(), ANNA);
    assert!(of_kind(&outs, PresenceType::Subscribed).is_empty());
}

/// Case 61: a probe whose SUBSCRIBE times out (Timer F) → remote-server-timeout.
#[test]
fn probe_timing_out_becomes_remote_server_timeout() {
    let mut h = harness(SipSideMode::Notifier);
    let mut probe = pres(ANNA, BEN, PresenceType::Probe);
    probe.id = Some("pr2".into());
    let outs = stanza_in(&mut h, probe);
    assert_eq!(requests(&outs, Method::Subscribe).len(), 1);
    let outs = h.advance(secs(33));
    let e = of_kind(&outs, PresenceType::Error);
    assert_eq!(e.len(), 1, "{outs:#?}");
    assert_eq!(e[0].id.as_deref(), Some("pr2"));
    assert_eq!(
        e[0].error.as_ref().unwrap().condition,
        Condition::RemoteServerTimeout
    );
}
