//! The bridge next to the embedded presence agent (product.md, "Embedded presence agent"):
//! an XMPP user watching a local SIP user is attached to the presence state service in
//! the process (no SIP SUBSCRIBE leaves), goes through the same watcher rules as a SIP
//! watcher (pending until allowed), and sees the phone's published presence (RFC 8048
//! §5.2 semantics unchanged: `subscribed` only once the subscription is active).

mod bridge_support;
mod support;

use bridge_support::*;
use support::*;
use xmpp_sip_gateway::core::engine::{EngineConfig, Output};
use xmpp_sip_gateway::core::local_site::LocalSiteConfig;
use xmpp_sip_gateway::core::modules::admin::AdminCommand;
use xmpp_sip_gateway::core::modules::bridge::{BridgeModule, SipSideMode};
use xmpp_sip_gateway::core::modules::presence_agent::PresenceAgentModule;
use xmpp_sip_gateway::core::sip::{Method, Request, SipMessage};
use xmpp_sip_gateway::core::watcher_rules::RuleAction;
use xmpp_sip_gateway::core::xmpp::stanza::PresenceType;

const BEN_PIDF: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:ben@sip.example'>\
<tuple id='desk'><status><basic>open</basic></status></tuple></presence>";

fn harness_with_agent() -> Harness {
    let config = EngineConfig {
        outbound_proxy: None,
        site: LocalSiteConfig {
            domains: vec!["sip.example".into()],
            max_subscriptions_per_presentity: 16,
            ..LocalSiteConfig::default()
        },
        ..test_config()
    };
    Harness::with_modules(
        config,
        vec![
            Box::new(PresenceAgentModule::new(vec!["sip.example".into()])),
            Box::new(BridgeModule::new(bridge_config(SipSideMode::Notifier))),
        ],
    )
}

fn sip_requests(outs: &[Output]) -> Vec<Request> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendSip {
                message: SipMessage::Request(r),
                ..
            } => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn ben_publishes(h: &mut Harness) {
    let mut r = Request::new(Method::Publish, BEN_URI);
    let b = h.branch();
    r.headers
        .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", format!("<{BEN_URI}>;tag=p{b}"));
    r.headers.push("To", format!("<{BEN_URI}>"));
    r.headers.push("Call-ID", format!("{b}@phone"));
    r.headers.push("CSeq", "1 PUBLISH");
    r.headers.push("Event", "presence");
    r.headers.push("Expires", "600");
    r.headers.push("Content-Type", "application/pidf+xml");
    r.body = BEN_PIDF.as_bytes().to_vec();
    h.peer_request(r);
}

#[test]
fn xmpp_subscribe_to_a_local_sip_user_stays_pending_until_allowed_then_sees_presence() {
    let mut h = harness_with_agent();
    ben_publishes(&mut h);
    let outs = stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    assert!(
        sip_requests(&outs)
            .iter()
            .all(|r| r.method != Method::Subscribe),
        "no SIP hop inside the process"
    );
    assert!(
        of_kind(&outs, PresenceType::Subscribed).is_empty(),
        "other-domain watchers wait (RFC 8048 §5.2.1: subscribed only when active)"
    );
    let (_, outs) = h.admin(AdminCommand::SetRule {
        presentity: BEN_URI.into(),
        watcher: ANNA_URI.into(),
        action: Some(RuleAction::Allow),
    });
    assert_eq!(
        of_kind(&outs, PresenceType::Subscribed).len(),
        1,
        "{outs:?}"
    );
    let available: Vec<_> = presences(&outs)
        .into_iter()
        .filter(|p| p.kind == PresenceType::Available)
        .collect();
    assert_eq!(available.len(), 1, "{outs:?}");
    assert_eq!(available[0].from.resource.as_deref(), Some("desk"));
}

#[test]
fn xmpp_watcher_of_a_local_sip_user_sees_the_next_publication() {
    let mut h = harness_with_agent();
    h.admin(AdminCommand::SetRule {
        presentity: BEN_URI.into(),
        watcher: ANNA_URI.into(),
        action: Some(RuleAction::Allow),
    });
    let outs = stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    assert_eq!(
        of_kind(&outs, PresenceType::Subscribed).len(),
        1,
        "{outs:?}"
    );
    assert!(
        presences(&outs)
            .iter()
            .all(|p| p.kind != PresenceType::Available),
        "nothing published yet: no availability"
    );
    h.all.clear();
    ben_publishes(&mut h);
    let outs = h.all.clone();
    let available: Vec<_> = presences(&outs)
        .into_iter()
        .filter(|p| p.kind == PresenceType::Available && p.to.bare() == ANNA)
        .collect();
    assert!(
        !available.is_empty(),
        "the publication reaches the XMPP watcher"
    );
}

#[test]
fn deny_rule_ends_the_xmpp_authorization_with_unsubscribed() {
    let mut h = harness_with_agent();
    stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    let (_, outs) = h.admin(AdminCommand::SetRule {
        presentity: BEN_URI.into(),
        watcher: ANNA_URI.into(),
        action: Some(RuleAction::Deny),
    });
    assert_eq!(
        of_kind(&outs, PresenceType::Unsubscribed).len(),
        1,
        "terminated;reason=rejected ends the authorization (standards.md §7.4): {outs:?}"
    );
}

/// The agent, the embedded registrar, usrloc for the domain and the bridge.
fn harness_with_usrloc() -> Harness {
    use xmpp_sip_gateway::core::modules::registrar::RegistrarModule;
    use xmpp_sip_gateway::core::modules::usrloc::{UsrlocConfig, UsrlocModule};
    use xmpp_sip_gateway::core::registrar::RegistrarConfig;
    let config = EngineConfig {
        outbound_proxy: None,
        site: LocalSiteConfig {
            domains: vec!["sip.example".into()],
            max_subscriptions_per_presentity: 16,
            registrar: Some(RegistrarConfig::default()),
            ..LocalSiteConfig::default()
        },
        ..test_config()
    };
    Harness::with_modules(
        config,
        vec![
            Box::new(PresenceAgentModule::new(vec!["sip.example".into()])),
            Box::new(RegistrarModule::new(vec!["sip.example".into()])),
            Box::new(UsrlocModule::new(UsrlocConfig {
                domains: vec!["sip.example".into()],
                closed_linger: std::time::Duration::from_secs(30),
                ..UsrlocConfig::default()
            })),
            Box::new(BridgeModule::new(bridge_config(SipSideMode::Notifier))),
        ],
    )
}

fn ben_registers(h: &mut Harness, expires: u32, cseq: u32) -> Vec<Output> {
    let mut r = Request::new(Method::Register, "sip:sip.example");
    let b = h.branch();
    r.headers
        .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", format!("<{BEN_URI}>;tag=r{b}"));
    r.headers.push("To", format!("<{BEN_URI}>"));
    r.headers.push("Call-ID", "ben-reg@phone");
    r.headers.push("CSeq", format!("{cseq} REGISTER"));
    r.headers.push("Contact", "<sip:ben@192.0.2.8:5060>");
    r.headers.push("Expires", expires.to_string());
    h.peer_request(r)
}

#[test]
fn xmpp_watcher_sees_a_registered_phone_available_then_unavailable_when_the_binding_expires() {
    let mut h = harness_with_usrloc();
    h.admin(AdminCommand::SetRule {
        presentity: BEN_URI.into(),
        watcher: ANNA_URI.into(),
        action: Some(RuleAction::Allow),
    });
    stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    h.all.clear();
    // A phone that never publishes: its REGISTER is its presence (usrloc).
    ben_registers(&mut h, 120, 1);
    let to_anna = |outs: &[Output], kind: PresenceType| {
        presences(outs)
            .into_iter()
            .filter(|p| p.kind == kind && p.to.bare() == ANNA)
            .count()
    };
    assert!(to_anna(&h.all, PresenceType::Available) > 0, "{:?}", h.all);
    h.all.clear();
    let outs = h.advance(std::time::Duration::from_secs(120));
    assert!(
        to_anna(&outs, PresenceType::Unavailable) > 0,
        "expiry reaches the XMPP watcher as unavailable: {outs:?}"
    );
}

#[test]
fn xmpp_watcher_sees_unavailable_when_the_phone_unregisters() {
    let mut h = harness_with_usrloc();
    h.admin(AdminCommand::SetRule {
        presentity: BEN_URI.into(),
        watcher: ANNA_URI.into(),
        action: Some(RuleAction::Allow),
    });
    stanza_in(&mut h, pres(ANNA, BEN, PresenceType::Subscribe));
    ben_registers(&mut h, 600, 1);
    h.all.clear();
    let outs = ben_registers(&mut h, 0, 2);
    assert!(
        presences(&outs)
            .iter()
            .any(|p| p.kind == PresenceType::Unavailable && p.to.bare() == ANNA),
        "{outs:?}"
    );
}
