//! Shared pieces of the usrloc and bla scenarios: an engine with the embedded presence
//! agent and registrar for `sip.test`, the registration sources, and the requests phones
//! and proxies send (built on the scripted peer of `support`).
#![allow(dead_code)]

use xmpp_sip_gateway::core::engine::{EngineConfig, Output};
use xmpp_sip_gateway::core::local_site::LocalSiteConfig;
use xmpp_sip_gateway::core::modules::bla::{BlaConfig, BlaModule};
use xmpp_sip_gateway::core::modules::presence_agent::PresenceAgentModule;
use xmpp_sip_gateway::core::modules::registrar::{
    RegEventConfig, RegistrarModule, RegistrarModuleConfig,
};
use xmpp_sip_gateway::core::modules::usrloc::{UsrlocConfig, UsrlocModule};
use xmpp_sip_gateway::core::modules::Module;
use xmpp_sip_gateway::core::registrar::RegistrarConfig;
use xmpp_sip_gateway::core::sip::{Method, Request};

use super::support::*;

pub const DOMAIN: &str = "sip.test";
pub const BOB: &str = "sip:bob@sip.test";
pub const LINE: &str = "sip:line1@sip.test";
/// The domain whose REGISTERs arrive as copies from the (trusted) proxy.
pub const COPY_DOMAIN: &str = "pbx.test";
/// The AOR whose `reg` event is subscribed.
pub const REG_AOR: &str = "sip:carol@sip.test";

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        site: LocalSiteConfig {
            domains: vec![DOMAIN.into(), COPY_DOMAIN.into()],
            registrar: Some(RegistrarConfig::default()),
            max_subscriptions_per_presentity: 256,
            ..LocalSiteConfig::default()
        },
        ..test_config()
    }
}

pub fn sources() -> RegistrarModuleConfig {
    RegistrarModuleConfig {
        domains: vec![DOMAIN.into()],
        copy_domains: vec![COPY_DOMAIN.into()],
        publish_mark: Some("X-Publish".into()),
        reg_event: RegEventConfig::default(),
    }
}

pub fn usrloc_config() -> UsrlocConfig {
    UsrlocConfig {
        domains: vec![DOMAIN.into()],
        closed_linger: secs(30),
        ..UsrlocConfig::default()
    }
}

/// Presence agent for both domains, the registration sources, usrloc and bla (line
/// `LINE`), in the daemon's order.
pub fn harness_with(sources: RegistrarModuleConfig, usrloc: UsrlocConfig) -> Harness {
    let modules: Vec<Box<dyn Module>> = vec![
        Box::new(PresenceAgentModule::new(vec![
            DOMAIN.into(),
            COPY_DOMAIN.into(),
        ])),
        Box::new(RegistrarModule::with_config(sources)),
        Box::new(UsrlocModule::new(usrloc)),
        Box::new(BlaModule::new(BlaConfig {
            lines: vec![LINE.into()],
        })),
    ];
    Harness::with_modules(engine_config(), modules)
}

pub fn harness() -> Harness {
    harness_with(sources(), usrloc_config())
}

/// A request from the scripted peer with the dialog-forming headers.
pub fn base(h: &mut Harness, method: Method, uri: &str, from: &str, to: &str) -> Request {
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

/// A REGISTER of `contact` for `aor` lasting `expires`; `call_id`/`cseq` order the
/// phone's requests (RFC 3261 §10.3 step 7).
pub fn register(
    h: &mut Harness,
    aor: &str,
    contact: &str,
    expires: u32,
    call_id: &str,
    cseq: u32,
) -> Request {
    let domain = aor.rsplit('@').next().unwrap_or(DOMAIN).to_string();
    let mut r = base(h, Method::Register, &format!("sip:{domain}"), aor, aor);
    r.headers.set("Call-ID", call_id);
    r.headers.set("CSeq", format!("{cseq} REGISTER"));
    r.headers.push("Contact", format!("<{contact}>"));
    r.headers.push("Expires", expires.to_string());
    r
}

/// The final status among `outs`.
pub fn final_status(outs: &[Output]) -> u16 {
    responses(outs)
        .iter()
        .map(|r| r.status)
        .find(|s| *s >= 200)
        .expect("a final response")
}

/// A SIP watcher's SUBSCRIBE to `presentity` for `event` with Contact `contact`.
pub fn subscribe(
    h: &mut Harness,
    presentity: &str,
    event: &str,
    watcher: &str,
    contact: &str,
) -> Request {
    let mut r = base(h, Method::Subscribe, presentity, watcher, presentity);
    r.headers.push("Event", event);
    r.headers.push("Expires", "3600");
    r.headers.push("Contact", format!("<{contact}>"));
    r
}

/// Answers every NOTIFY among `outs` with 200; returns what that led to.
pub fn ack_notifies(h: &mut Harness, outs: &[Output]) -> Vec<Output> {
    let mut more = Vec::new();
    for n in requests(outs, Method::Notify) {
        more.extend(h.answer(&n, 200, |_| {}));
    }
    more
}

pub fn body_text(r: &Request) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The `<basic>` values of a PIDF body, in document order.
pub fn basics(body: &str) -> Vec<String> {
    body.split("<basic>")
        .skip(1)
        .filter_map(|s| s.split("</basic>").next())
        .map(str::to_string)
        .collect()
}

/// The `<contact>` values of a PIDF body, in document order.
pub fn contacts(body: &str) -> Vec<String> {
    body.split("<contact")
        .skip(1)
        .filter_map(|s| s.split_once('>').map(|(_, rest)| rest))
        .filter_map(|s| s.split("</contact>").next())
        .map(str::to_string)
        .collect()
}

/// Sends [`register`] from the scripted peer; returns the outputs.
pub fn registered(
    h: &mut Harness,
    aor: &str,
    contact: &str,
    expires: u32,
    call_id: &str,
    cseq: u32,
) -> Vec<Output> {
    let req = register(h, aor, contact, expires, call_id, cseq);
    h.peer_request(req)
}
