//! hickory-style: an unknown key injected into EVERY table of the sample config (and of a
//! sample with every optional table present) is rejected, and the error names its path.

use std::collections::HashMap;

use toml::Value;
use xmpp_sip_gateway::config;

const INJECTED: &str = "no_such_key";

fn sample() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap()
}

/// The sample plus the tables it only shows commented out.
fn full_sample() -> String {
    format!(
        "{}\n[[sip.credentials]]\nrealm = \"example.org\"\nusername = \"gw\"\npassword = \"pw\"\n",
        sample()
    )
}

/// Every table of a document, as (path as the config reports it, pointer to reach it).
fn table_paths(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Table(t) => {
            out.push(path.clone());
            for (k, child) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                table_paths(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                table_paths(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn table_at<'a>(root: &'a mut Value, path: &str) -> &'a mut toml::Table {
    let mut cur = root;
    if !path.is_empty() {
        for seg in path.split('.') {
            let (name, idx) = match seg.split_once('[') {
                Some((n, rest)) => (
                    n,
                    Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
                ),
                None => (seg, None),
            };
            cur = cur.get_mut(name).unwrap();
            if let Some(i) = idx {
                cur = cur.get_mut(i).unwrap();
            }
        }
    }
    cur.as_table_mut().unwrap()
}

fn assert_every_table_rejects_unknown_key(text: &str) -> usize {
    let doc: Value = toml::from_str(text).unwrap();
    let mut paths = Vec::new();
    table_paths(&doc, String::new(), &mut paths);
    for path in &paths {
        let mut copy = doc.clone();
        table_at(&mut copy, path).insert(INJECTED.into(), Value::Integer(1));
        let injected = toml::to_string(&copy).unwrap();
        let err = config::parse_str(&injected, Some(HashMap::new()))
            .expect_err(&format!("unknown key in table {path:?} was accepted"));
        let expected = if path.is_empty() {
            INJECTED.to_string()
        } else {
            format!("{path}.{INJECTED}")
        };
        assert!(
            err.has_path(&expected),
            "table {path:?}: got {err}, expected path {expected}"
        );
    }
    paths.len()
}

#[test]
fn unknown_key_in_every_table_of_sample_is_rejected_with_its_path() {
    let n = assert_every_table_rejects_unknown_key(&sample());
    // root, log, sip, pua, notifier, store, admin, xmpp, bridge, bridge.domains[0]
    assert!(n >= 10, "only {n} tables visited");
}

#[test]
fn unknown_key_in_credentials_table_is_rejected_with_its_path() {
    let n = assert_every_table_rejects_unknown_key(&full_sample());
    assert!(n >= 11, "only {n} tables visited");
}

#[test]
fn unknown_key_from_environment_is_rejected() {
    let env = HashMap::from([("XSG_SIP__UDP_LISTNE".to_string(), "127.0.0.1:1".to_string())]);
    let err = config::parse_str(&sample(), Some(env)).unwrap_err();
    assert!(err.has_path("sip.udp_listne"), "{err}");
}
