//! Bridge scenarios: the engine with the bridge module on a manual clock, a scripted SIP
//! peer (tests/support) and a scripted XMPP server that feeds stanzas in and reads them out.
#![allow(dead_code)]

use xmpp_sip_gateway::core::engine::{Input, Output};
use xmpp_sip_gateway::core::modules::bridge::{BridgeConfig, BridgeModule, SipSideMode};
use xmpp_sip_gateway::core::sip::{Method, Peer, Request, SipMessage, Transport};
use xmpp_sip_gateway::core::xmpp::address::{DomainMap, JidParts, MappingScheme};
use xmpp_sip_gateway::core::xmpp::stanza::{Presence, PresenceType, Stanza};

use crate::support::{test_config, Harness};

pub const ANNA: &str = "anna@xmpp.example";
pub const BEN: &str = "ben@sip.example";
pub const BEN_URI: &str = "sip:ben@sip.example";
pub const ANNA_URI: &str = "sip:anna@xmpp.example";

pub fn domain_map() -> DomainMap {
    DomainMap {
        xmpp_domain: "xmpp.example".into(),
        component_domain: "sip.example".into(),
        sip_domain: "sip.example".into(),
        gateway_sip_host: "gw.xmpp.example".into(),
        scheme: MappingScheme::Domain,
    }
}

pub fn bridge_config(mode: SipSideMode) -> BridgeConfig {
    BridgeConfig {
        domains: vec![domain_map()],
        mode,
        max_subscriptions_per_user: 100,
    }
}

pub fn harness(mode: SipSideMode) -> Harness {
    Harness::with_modules(
        test_config(),
        vec![Box::new(BridgeModule::new(bridge_config(mode)))],
    )
}

pub fn jid(s: &str) -> JidParts {
    JidParts::parse(s).unwrap()
}

pub fn pres(from: &str, to: &str, kind: PresenceType) -> Presence {
    Presence::new(jid(from), jid(to), kind)
}

/// Feeds a stanza from the XMPP server.
pub fn stanza_in(h: &mut Harness, p: Presence) -> Vec<Output> {
    h.input(Input::Stanza(Stanza::Presence(p)))
}

/// Presence stanzas sent to the XMPP server.
pub fn presences(outs: &[Output]) -> Vec<Presence> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendStanza(Stanza::Presence(p)) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn stanzas(outs: &[Output]) -> Vec<Stanza> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendStanza(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

pub fn of_kind(outs: &[Output], kind: PresenceType) -> Vec<Presence> {
    presences(outs)
        .into_iter()
        .filter(|p| p.kind == kind)
        .collect()
}

/// A SIP phone watching XMPP users (S2X).
pub fn phone() -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:5080".parse().unwrap(),
    }
}

/// A SUBSCRIBE from `watcher` (a SIP URI) for `target`, outside any dialog.
pub fn subscribe_from_phone(
    watcher: &str,
    target: &str,
    call_id: &str,
    expires: Option<u32>,
    branch: &str,
) -> Request {
    let mut r = Request::new(Method::Subscribe, target);
    r.headers
        .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5080;branch={branch}"));
    r.headers.push("Max-Forwards", "70");
    r.headers
        .push("From", format!("<{watcher}>;tag=ph-{call_id}"));
    r.headers.push("To", format!("<{target}>"));
    r.headers.push("Call-ID", call_id);
    r.headers.push("CSeq", "1 SUBSCRIBE");
    r.headers
        .push("Contact", "<sip:ben@127.0.0.1:5080;transport=tcp>");
    r.headers.push("Event", "presence");
    r.headers.push("Accept", "application/pidf+xml");
    if let Some(e) = expires {
        r.headers.push("Expires", e.to_string());
    }
    r
}

pub fn from_phone(h: &mut Harness, req: Request) -> Vec<Output> {
    h.input(Input::Sip {
        from: phone(),
        message: SipMessage::Request(req),
    })
}

/// Every stanza the gateway emitted so far has a `from` in the component domain and a
/// `to` (standards.md §16 case 3).
pub fn assert_stanzas_well_addressed(h: &Harness) {
    for s in stanzas(&h.all) {
        let from = s.from().expect("stanza has from");
        assert_eq!(
            from.domain, "sip.example",
            "from outside the component domain: {s:?}"
        );
        assert!(s.to().is_some(), "stanza without to: {s:?}");
    }
}

/// Plays the SIP phone: answers every NOTIFY in `outs` (and in what those answers cause)
/// with 200, returning every output including `outs`.
pub fn phone_answers(h: &mut Harness, outs: Vec<Output>) -> Vec<Output> {
    let mut all = outs.clone();
    let mut pending: Vec<Request> = crate::support::requests(&outs, Method::Notify);
    for _ in 0..32 {
        let Some(n) = pending.pop() else { break };
        let resp = crate::support::response_to(&n, 200, "OK");
        let more = h.input(Input::Sip {
            from: phone(),
            message: SipMessage::Response(resp),
        });
        pending.extend(crate::support::requests(&more, Method::Notify));
        all.extend(more);
    }
    all
}
