//! Round-trip properties of the address mapping (issue: presence bridge, item 3).

use proptest::prelude::*;
use xmpp_sip_gateway::core::xmpp::address::{
    escape_localpart, unescape_localpart, DomainMap, JidParts, MappingScheme,
};

fn map(scheme: MappingScheme) -> DomainMap {
    DomainMap {
        xmpp_domain: "xmpp.example.org".into(),
        component_domain: "sip.example.org".into(),
        sip_domain: "example.org".into(),
        gateway_sip_host: "gw.example.org".into(),
        scheme,
    }
}

fn sip_user() -> impl Strategy<Value = String> {
    // Any printable text, including the XEP-0106 specials and backslash sequences.
    proptest::string::string_regex("[a-zA-Z0-9._~!$&'()*+,;=/ \"<>:@\\\\üé-]{1,40}").unwrap()
}

proptest! {
    #[test]
    fn escaping_then_unescaping_gives_back_the_source(s in "\\PC{0,60}") {
        prop_assert_eq!(unescape_localpart(&escape_localpart(&s)), s);
    }

    #[test]
    fn sip_user_round_trips_through_every_scheme(user in sip_user(), scheme in 0..3u8) {
        let scheme = match scheme {
            0 => MappingScheme::Domain,
            1 => MappingScheme::Escaped,
            _ => MappingScheme::Delimiter('*'),
        };
        prop_assume!(!(matches!(scheme, MappingScheme::Delimiter(_)) && user.contains('*')));
        prop_assume!(!user.starts_with(' ') && !user.ends_with(' '));
        let m = map(scheme);
        let uri = format!("sip:{}@example.org", xmpp_sip_gateway::core::xmpp::address::encode_sip_user(&user));
        let jid = m.sip_user_to_jid(&uri).expect("maps to a JID");
        // The JID is valid on its own (parses back identically).
        prop_assert_eq!(JidParts::parse(&jid.to_string()).unwrap(), jid.clone());
        let back = m.jid_to_sip_user(&jid).expect("maps back");
        let again = m.sip_user_to_jid(&back).expect("maps again");
        prop_assert_eq!(again, jid);
    }

    #[test]
    fn xmpp_user_round_trips_through_its_sip_uri(local in "[a-z0-9._-]{1,30}", delim in proptest::bool::ANY) {
        let m = map(if delim { MappingScheme::Delimiter('*') } else { MappingScheme::Domain });
        let jid = JidParts::parse(&format!("{local}@xmpp.example.org")).unwrap();
        let uri = m.xmpp_user_to_sip_uri(&jid).unwrap();
        prop_assert_eq!(m.sip_uri_to_xmpp_user(&uri).unwrap(), jid);
    }
}

#[test]
fn domain_scheme_maps_component_domain_to_sip_domain() {
    let m = map(MappingScheme::Domain);
    assert_eq!(
        m.sip_user_to_jid("sip:bob@example.org")
            .unwrap()
            .to_string(),
        "bob@sip.example.org"
    );
    assert_eq!(
        m.jid_to_sip_user(&JidParts::parse("bob@sip.example.org").unwrap())
            .unwrap(),
        "sip:bob@example.org"
    );
}

#[test]
fn escaped_scheme_embeds_the_sip_domain() {
    let m = map(MappingScheme::Escaped);
    assert_eq!(
        m.sip_user_to_jid("sip:bob@other.example")
            .unwrap()
            .to_string(),
        "bob\\40other.example@sip.example.org"
    );
}

#[test]
fn delimiter_scheme_is_kamailio_compatible() {
    let m = map(MappingScheme::Delimiter('*'));
    assert_eq!(
        m.sip_user_to_jid("sip:bob@example.org")
            .unwrap()
            .to_string(),
        "bob*example.org@sip.example.org"
    );
    let alice = JidParts::parse("alice@xmpp.example.org").unwrap();
    assert_eq!(
        m.xmpp_user_to_sip_uri(&alice).unwrap(),
        "sip:alice*xmpp.example.org@gw.example.org"
    );
}

#[test]
fn unserved_domains_are_refused() {
    let m = map(MappingScheme::Domain);
    assert!(m.sip_user_to_jid("sip:bob@elsewhere.example").is_err());
    assert!(m
        .xmpp_user_to_sip_uri(&JidParts::parse("eve@other.example").unwrap())
        .is_err());
}
