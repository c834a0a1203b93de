//! Digest answers to 401/407 on our requests (RFC 3261 §22.2, RFC 7616).

mod support;

use md5::{Digest as _, Md5};
use sha2::Sha256;
use support::*;
use xmpp_sip_gateway::core::modules::admin::AdminReply;
use xmpp_sip_gateway::core::sip::{Method, Request};

fn param(value: &str, name: &str) -> Option<String> {
    value.trim_start_matches("Digest").split(',').find_map(|p| {
        let (n, v) = p.trim().split_once('=')?;
        (n.trim() == name).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn publish(h: &mut Harness) -> Request {
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    one_request(&outs, Method::Publish)
}

fn expected(alg: &str, method: &str, uri: &str, nonce: &str, nc: &str, cnonce: &str) -> String {
    let hash = |s: String| -> String {
        if alg == "SHA-256" {
            hex::encode(Sha256::digest(s.as_bytes()))
        } else {
            hex::encode(Md5::digest(s.as_bytes()))
        }
    };
    let ha1 = hash("gw:sip.example:secret".to_string());
    let ha2 = hash(format!("{method}:{uri}"));
    hash(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

fn challenge_and_check(alg: &str) {
    let mut h = Harness::new();
    let p = publish(&mut h);
    let outs = h.answer(&p, 401, |r| {
        r.headers.push(
            "WWW-Authenticate",
            format!("Digest realm=\"sip.example\", nonce=\"n0nce\", qop=\"auth\", algorithm={alg}"),
        );
    });
    let again = one_request(&outs, Method::Publish);
    assert_eq!(cseq_of(&again), cseq_of(&p) + 1, "new CSeq");
    assert_eq!(header(&again, "Call-ID"), header(&p, "Call-ID"));
    assert_eq!(
        tag_of(header(&again, "From").unwrap()),
        tag_of(header(&p, "From").unwrap())
    );
    let auth = header(&again, "Authorization").expect("Authorization");
    let cnonce = param(auth, "cnonce").unwrap();
    let nc = param(auth, "nc").unwrap();
    assert_eq!(param(auth, "username").as_deref(), Some("gw"));
    assert_eq!(
        param(auth, "response").unwrap(),
        expected(alg, "PUBLISH", "sip:ben@sip.example", "n0nce", &nc, &cnonce)
    );
}

#[test]
fn challenge_401_md5_is_answered_once_with_credentials() {
    challenge_and_check("MD5");
}

#[test]
fn challenge_401_sha256_is_answered_once_with_credentials() {
    challenge_and_check("SHA-256");
}

#[test]
fn challenge_407_is_answered_with_proxy_authorization() {
    let mut h = Harness::new();
    let p = publish(&mut h);
    let outs = h.answer(&p, 407, |r| {
        r.headers.push(
            "Proxy-Authenticate",
            "Digest realm=\"sip.example\", nonce=\"x\", qop=\"auth\"",
        );
    });
    let again = one_request(&outs, Method::Publish);
    assert!(header(&again, "Proxy-Authorization").is_some());
}

#[test]
fn second_401_without_stale_is_final() {
    let mut h = Harness::new();
    let p = publish(&mut h);
    let ch = digest_challenge(
        "WWW-Authenticate",
        r#"realm="sip.example", nonce="n1", qop="auth""#,
    );
    let again = one_request(&h.answer(&p, 401, &ch), Method::Publish);
    let outs = h.answer(&again, 401, &ch);
    assert!(
        requests(&outs, Method::Publish).is_empty(),
        "no third attempt"
    );
    let replies = admin_replies(&outs);
    assert!(
        matches!(&replies[..], [(_, AdminReply::Published(o))] if o.code == 401),
        "{replies:?}"
    );
}

#[test]
fn second_401_with_stale_is_answered_again() {
    let mut h = Harness::new();
    let p = publish(&mut h);
    let again = one_request(
        &h.answer(&p, 401, |r| {
            r.headers.push(
                "WWW-Authenticate",
                "Digest realm=\"sip.example\", nonce=\"n1\", qop=\"auth\"",
            )
        }),
        Method::Publish,
    );
    let outs = h.answer(&again, 401, |r| {
        r.headers.push(
            "WWW-Authenticate",
            "Digest realm=\"sip.example\", nonce=\"n2\", qop=\"auth\", stale=true",
        )
    });
    let third = one_request(&outs, Method::Publish);
    assert_eq!(
        param(header(&third, "Authorization").unwrap(), "nonce").as_deref(),
        Some("n2")
    );
}

/// Credentials bound to another realm are not offered; the challenge is final.
#[test]
fn challenge_for_an_unknown_realm_is_final() {
    use xmpp_sip_gateway::core::engine::Credential;
    let mut cfg = test_config();
    cfg.credentials = vec![Credential {
        realm: Some("other.example".into()),
        username: "gw".into(),
        password: "secret".into(),
    }];
    let mut h = Harness::with_config(cfg);
    let p = publish(&mut h);
    let outs = h.answer(&p, 401, |r| {
        r.headers.push(
            "WWW-Authenticate",
            "Digest realm=\"sip.example\", nonce=\"n1\", qop=\"auth\"",
        )
    });
    assert!(requests(&outs, Method::Publish).is_empty());
}
