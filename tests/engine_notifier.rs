//! SUBSCRIBEs for a package a module serves go to the notifier (RFC 6665 §4.2); its
//! NOTIFYs go out as client transactions whose outcomes come back to it.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use xmpp_sip_gateway::core::engine::Output;
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply};
use xmpp_sip_gateway::core::modules::{Module, ModuleCtx, ModuleId};
use xmpp_sip_gateway::core::routing::{DomainMatch, Route};
use xmpp_sip_gateway::core::sip::notifier::{
    Body, Decision, EndReason, NotifierEvent, SubscribeInfo,
};
use xmpp_sip_gateway::core::sip::{Method, Request};

/// A module serving `presence` as notifier: everyone is authorized, state is PIDF_OPEN.
struct PresenceServer {
    log: Arc<Mutex<Vec<NotifierEvent>>>,
}

impl Module for PresenceServer {
    fn id(&self) -> ModuleId {
        ModuleId::PresenceAgent
    }
    fn routes(&self) -> Vec<Route> {
        vec![Route::new(
            Method::Subscribe,
            Some("presence"),
            DomainMatch::Any,
        )]
    }
    fn notifier_body_types(&self, _package: &str) -> Vec<String> {
        vec!["application/pidf+xml".into()]
    }
    fn authorize(&self, _info: &SubscribeInfo<'_>) -> Decision {
        Decision::active(Some(Body::new("application/pidf+xml", PIDF_OPEN)))
    }
    fn on_notifier_event(&mut self, _ctx: &mut ModuleCtx<'_>, event: &NotifierEvent) {
        self.log.lock().unwrap().push(event.clone());
    }
}

fn harness() -> (Harness, Arc<Mutex<Vec<NotifierEvent>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::with_modules(
        test_config(),
        vec![Box::new(PresenceServer { log: log.clone() })],
    );
    (h, log)
}

fn subscribe(h: &mut Harness, event: &str) -> Request {
    let mut r = Request::new(Method::Subscribe, "sip:anna@xmpp.example");
    let b = h.branch();
    r.headers
        .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", "<sip:ben@sip.example>;tag=w1");
    r.headers.push("To", "<sip:anna@xmpp.example>");
    r.headers.push("Call-ID", format!("{b}@watcher"));
    r.headers.push("CSeq", "1 SUBSCRIBE");
    r.headers
        .push("Contact", "<sip:ben@127.0.0.1:5070;transport=tcp>");
    r.headers.push("Event", event);
    r.headers.push("Expires", "600");
    r
}

#[test]
fn subscribe_for_a_served_package_gets_200_and_an_active_notify() {
    let (mut h, log) = harness();
    let s = subscribe(&mut h, "presence");
    let outs = h.peer_request(s);
    assert_eq!(one_response(&outs).status, 200);
    let n = one_request(&outs, Method::Notify);
    assert!(header(&n, "Subscription-State")
        .unwrap()
        .starts_with("active"));
    assert_eq!(n.body, PIDF_OPEN.as_bytes());
    assert!(matches!(
        log.lock().unwrap().as_slice(),
        [NotifierEvent::Created { .. }]
    ));
    assert!(outs.iter().any(|o| matches!(o, Output::Store(_))));
}

#[test]
fn subscribe_for_another_package_gets_489_listing_served_ones() {
    let (mut h, _) = harness();
    let s = subscribe(&mut h, "dialog");
    let resp = one_response(&h.peer_request(s));
    assert_eq!(resp.status, 489);
    assert_eq!(resp.headers.get("Allow-Events"), Some("presence"));
}

/// A NOTIFY answered 481 ends the notifier dialog (case 43), reported to its module.
#[test]
fn notify_answered_481_ends_the_notifier_dialog() {
    let (mut h, log) = harness();
    let s = subscribe(&mut h, "presence");
    let outs = h.peer_request(s);
    let n = one_request(&outs, Method::Notify);
    h.answer(&n, 481, |_| {});
    let ended = log.lock().unwrap().iter().any(|e| {
        matches!(
            e,
            NotifierEvent::Ended {
                reason: EndReason::NotifyFailed { status: Some(481) },
                ..
            }
        )
    });
    assert!(ended);
}

/// RFC 3261 §22.2 for our NOTIFYs too: a 401/407 from the subscriber gets the NOTIFY
/// again with credentials, as a new request of the dialog (the next CSeq); the dialog
/// stays up, and the NOTIFY after it counts on from the re-sent one.
#[test]
fn notify_challenged_401_or_407_is_resent_with_credentials_in_the_dialog() {
    for (status, challenge, answer) in [
        (401, "WWW-Authenticate", "Authorization"),
        (407, "Proxy-Authenticate", "Proxy-Authorization"),
    ] {
        let (mut h, log) = harness();
        let s = subscribe(&mut h, "presence");
        let outs = h.peer_request(s.clone());
        let ok = one_response(&outs);
        let n = one_request(&outs, Method::Notify);
        let outs = h.answer(
            &n,
            status,
            digest_challenge(
                challenge,
                r#"realm="sip.example", nonce="n0nce", qop="auth""#,
            ),
        );
        let again = one_request(&outs, Method::Notify);
        assert_eq!(cseq_of(&again), cseq_of(&n) + 1, "{status}: next CSeq");
        assert_eq!(header(&again, "Call-ID"), header(&n, "Call-ID"));
        assert_eq!(
            header(&again, "Subscription-State"),
            header(&n, "Subscription-State")
        );
        assert_eq!(again.body, n.body);
        let auth = header(&again, answer).expect("credentials");
        assert!(
            auth.starts_with("Digest ") && auth.contains("username=\"gw\""),
            "{auth}"
        );
        assert!(auth.contains("uri=\"") && auth.contains(&n.uri), "{auth}");
        h.answer(&again, 200, |_| {});
        assert!(
            !log.lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, NotifierEvent::Ended { .. })),
            "{status}: the dialog stays"
        );

        // A refresh in the dialog gets a NOTIFY with the CSeq after the re-sent one.
        let mut refresh = s.clone();
        let b = h.branch();
        refresh
            .headers
            .set("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
        refresh.headers.set(
            "To",
            ok.headers.get("To").expect("To with the notifier's tag"),
        );
        refresh.headers.set("CSeq", "2 SUBSCRIBE");
        let outs = h.peer_request(refresh);
        assert_eq!(one_response(&outs).status, 200);
        let next = one_request(&outs, Method::Notify);
        assert_eq!(
            cseq_of(&next),
            cseq_of(&again) + 1,
            "{status}: CSeq keeps rising"
        );
    }
}

/// Credentials the subscriber refuses again (no `stale=true`) are not sent a third time;
/// the NOTIFY's final answer is the challenge, which does not end the subscription.
#[test]
fn notify_challenged_again_is_not_resent_a_second_time() {
    let (mut h, log) = harness();
    let s = subscribe(&mut h, "presence");
    let n = one_request(&h.peer_request(s), Method::Notify);
    let challenge = digest_challenge(
        "WWW-Authenticate",
        r#"realm="sip.example", nonce="n0nce", qop="auth""#,
    );
    let again = one_request(&h.answer(&n, 401, &challenge), Method::Notify);
    let outs = h.answer(&again, 401, &challenge);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::SendSip { .. })),
        "nothing more is sent: {outs:?}"
    );
    assert!(!log
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, NotifierEvent::Ended { .. })));
}

#[test]
fn health_counts_notifier_dialogs() {
    let (mut h, _) = harness();
    let s = subscribe(&mut h, "presence");
    h.peer_request(s);
    let (_, outs) = h.admin(AdminCommand::Health);
    assert!(
        matches!(&admin_replies(&outs)[..], [(_, AdminReply::Health(v))] if v.notifier_dialogs == 1)
    );
}

/// Restored notifier dialogs are counted again after a restart.
#[test]
fn notifier_dialogs_are_restored() {
    let (mut h1, _) = harness();
    let s = subscribe(&mut h1, "presence");
    h1.peer_request(s);
    let rows = Harness::rows_from_puts(&h1.all);
    let (mut h2, _) = harness();
    h2.input(xmpp_sip_gateway::core::engine::Input::Restore(rows));
    let (_, outs) = h2.admin(AdminCommand::Health);
    assert!(
        matches!(&admin_replies(&outs)[..], [(_, AdminReply::Health(v))] if v.notifier_dialogs == 1)
    );
}
