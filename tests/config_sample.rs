//! The sample `gateway.toml` at the repository root parses, validates, and runs the demo on
//! loopback (architecture.md: "commented sample; parsed by a test; runs the demo as is").

use std::collections::HashMap;

use xmpp_sip_gateway::config::{self, BridgeMode, LogFormat};

fn sample() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"))
        .expect("gateway.toml at the repository root")
}

#[test]
fn sample_config_parses_and_validates() {
    let c = config::load_str(&sample(), Some(HashMap::new())).expect("sample validates");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.sip.udp_listen, Some("127.0.0.1:5060".parse().unwrap()));
    assert_eq!(c.sip.tcp_listen, Some("127.0.0.1:5060".parse().unwrap()));
    assert_eq!(c.engine.default_expires, 3600);
    assert_eq!(c.engine.max_message_size, 65536);
    assert_eq!(
        c.bridge.as_ref().map(|b| b.mode),
        Some(BridgeMode::Notifier)
    );
}

#[test]
fn sample_config_listens_on_loopback_only() {
    let c = config::load_str(&sample(), Some(HashMap::new())).unwrap();
    for addr in [c.sip.udp_listen, c.sip.tcp_listen, Some(c.admin.listen)]
        .into_iter()
        .flatten()
    {
        assert!(addr.ip().is_loopback(), "{addr} is not loopback");
    }
    assert!(c.engine.trusted.iter().all(|n| n.addr().is_loopback()));
}

#[test]
fn sample_config_examples_in_comments_validate_when_enabled() {
    // The commented "example" lines must be valid too: uncomment them and validate.
    let enabled: String = sample()
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let example = t.ends_with("# example") || t.starts_with("# [[sip.credentials]]");
            if example || (t.starts_with("# ") && t.contains(" = ") && t.contains("# required")) {
                let uncommented = t.trim_start_matches("# ");
                let code = uncommented.split("  #").next().unwrap_or(uncommented);
                code.trim_end().to_string()
            } else if let Some(rest) = t.strip_prefix("# realm = ") {
                format!("realm = {rest}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = config::load_str(&enabled, Some(HashMap::new())).expect("examples validate");
    assert_eq!(c.engine.credentials.len(), 1);
    assert_eq!(
        c.engine.credentials[0].realm.as_deref(),
        Some("example.org")
    );
    assert!(c.engine.outbound_proxy.is_some());
    assert_eq!(c.sip.public_host.as_deref(), Some("gw.example.org"));
    assert_eq!(c.registrations.copy_domains, ["pbx.sip.test"]);
    assert_eq!(
        c.usrloc.as_ref().map(|u| u.domains.clone()),
        Some(vec!["sip.test".to_string()])
    );
    assert_eq!(c.bla.as_ref().map(|b| b.lines.len()), Some(1));
}
