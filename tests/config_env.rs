//! Environment overrides: prefix `XSG`, `__` between key segments (product.md, Names).
//! The variables are passed as an explicit map so tests do not race on the process env.

use std::collections::HashMap;

use xmpp_sip_gateway::config;

fn sample() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn env_overrides_sip_udp_listen() {
    let c = config::load_str(&sample(), env(&[("XSG_SIP__UDP_LISTEN", "127.0.0.1:5999")])).unwrap();
    assert_eq!(c.sip.udp_listen, Some("127.0.0.1:5999".parse().unwrap()));
}

#[test]
fn env_overrides_numbers() {
    let c = config::load_str(&sample(), env(&[("XSG_PUA__DEFAULT_EXPIRES", "600")])).unwrap();
    assert_eq!(c.engine.default_expires, 600);
}

#[test]
fn env_overrides_lists_comma_separated() {
    let c = config::load_str(
        &sample(),
        env(&[("XSG_SIP__TRUSTED", "10.0.0.0/8,192.168.1.1")]),
    )
    .unwrap();
    let nets: Vec<String> = c.engine.trusted.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.1.1/32"]);
}

#[test]
fn env_override_is_validated_with_its_path() {
    let err = config::load_str(&sample(), env(&[("XSG_ADMIN__LISTEN", "nowhere")])).unwrap_err();
    assert!(err.has_path("admin.listen"), "{err}");
}

#[test]
fn env_without_prefix_is_ignored() {
    let c = config::load_str(&sample(), env(&[("SIP__UDP_LISTEN", "127.0.0.1:5999")])).unwrap();
    assert_eq!(c.sip.udp_listen, Some("127.0.0.1:5060".parse().unwrap()));
}

#[test]
fn env_without_section_is_not_a_config_key() {
    // `XSG_ADMIN` is the URL the `ctl` client reads; it must not become a top-level key.
    let c = config::load_str(&sample(), env(&[("XSG_ADMIN", "http://127.0.0.1:8560")])).unwrap();
    assert!(c.admin.enabled);
}
