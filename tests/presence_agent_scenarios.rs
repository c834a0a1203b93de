//! The embedded presence agent and registrar through the engine, on a manual clock:
//! routing (method + event + domain), PUBLISH (RFC 3903 §6) composed and notified to
//! watchers (RFC 6665), watcher authorization and winfo (RFC 3857), REGISTER with digest
//! authentication (RFC 3261 §10.3, §22), in-process watchers through the PUA, restore.

mod support;

use support::*;
use xmpp_sip_gateway::core::engine::{EngineConfig, Input, Output};
use xmpp_sip_gateway::core::local_site::{config_user, AuthConfig, LocalSiteConfig};
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply, SubscribeCommand};
use xmpp_sip_gateway::core::modules::presence_agent::PresenceAgentModule;
use xmpp_sip_gateway::core::modules::registrar::RegistrarModule;
use xmpp_sip_gateway::core::presence::Body;
use xmpp_sip_gateway::core::pua::PuaEvent;
use xmpp_sip_gateway::core::registrar::RegistrarConfig;
use xmpp_sip_gateway::core::sip::digest::{authorization, DigestChallenge};
use xmpp_sip_gateway::core::sip::digest_server::DigestServerConfig;
use xmpp_sip_gateway::core::sip::headers::SubState;
use xmpp_sip_gateway::core::sip::{Method, Peer, Request, Response, SipMessage};
use xmpp_sip_gateway::core::watcher_rules::RuleAction;

const BOB_PIDF: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:bob@sip.test'>\
<tuple id='phone'><status><basic>open</basic></status></tuple></presence>";

const BOB_CLOSED: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:bob@sip.test'>\
<tuple id='phone'><status><basic>closed</basic></status></tuple></presence>";

fn site_config() -> EngineConfig {
    EngineConfig {
        site: LocalSiteConfig {
            domains: vec!["sip.test".into()],
            registrar: Some(RegistrarConfig::default()),
            auth: Some(AuthConfig {
                server: DigestServerConfig::with_secret(b"0123456789abcdef0123".to_vec()),
                realm: None,
                users: vec![config_user("bob", "sip.test", Some("bobpw"), None, None)],
            }),
            max_subscriptions_per_presentity: 256,
            ..LocalSiteConfig::default()
        },
        ..test_config()
    }
}

fn harness() -> Harness {
    Harness::with_modules(
        site_config(),
        vec![
            Box::new(PresenceAgentModule::new(vec!["sip.test".into()])),
            Box::new(RegistrarModule::new(vec!["sip.test".into()])),
        ],
    )
}

fn base_request(h: &mut Harness, method: Method, uri: &str, from: &str, to: &str) -> Request {
    let mut r = Request::new(method.clone(), uri);
    let b = h.branch();
    r.headers
        .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", format!("<{from}>;tag=f{b}"));
    r.headers.push("To", format!("<{to}>"));
    r.headers.push("Call-ID", format!("{b}@peer"));
    r.headers.push("CSeq", format!("1 {}", method.as_str()));
    r
}

fn publish(h: &mut Harness, body: Option<&str>, etag: Option<&str>, expires: u32) -> Request {
    let mut r = base_request(
        h,
        Method::Publish,
        "sip:bob@sip.test",
        "sip:bob@sip.test",
        "sip:bob@sip.test",
    );
    r.headers.push("Event", "presence");
    r.headers.push("Expires", expires.to_string());
    if let Some(e) = etag {
        r.headers.push("SIP-If-Match", e);
    }
    if let Some(b) = body {
        r.headers.push("Content-Type", "application/pidf+xml");
        r.body = b.as_bytes().to_vec();
    }
    r
}

fn subscribe(h: &mut Harness, event: &str, watcher: &str) -> Request {
    let mut r = base_request(
        h,
        Method::Subscribe,
        "sip:bob@sip.test",
        watcher,
        "sip:bob@sip.test",
    );
    r.headers.push("Event", event);
    r.headers.push("Expires", "600");
    r.headers
        .push("Contact", "<sip:watcher@127.0.0.1:5070;transport=tcp>");
    r
}

fn final_status(outs: &[Output]) -> u16 {
    responses(outs)
        .iter()
        .map(|r| r.status)
        .find(|s| *s >= 200)
        .expect("a final response")
}

/// Answers every NOTIFY among `outs` with 200 (so the next one may go out).
fn ack_notifies(h: &mut Harness, outs: &[Output]) -> Vec<Output> {
    let mut more = Vec::new();
    for n in requests(outs, Method::Notify) {
        more.extend(h.answer(&n, 200, |_| {}));
    }
    more
}

fn body_text(r: &Request) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

#[test]
fn rfc3903_s6_publish_is_answered_with_etag_and_expires() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    let outs = h.peer_request(req);
    let resp = responses(&outs).pop().unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.headers.get("SIP-ETag").is_some_and(|e| !e.is_empty()));
    assert_eq!(resp.headers.get("Expires"), Some("600"));
}

#[test]
fn rfc3903_s6_unknown_etag_is_412_and_short_expires_is_423() {
    let mut h = harness();
    let req = publish(&mut h, None, Some("nope"), 600);
    assert_eq!(final_status(&h.peer_request(req)), 412);
    let req = publish(&mut h, Some(BOB_PIDF), None, 10);
    let outs = h.peer_request(req);
    let resp = responses(&outs).pop().unwrap();
    assert_eq!(resp.status, 423);
    assert_eq!(resp.headers.get("Min-Expires"), Some("60"));
}

#[test]
fn rfc3903_s6_malformed_body_is_400_and_previous_state_stays() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    let outs = h.peer_request(req);
    let etag = responses(&outs)[0]
        .headers
        .get("SIP-ETag")
        .unwrap()
        .to_string();
    let req = publish(&mut h, Some("<presence"), Some(&etag), 600);
    assert_eq!(final_status(&h.peer_request(req)), 400);
    let sub = subscribe(&mut h, "presence", "sip:carol@sip.test");
    let outs = h.peer_request(sub);
    let n = requests(&outs, Method::Notify);
    assert!(body_text(&n[0]).contains("open"), "{}", body_text(&n[0]));
}

#[test]
fn rfc6665_same_domain_watcher_gets_composed_state_and_later_changes() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    let outs = h.peer_request(req);
    let etag = responses(&outs)[0]
        .headers
        .get("SIP-ETag")
        .unwrap()
        .to_string();
    let sub = subscribe(&mut h, "presence", "sip:carol@sip.test");
    let outs = h.peer_request(sub);
    assert_eq!(final_status(&outs), 200);
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1);
    assert!(n[0]
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("active"));
    assert!(body_text(&n[0]).contains("<tuple id=\"phone\"") || body_text(&n[0]).contains("phone"));
    assert!(body_text(&n[0]).contains("open"));
    ack_notifies(&mut h, &outs);
    // A modify reaches the watcher with the new document.
    let req = publish(&mut h, Some(BOB_CLOSED), Some(&etag), 600);
    let outs = h.peer_request(req);
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1, "{outs:?}");
    assert!(body_text(&n[0]).contains("closed"));
}

#[test]
fn rfc6665_other_domain_watcher_waits_pending_until_an_allow_rule() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    h.peer_request(req);
    let sub = subscribe(&mut h, "presence", "sip:alice@xmpp.test");
    let outs = h.peer_request(sub);
    assert_eq!(final_status(&outs), 200);
    let n = requests(&outs, Method::Notify);
    assert!(n[0]
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("pending"));
    assert!(n[0].body.is_empty(), "a pending NOTIFY leaks no state");
    ack_notifies(&mut h, &outs);
    let (_, outs) = h.admin(AdminCommand::SetRule {
        presentity: "sip:bob@sip.test".into(),
        watcher: "sip:alice@xmpp.test".into(),
        action: Some(RuleAction::Allow),
    });
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1);
    assert!(n[0]
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("active"));
    assert!(body_text(&n[0]).contains("open"));
}

#[test]
fn rfc6665_s4_2_1_2_deny_rule_refuses_new_and_terminates_live_subscriptions() {
    let mut h = harness();
    let sub = subscribe(&mut h, "presence", "sip:alice@xmpp.test");
    let outs = h.peer_request(sub);
    ack_notifies(&mut h, &outs);
    let (_, outs) = h.admin(AdminCommand::SetRule {
        presentity: "sip:bob@sip.test".into(),
        watcher: "sip:alice@xmpp.test".into(),
        action: Some(RuleAction::Deny),
    });
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1);
    let state = n[0].headers.get("Subscription-State").unwrap();
    assert!(
        state.starts_with("terminated") && state.contains("rejected"),
        "{state}"
    );
    let sub = subscribe(&mut h, "presence", "sip:alice@xmpp.test");
    assert_eq!(final_status(&h.peer_request(sub)), 403);
}

#[test]
fn rfc3857_winfo_of_the_owner_lists_a_pending_watcher() {
    let mut h = harness();
    let winfo = subscribe(&mut h, "presence.winfo", "sip:bob@sip.test");
    let outs = h.peer_request(winfo);
    assert_eq!(final_status(&outs), 200);
    let n = requests(&outs, Method::Notify);
    assert_eq!(
        n[0].headers.get("Content-Type"),
        Some("application/watcherinfo+xml")
    );
    ack_notifies(&mut h, &outs);
    let sub = subscribe(&mut h, "presence", "sip:alice@xmpp.test");
    let outs = h.peer_request(sub);
    let winfo_notifies: Vec<Request> = requests(&outs, Method::Notify)
        .into_iter()
        .filter(|r| r.headers.get("Event") == Some("presence.winfo"))
        .collect();
    assert_eq!(winfo_notifies.len(), 1, "{outs:?}");
    let doc = body_text(&winfo_notifies[0]);
    assert!(
        doc.contains("sip:alice@xmpp.test") && doc.contains("pending"),
        "{doc}"
    );
}

#[test]
fn rfc3857_winfo_of_someone_else_is_refused() {
    let mut h = harness();
    let winfo = subscribe(&mut h, "presence.winfo", "sip:carol@sip.test");
    assert_eq!(final_status(&h.peer_request(winfo)), 403);
}

#[test]
fn routing_publish_for_an_unserved_domain_is_404_and_unknown_event_489() {
    let mut h = harness();
    let mut req = publish(&mut h, Some(BOB_PIDF), None, 600);
    req.uri = "sip:bob@elsewhere.test".into();
    assert_eq!(final_status(&h.peer_request(req)), 404);
    let mut req = publish(&mut h, Some(BOB_PIDF), None, 600);
    req.headers.set("Event", "message-summary");
    let outs = h.peer_request(req);
    let resp = responses(&outs).pop().unwrap();
    assert_eq!(resp.status, 489);
    assert!(resp
        .headers
        .get("Allow-Events")
        .unwrap()
        .contains("presence"));
}

#[test]
fn routing_unserved_method_is_405_with_allow_listing_routed_methods() {
    let mut h = harness();
    let req = base_request(
        &mut h,
        Method::Message,
        "sip:bob@sip.test",
        "sip:carol@sip.test",
        "sip:bob@sip.test",
    );
    let outs = h.peer_request(req);
    let resp = responses(&outs).pop().unwrap();
    assert_eq!(resp.status, 405);
    let allow = resp.headers.get("Allow").unwrap();
    for m in ["REGISTER", "PUBLISH", "SUBSCRIBE", "NOTIFY"] {
        assert!(allow.contains(m), "{allow}");
    }
}

fn register(h: &mut Harness, expires: u32) -> Request {
    let mut r = base_request(
        h,
        Method::Register,
        "sip:sip.test",
        "sip:bob@sip.test",
        "sip:bob@sip.test",
    );
    r.headers.set("Call-ID", "reg-1@phone");
    r.headers
        .push("Contact", "<sip:bob@192.0.2.9:5060;transport=tcp>");
    r.headers.push("Expires", expires.to_string());
    r
}

fn from_stranger(h: &mut Harness, req: Request) -> Vec<Output> {
    h.input(Input::Sip {
        from: stranger(),
        message: SipMessage::Request(req),
    })
}

/// Answers the 401 of `first` with credentials for `user`/`password`, as a phone would.
fn with_credentials(
    first: &Request,
    resp: &Response,
    user: &str,
    password: &str,
    cseq: u32,
) -> Request {
    let ch = resp
        .headers
        .get_all("WWW-Authenticate")
        .iter()
        .map(|v| DigestChallenge::parse(v).unwrap())
        .next()
        .unwrap();
    let mut again = first.clone();
    again.headers.set("CSeq", format!("{cseq} REGISTER"));
    let via = again.headers.get("Via").unwrap().to_string();
    again.headers.set("Via", format!("{via}x{cseq}"));
    let auth = authorization(&ch, "REGISTER", &again.uri, user, password, "c0ffee", 1);
    again.headers.push("Authorization", auth);
    again
}

#[test]
fn rfc3261_s22_untrusted_register_is_challenged_then_bound() {
    let mut h = harness();
    let req = register(&mut h, 600);
    let outs = from_stranger(&mut h, req.clone());
    let resp = responses(&outs).pop().unwrap();
    assert_eq!(resp.status, 401);
    let algs: Vec<String> = resp
        .headers
        .get_all("WWW-Authenticate")
        .iter()
        .map(|v| DigestChallenge::parse(v).unwrap().algorithm.to_string())
        .collect();
    assert_eq!(
        algs,
        vec!["SHA-256".to_string(), "MD5".to_string()],
        "the configured order"
    );
    let again = with_credentials(&req, &resp, "bob", "bobpw", 2);
    let outs = from_stranger(&mut h, again);
    let resp = responses(&outs).pop().unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let contact = resp.headers.get("Contact").unwrap();
    assert!(
        contact.contains("192.0.2.9") && contact.contains("expires=600"),
        "{contact}"
    );
}

#[test]
fn rfc3261_s22_wrong_password_and_unknown_user_get_the_same_answer() {
    let mut h = harness();
    let req = register(&mut h, 600);
    let outs = from_stranger(&mut h, req.clone());
    let resp = responses(&outs).pop().unwrap();
    let wrong = with_credentials(&req, &resp, "bob", "nope", 2);
    let a = responses(&from_stranger(&mut h, wrong)).pop().unwrap();
    let mut stranger_req = req.clone();
    stranger_req
        .headers
        .set("From", "<sip:mallory@sip.test>;tag=m");
    stranger_req.headers.set("To", "<sip:mallory@sip.test>");
    let outs = from_stranger(&mut h, stranger_req.clone());
    let resp = responses(&outs).pop().unwrap();
    let unknown = with_credentials(&stranger_req, &resp, "mallory", "x", 2);
    let b = responses(&from_stranger(&mut h, unknown)).pop().unwrap();
    assert_eq!((a.status, b.status), (401, 401));
    assert_eq!(a.reason, b.reason);
}

#[test]
fn rfc3261_s10_3_bindings_expire_by_themselves() {
    let mut h = harness();
    let req = register(&mut h, 60);
    assert_eq!(final_status(&h.peer_request(req)), 200);
    let (_, outs) = h.admin(AdminCommand::ListBindings { aor: None });
    assert!(outs.iter().any(
        |o| matches!(o, Output::AdminReply { reply: AdminReply::Bindings(b), .. } if b.len() == 1)
    ));
    h.advance(std::time::Duration::from_secs(61));
    let (_, outs) = h.admin(AdminCommand::ListBindings { aor: None });
    assert!(outs.iter().any(
        |o| matches!(o, Output::AdminReply { reply: AdminReply::Bindings(b), .. } if b.is_empty())
    ));
}

#[test]
fn local_watcher_through_the_pua_is_pending_then_active_without_a_sip_hop() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    h.peer_request(req);
    let (_, outs) = h.admin(AdminCommand::Subscribe(SubscribeCommand {
        presentity: "sip:bob@sip.test".into(),
        watcher: "sip:anna@xmpp.example".into(),
        event: "presence".into(),
        expires: 600,
    }));
    assert!(
        requests(&outs, Method::Subscribe).is_empty(),
        "no SIP hop inside the process"
    );
    let ev = h.take_events();
    assert!(ev
        .iter()
        .any(|e| matches!(e, PuaEvent::SubscribeResult { code: 200, .. })));
    assert!(ev.iter().any(|e| matches!(
        e,
        PuaEvent::Notify {
            state: SubState::Pending { .. },
            ..
        }
    )));
    h.admin(AdminCommand::SetRule {
        presentity: "sip:bob@sip.test".into(),
        watcher: "sip:anna@xmpp.example".into(),
        action: Some(RuleAction::Allow),
    });
    let ev = h.take_events();
    let active = ev.iter().find_map(|e| match e {
        PuaEvent::Notify {
            state: SubState::Active { .. },
            body: Body::Pidf(doc),
            ..
        } => Some(doc.clone()),
        _ => None,
    });
    let doc = active.expect("an active notify with PIDF");
    assert_eq!(doc.tuples.len(), 1);
}

#[test]
fn restart_keeps_etags_bindings_and_rules() {
    let mut h = harness();
    let mut ops = Vec::new();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    let outs = h.peer_request(req);
    ops.extend(store_ops(&outs));
    let etag = responses(&outs)[0]
        .headers
        .get("SIP-ETag")
        .unwrap()
        .to_string();
    let req = register(&mut h, 600);
    ops.extend(store_ops(&h.peer_request(req)));
    let (_, outs) = h.admin(AdminCommand::SetRule {
        presentity: "sip:bob@sip.test".into(),
        watcher: "sip:alice@xmpp.test".into(),
        action: Some(RuleAction::Allow),
    });
    ops.extend(store_ops(&outs));

    let mut h2 = harness();
    h2.clock = h.clock.clone();
    h2.input(Input::Restore(rows_after(&ops)));
    let req = publish(&mut h2, None, Some(&etag), 600);
    assert_eq!(
        final_status(&h2.peer_request(req)),
        200,
        "the ETag stays valid"
    );
    let (_, outs) = h2.admin(AdminCommand::ListBindings { aor: None });
    assert!(outs.iter().any(
        |o| matches!(o, Output::AdminReply { reply: AdminReply::Bindings(b), .. } if b.len() == 1)
    ));
    let sub = subscribe(&mut h2, "presence", "sip:alice@xmpp.test");
    let outs = h2.peer_request(sub);
    let n = requests(&outs, Method::Notify);
    assert!(n[0]
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("active"));
}

#[allow(dead_code)]
fn unused(_: Peer) {}

#[test]
fn flood_of_new_requests_from_one_source_gets_503_with_retry_after() {
    let mut config = site_config();
    config.max_requests_per_source = 2;
    let mut h = Harness::with_modules(
        config,
        vec![Box::new(PresenceAgentModule::new(vec!["sip.test".into()]))],
    );
    let mut codes = Vec::new();
    let mut retry = None;
    for _ in 0..3 {
        let req = publish(&mut h, Some(BOB_PIDF), None, 600);
        let outs = h.peer_request(req);
        let resp = responses(&outs).pop().unwrap();
        codes.push(resp.status);
        retry = resp.headers.get("Retry-After").map(str::to_string);
    }
    assert_eq!(codes, vec![200, 200, 503]);
    assert_eq!(retry.as_deref(), Some("1"));
    h.advance(std::time::Duration::from_secs(1));
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    assert_eq!(
        final_status(&h.peer_request(req)),
        200,
        "the next second is a new window"
    );
}

const DIALOG_TRYING: &str = "<?xml version='1.0'?>\
<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='0' state='full' entity='sip:line@sip.test'>\
<dialog id='d1' direction='initiator'><state>trying</state></dialog></dialog-info>";

fn subscribe_to(h: &mut Harness, presentity: &str, event: &str, watcher: &str) -> Request {
    let mut r = subscribe(h, event, watcher);
    r.uri = presentity.into();
    r.headers.set("To", format!("<{presentity}>"));
    r
}

fn publish_dialog(h: &mut Harness, sender: Option<&str>) -> Request {
    let mut r = base_request(
        h,
        Method::Publish,
        "sip:line@sip.test",
        "sip:line@sip.test",
        "sip:line@sip.test",
    );
    r.headers.push("Event", "dialog;sla");
    r.headers.push("Expires", "600");
    if let Some(s) = sender {
        r.headers.push("Sender", format!("<{s}>"));
    }
    r.headers
        .push("Content-Type", "application/dialog-info+xml");
    r.body = DIALOG_TRYING.as_bytes().to_vec();
    r
}

fn dialog_version(r: &Request) -> Option<u32> {
    let body = body_text(r);
    let root = body.find("<dialog-info")?;
    let i = root + body[root..].find("version=")? + "version=".len();
    let rest = &body[i + 1..];
    rest[..rest.find(['"', '\''])?].parse().ok()
}

#[test]
fn rfc6665_s4_4_3_poll_gets_one_terminated_notify_with_the_state() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    h.peer_request(req);
    let mut poll = subscribe(&mut h, "presence", "sip:carol@sip.test");
    poll.headers.set("Expires", "0");
    let outs = h.peer_request(poll);
    assert_eq!(final_status(&outs), 200);
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1);
    let state = n[0].headers.get("Subscription-State").unwrap();
    assert!(
        state.starts_with("terminated") && state.contains("timeout"),
        "{state}"
    );
    assert!(body_text(&n[0]).contains("open"));
}

#[test]
fn bla_publish_with_sender_is_not_notified_back_to_the_sender() {
    let mut h = harness();
    let mut all = Vec::new();
    for phone in ["sip:phone1@sip.test", "sip:phone2@sip.test"] {
        let sub = subscribe_to(&mut h, "sip:line@sip.test", "dialog;sla", phone);
        let outs = h.peer_request(sub);
        assert_eq!(final_status(&outs), 200);
        all.extend(ack_notifies(&mut h, &outs));
    }
    let mut req = publish_dialog(&mut h, None);
    req.headers
        .push("Sender", "\"Phone 1\" <sip:phone1@sip.test;transport=udp>");
    let outs = h.peer_request(req);
    let n = requests(&outs, Method::Notify);
    let to: Vec<String> = n
        .iter()
        .map(|r| r.headers.get("To").unwrap().to_string())
        .collect();
    assert_eq!(n.len(), 1, "{to:?}");
    assert!(to[0].contains("phone2"), "{to:?}");
    assert!(body_text(&n[0]).contains("trying"));
}

#[test]
fn rfc4235_s4_1_dialog_info_version_counts_per_subscription() {
    let mut h = harness();
    let sub = subscribe_to(&mut h, "sip:line@sip.test", "dialog", "sip:phone1@sip.test");
    let outs = h.peer_request(sub);
    let first = requests(&outs, Method::Notify);
    assert_eq!(
        dialog_version(&first[0]),
        Some(0),
        "{}",
        body_text(&first[0])
    );
    ack_notifies(&mut h, &outs);
    let mut versions = Vec::new();
    for state in ["trying", "confirmed"] {
        let mut req = publish_dialog(&mut h, None);
        req.headers.set("Event", "dialog");
        req.body = DIALOG_TRYING.replace("trying", state).into_bytes();
        let outs = h.peer_request(req);
        for n in requests(&outs, Method::Notify) {
            versions.push(dialog_version(&n).unwrap());
        }
        ack_notifies(&mut h, &outs);
    }
    assert_eq!(versions, vec![1, 2]);
}

fn admin_publish(h: &mut Harness, body: Option<&str>, expires: i64) -> Vec<Output> {
    h.admin(Harness::publish_cmd(
        "sip:bob@sip.test",
        expires,
        body,
        None,
    ))
    .1
}

fn published_outcome(outs: &[Output]) -> (u16, Option<String>) {
    outs.iter()
        .find_map(|o| match o {
            Output::AdminReply {
                reply: AdminReply::Published(p),
                ..
            } => Some((p.code, p.etag.clone())),
            _ => None,
        })
        .expect("a publish reply")
}

#[test]
fn module_publication_for_a_local_presentity_goes_into_the_state_service_without_sip() {
    let mut h = harness();
    let sub = subscribe(&mut h, "presence", "sip:carol@sip.test");
    let outs = h.peer_request(sub);
    ack_notifies(&mut h, &outs);
    let outs = admin_publish(&mut h, Some(BOB_PIDF), -1);
    assert!(
        requests(&outs, Method::Publish).is_empty(),
        "no PUBLISH leaves for a local presentity"
    );
    let (code, etag) = published_outcome(&outs);
    assert_eq!(code, 200);
    assert!(etag.is_some());
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1, "the watcher is told: {outs:?}");
    assert!(body_text(&n[0]).contains("open"));
    ack_notifies(&mut h, &outs);
}

#[test]
fn module_publication_without_expiry_is_refreshed_past_the_granted_interval() {
    let mut h = harness();
    admin_publish(&mut h, Some(BOB_PIDF), -1);
    // The state service grants at most 3600 s; the PUA refreshes it at 85 %.
    h.advance(std::time::Duration::from_secs(3700));
    let sub = subscribe(&mut h, "presence", "sip:carol@sip.test");
    let outs = h.peer_request(sub);
    let n = requests(&outs, Method::Notify);
    assert!(
        body_text(&n[0]).contains("open"),
        "still published: {}",
        body_text(&n[0])
    );
}

#[test]
fn removing_the_last_publication_tells_watchers_there_is_no_tuple_left() {
    let mut h = harness();
    admin_publish(&mut h, Some(BOB_PIDF), -1);
    let sub = subscribe(&mut h, "presence", "sip:carol@sip.test");
    let outs = h.peer_request(sub);
    ack_notifies(&mut h, &outs);
    let outs = admin_publish(&mut h, None, 0);
    assert_eq!(published_outcome(&outs).0, 200);
    let n = requests(&outs, Method::Notify);
    assert_eq!(n.len(), 1, "{outs:?}");
    let doc = body_text(&n[0]);
    assert!(
        doc.contains("sip:bob@sip.test") && !doc.contains("<tuple"),
        "{doc}"
    );
}

#[test]
fn rfc3261_s22_untrusted_publish_and_subscribe_are_challenged_too() {
    let mut h = harness();
    let req = publish(&mut h, Some(BOB_PIDF), None, 600);
    let outs = from_stranger(&mut h, req);
    assert_eq!(final_status(&outs), 401);
    let sub = subscribe(&mut h, "presence", "sip:bob@sip.test");
    let outs = from_stranger(&mut h, sub);
    assert_eq!(final_status(&outs), 401);
    // An untrusted peer claiming a domain the gateway does not serve cannot be
    // authenticated here at all: 403, no challenge.
    let sub = subscribe(&mut h, "presence", "sip:eve@elsewhere.test");
    let outs = from_stranger(&mut h, sub);
    assert_eq!(final_status(&outs), 403);
}

#[test]
fn rfc3261_s10_3_untrusted_phone_cannot_register_another_aor() {
    let mut h = harness();
    let mut req = register(&mut h, 600);
    req.headers.set("To", "<sip:carol@sip.test>");
    let outs = from_stranger(&mut h, req);
    assert_eq!(final_status(&outs), 403, "no challenge: never allowed");
}
