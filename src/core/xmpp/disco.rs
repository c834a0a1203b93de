//! The component's own IQ duties: XEP-0030 service discovery, XEP-0199 ping, XEP-0092
//! software version, and `service-unavailable` for everything else (RFC 6120 §8.2.3,
//! standards.md §2 and §16 case 4).
//!
//! Pure: the engine routes an IQ here when no module claims it; the reply is an output.

use crate::core::xmpp::address::JidParts;
use crate::core::xmpp::stanza::{Condition, Element, Iq, IqType, Stanza};

pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_VERSION: &str = "jabber:iq:version";

/// Features announced in disco#info, in this order.
pub const FEATURES: [&str; 4] = [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION];

/// What the component says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Identity name in disco#info and `<name/>` in XEP-0092.
    pub name: String,
    pub version: String,
}

impl Default for ComponentInfo {
    fn default() -> Self {
        ComponentInfo {
            name: "xmpp-sip-gateway".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The reply to an IQ addressed to the component's domain or one of its JIDs, or `None`
/// for a `result`/`error` IQ (never answered, RFC 6120 §8.2.3 and §8.3.1).
///
/// - disco#info `get` to the bare component domain: identity `gateway`/`sip` and
///   [`FEATURES`] (XEP-0030 §3.1; the `sip` type is in the XMPP registrar's gateway list);
///   with a `node`: `item-not-found`.
/// - disco#items `get` to the component domain: an empty list (users are not enumerated).
/// - XEP-0199 ping `get` to any JID of the domain: an empty result.
/// - XEP-0092 version `get` to the component domain: name and version.
/// - anything else `get`/`set`: `service-unavailable` (standards.md §16 case 4).
///
/// The reply always comes from a JID in `component_domain` and goes to the requester
/// (case 3): from the IQ's `to` when it lies in the domain, else from the domain itself.
pub fn component_iq_reply(component_domain: &str, iq: &Iq, info: &ComponentInfo) -> Option<Stanza> {
    if matches!(iq.kind, IqType::Result | IqType::Error) {
        return None;
    }
    let ours = iq.to.domain.eq_ignore_ascii_case(component_domain);
    let to_domain_itself = ours && iq.to.local.is_none() && iq.to.resource.is_none();
    let answer = match &iq.payload {
        Some(q) if iq.kind == IqType::Get && ours => answer_get(q, to_domain_itself, info),
        _ => Err(Condition::ServiceUnavailable),
    };
    let from = if ours {
        iq.to.clone()
    } else {
        JidParts {
            local: None,
            domain: component_domain.to_ascii_lowercase(),
            resource: None,
        }
    };
    let reply = match answer {
        Ok(payload) => Iq {
            from,
            ..iq.result(payload)
        },
        Err(condition) => {
            let Some(Stanza::Iq(err)) = Stanza::Iq(iq.clone()).error_reply(condition, None) else {
                return None;
            };
            Iq { from, ..err }
        }
    };
    Some(Stanza::Iq(reply))
}

fn answer_get(
    q: &Element,
    to_domain_itself: bool,
    info: &ComponentInfo,
) -> Result<Option<Element>, Condition> {
    if q.is("ping", NS_PING) {
        return Ok(None);
    }
    if !to_domain_itself {
        return Err(Condition::ServiceUnavailable);
    }
    if q.is("query", NS_DISCO_INFO) {
        if q.attr("node").is_some() {
            return Err(Condition::ItemNotFound);
        }
        let mut query = Element::new("query", NS_DISCO_INFO).with_child(
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("category", "gateway")
                .with_attr("type", "sip")
                .with_attr("name", info.name.clone()),
        );
        for var in FEATURES {
            query = query.with_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", var));
        }
        return Ok(Some(query));
    }
    if q.is("query", NS_DISCO_ITEMS) {
        if q.attr("node").is_some() {
            return Err(Condition::ItemNotFound);
        }
        return Ok(Some(Element::new("query", NS_DISCO_ITEMS)));
    }
    if q.is("query", NS_VERSION) {
        return Ok(Some(
            Element::new("query", NS_VERSION)
                .with_child(Element::new("name", NS_VERSION).with_text(info.name.clone()))
                .with_child(Element::new("version", NS_VERSION).with_text(info.version.clone())),
        ));
    }
    Err(Condition::ServiceUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::xmpp::stanza::{ErrorType, NS_STANZAS};
    use proptest::prelude::*;

    const DOMAIN: &str = "sip.example";

    fn jid(s: &str) -> JidParts {
        JidParts::parse(s).unwrap()
    }

    fn get(to: &str, payload: Element) -> Iq {
        Iq {
            from: jid("anna@xmpp.example/desk"),
            to: jid(to),
            id: "q1".into(),
            kind: IqType::Get,
            payload: Some(payload),
            error: None,
        }
    }

    fn reply(iq: &Iq) -> Iq {
        match component_iq_reply(DOMAIN, iq, &ComponentInfo::default()) {
            Some(Stanza::Iq(r)) => r,
            other => panic!("expected an iq reply, got {other:?}"),
        }
    }

    #[test]
    fn disco_info_announces_gateway_sip_identity_and_features() {
        let r = reply(&get(DOMAIN, Element::new("query", NS_DISCO_INFO)));
        assert_eq!(r.kind, IqType::Result);
        assert_eq!(r.id, "q1");
        let q = r.payload.unwrap();
        let identity = q.elements().find(|e| e.name == "identity").unwrap();
        assert_eq!(identity.attr("category"), Some("gateway"));
        assert_eq!(identity.attr("type"), Some("sip"));
        let features: Vec<_> = q
            .elements()
            .filter(|e| e.name == "feature")
            .filter_map(|e| e.attr("var"))
            .collect();
        assert_eq!(features, FEATURES.to_vec());
    }

    #[test]
    fn disco_info_with_unknown_node_is_item_not_found() {
        let r = reply(&get(
            DOMAIN,
            Element::new("query", NS_DISCO_INFO).with_attr("node", "x"),
        ));
        assert_eq!(r.error.unwrap().condition, Condition::ItemNotFound);
    }

    #[test]
    fn disco_items_is_an_empty_list() {
        let r = reply(&get(DOMAIN, Element::new("query", NS_DISCO_ITEMS)));
        assert_eq!(r.kind, IqType::Result);
        let q = r.payload.unwrap();
        assert!(q.is("query", NS_DISCO_ITEMS));
        assert!(q.children.is_empty());
    }

    #[test]
    fn ping_gets_an_empty_result() {
        let r = reply(&get(DOMAIN, Element::new("ping", NS_PING)));
        assert_eq!(r.kind, IqType::Result);
        assert_eq!(r.payload, None);
        assert_eq!(r.to, jid("anna@xmpp.example/desk"));
        assert_eq!(r.from, jid(DOMAIN));
    }

    #[test]
    fn ping_to_a_user_jid_is_answered_from_that_jid() {
        let r = reply(&get("ben@sip.example", Element::new("ping", NS_PING)));
        assert_eq!(r.kind, IqType::Result);
        assert_eq!(r.from, jid("ben@sip.example"));
    }

    #[test]
    fn version_reports_name_and_cargo_version() {
        let r = reply(&get(DOMAIN, Element::new("query", NS_VERSION)));
        let q = r.payload.unwrap();
        let name = q.elements().find(|e| e.name == "name").unwrap().text();
        let version = q.elements().find(|e| e.name == "version").unwrap().text();
        assert_eq!(name, "xmpp-sip-gateway");
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
    }

    /// standards.md §16 case 4.
    #[test]
    fn unknown_namespace_is_service_unavailable_case_4() {
        let r = reply(&get(DOMAIN, Element::new("query", "urn:x:unknown")));
        assert_eq!(r.kind, IqType::Error);
        assert_eq!(r.id, "q1");
        assert_eq!(r.to, jid("anna@xmpp.example/desk"));
        let e = r.error.unwrap();
        assert_eq!(e.condition, Condition::ServiceUnavailable);
        assert_eq!(e.kind, ErrorType::Cancel);
        // And on the wire: <error type='cancel'><service-unavailable xmlns=stanzas/>.
        let wire = Stanza::Iq(Iq {
            error: Some(e),
            ..r
        })
        .to_element();
        let error = wire.elements().find(|c| c.name == "error").unwrap();
        assert!(error
            .elements()
            .any(|c| c.is("service-unavailable", NS_STANZAS)));
    }

    #[test]
    fn set_on_a_known_namespace_is_service_unavailable() {
        let mut iq = get(DOMAIN, Element::new("query", NS_VERSION));
        iq.kind = IqType::Set;
        assert_eq!(
            reply(&iq).error.unwrap().condition,
            Condition::ServiceUnavailable
        );
    }

    #[test]
    fn disco_info_to_a_user_jid_is_service_unavailable() {
        let r = reply(&get(
            "ben@sip.example",
            Element::new("query", NS_DISCO_INFO),
        ));
        assert_eq!(r.error.unwrap().condition, Condition::ServiceUnavailable);
    }

    /// standards.md §16 case 5 (and RFC 6120 §8.2.3 for results).
    #[test]
    fn results_and_errors_are_not_answered() {
        for kind in [IqType::Result, IqType::Error] {
            let mut iq = get(DOMAIN, Element::new("ping", NS_PING));
            iq.kind = kind;
            assert_eq!(
                component_iq_reply(DOMAIN, &iq, &ComponentInfo::default()),
                None
            );
        }
    }

    fn arb_payload() -> impl Strategy<Value = Option<Element>> {
        proptest::option::of(
            prop_oneof![
                Just(("query", NS_DISCO_INFO)),
                Just(("query", NS_DISCO_ITEMS)),
                Just(("query", NS_VERSION)),
                Just(("ping", NS_PING)),
                Just(("query", "urn:x:unknown")),
            ]
            .prop_map(|(n, ns)| Element::new(n, ns)),
        )
    }

    proptest! {
        /// standards.md §16 case 3: every reply carries from and to, the from domain is
        /// the component domain, and the to is the requester.
        #[test]
        fn every_reply_is_from_the_component_domain_case_3(
            local in proptest::option::of("[a-z]{1,6}"),
            domain in prop_oneof![Just("sip.example".to_string()), Just("SIP.example".to_string()), "[a-z]{1,6}\\.example"],
            resource in proptest::option::of("[a-z]{1,6}"),
            kind in prop_oneof![Just(IqType::Get), Just(IqType::Set)],
            payload in arb_payload(),
        ) {
            let iq = Iq {
                from: jid("anna@xmpp.example/desk"),
                to: JidParts { local, domain: domain.to_ascii_lowercase(), resource },
                id: "q".into(),
                kind,
                payload,
                error: None,
            };
            let r = component_iq_reply(DOMAIN, &iq, &ComponentInfo::default()).unwrap();
            let el = r.to_element();
            prop_assert!(el.attr("to").is_some());
            let from = JidParts::parse(el.attr("from").unwrap()).unwrap();
            prop_assert_eq!(from.domain, DOMAIN);
            prop_assert_eq!(r.to().unwrap(), iq.from);
        }
    }
}
