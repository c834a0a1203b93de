//! Digest verification of phones' requests (RFC 3261 §22.4, RFC 2617, RFC 2069, RFC 7616),
//! checked against the client side: the server's challenge is parsed by
//! `digest::DigestChallenge::parse` and answered by `digest::authorization`, so each side
//! is the other's test oracle. Manual clock; one behaviour per test.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::sip::digest::{authorization, Algorithm, DigestChallenge};
use xmpp_sip_gateway::core::sip::digest_server::{
    challenge_header_for, AuthCheck, DigestServer, DigestServerConfig, DigestServerError,
    StoredSecret, UserDirectory,
};
use xmpp_sip_gateway::core::sip::{Method, Request};
use xmpp_sip_gateway::core::time::{ManualClock, Timestamp};
use xmpp_sip_gateway::core::users::Users;

const REALM: &str = "sip.example";
const RURI: &str = "sip:sip.example";
const SECRET: &[u8] = b"0123456789abcdef-nonce-key";

struct Dir(HashMap<(String, String), StoredSecret>);

impl UserDirectory for Dir {
    fn secret(&self, username: &str, realm: &str) -> Option<StoredSecret> {
        self.0.get(&(username.into(), realm.into())).cloned()
    }
}

fn dir_with(username: &str, secret: StoredSecret) -> Dir {
    Dir(HashMap::from([((username.into(), REALM.into()), secret)]))
}

fn anna() -> Dir {
    dir_with("anna", StoredSecret::Password("pw".into()))
}

fn clock() -> ManualClock {
    ManualClock::starting_at(Timestamp::from_secs(1_700_000_000))
}

fn server() -> DigestServer {
    DigestServer::new(DigestServerConfig::with_secret(SECRET.to_vec())).unwrap()
}

fn server_with(algorithms: Vec<Algorithm>) -> DigestServer {
    DigestServer::new(DigestServerConfig {
        algorithms,
        ..DigestServerConfig::with_secret(SECRET.to_vec())
    })
    .unwrap()
}

fn register() -> Request {
    let mut r = Request::new(Method::Register, RURI);
    r.headers.push("Call-ID", "c1");
    r.headers.push("CSeq", "1 REGISTER");
    r
}

/// The server's challenge for `alg`, as the client parses it.
fn challenge_for(s: &DigestServer, now: Timestamp, alg: Algorithm) -> DigestChallenge {
    let mut ids = IdGenerator::seeded(1);
    s.challenge(now, &mut ids, REALM, false)
        .iter()
        .map(|h| DigestChallenge::parse(h).unwrap())
        .find(|c| c.algorithm == alg)
        .unwrap()
}

/// `req` with the client's answer to `ch` in `header`.
fn answered(mut req: Request, header: &str, ch: &DigestChallenge, user: &str, pw: &str) -> Request {
    let v = authorization(ch, req.method.as_str(), &req.uri, user, pw, "c0ffee", 1);
    req.headers.push(header, v);
    req
}

fn check(s: &DigestServer, now: Timestamp, req: &Request, users: &dyn UserDirectory) -> AuthCheck {
    s.check(
        now,
        &mut IdGenerator::seeded(2),
        req,
        "Authorization",
        REALM,
        users,
    )
}

fn ok(user: &str) -> AuthCheck {
    AuthCheck::Authenticated {
        username: user.into(),
    }
}

fn is_fresh_challenge(a: &AuthCheck) -> bool {
    matches!(a, AuthCheck::Challenge { stale: false, headers } if !headers.is_empty())
}

#[test]
fn rfc3261_s22_4_no_credentials_get_one_challenge_per_algorithm_sha256_first() {
    let c = clock();
    let got = check(&server(), c.now(), &register(), &anna());
    let AuthCheck::Challenge { headers, stale } = got else {
        panic!("{got:?}")
    };
    assert!(!stale);
    let parsed: Vec<_> = headers
        .iter()
        .map(|h| DigestChallenge::parse(h).unwrap())
        .collect();
    assert_eq!(
        parsed.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
        vec![Algorithm::Sha256, Algorithm::Md5]
    );
    assert!(parsed
        .iter()
        .all(|c| c.realm == REALM && c.qop == vec!["auth"] && !c.stale));
}

#[test]
fn rfc7616_s3_4_sha256_qop_auth_round_trip_with_the_client() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"));
}

#[test]
fn rfc2617_s3_2_2_md5_qop_auth_round_trip_with_the_client() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Md5);
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"));
}

#[test]
fn rfc2069_an_answer_without_qop_is_accepted() {
    let c = clock();
    let s = server();
    let mut ch = challenge_for(&s, c.now(), Algorithm::Md5);
    ch.qop.clear();
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    let v = req.headers.get("Authorization").unwrap();
    assert!(!v.contains("qop") && !v.contains("nc="), "{v}");
    assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"));
}

#[test]
fn rfc7616_s3_4_sess_algorithm_round_trip_when_offered() {
    let c = clock();
    let s = server_with(vec![Algorithm::Sha256Sess, Algorithm::Md5Sess]);
    for alg in [Algorithm::Sha256Sess, Algorithm::Md5Sess] {
        let ch = challenge_for(&s, c.now(), alg);
        let req = answered(register(), "Authorization", &ch, "anna", "pw");
        assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"), "{alg}");
    }
}

#[test]
fn rfc7616_s3_7_an_algorithm_not_offered_is_refused() {
    let c = clock();
    let s = server_with(vec![Algorithm::Sha256]);
    let mut ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    ch.algorithm = Algorithm::Md5;
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &anna())));
}

#[test]
fn rfc7616_s3_3_expired_nonce_with_right_credentials_is_stale() {
    let mut c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    c.advance(Duration::from_secs(300));
    assert_eq!(
        check(&s, c.now(), &req, &anna()),
        ok("anna"),
        "300 s is still fresh"
    );
    c.advance(Duration::from_secs(1));
    let got = check(&s, c.now(), &req, &anna());
    let AuthCheck::Challenge {
        headers,
        stale: true,
    } = got
    else {
        panic!("{got:?}")
    };
    let again = DigestChallenge::parse(&headers[0]).unwrap();
    assert!(again.stale);
    assert_ne!(again.nonce, ch.nonce, "a stale answer carries a new nonce");
    // The retry on the new nonce goes through.
    let retry = answered(register(), "Authorization", &again, "anna", "pw");
    assert_eq!(check(&s, c.now(), &retry, &anna()), ok("anna"));
}

#[test]
fn rfc7616_s3_3_expired_nonce_with_a_wrong_password_is_not_stale() {
    let mut c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let req = answered(register(), "Authorization", &ch, "anna", "wrong");
    c.advance(Duration::from_secs(301));
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &anna())));
}

#[test]
fn rfc3261_s22_4_a_nonce_from_the_future_is_not_accepted() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now() + Duration::from_secs(60), Algorithm::Sha256);
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    assert!(matches!(
        check(&s, c.now(), &req, &anna()),
        AuthCheck::Challenge { .. }
    ));
}

#[test]
fn rfc3261_s22_4_forged_or_malformed_nonces_get_a_fresh_challenge() {
    let c = clock();
    let s = server();
    let real = challenge_for(&s, c.now(), Algorithm::Sha256);
    let (issued, rest) = real.nonce.split_once('.').unwrap();
    let other_key = DigestServer::new(DigestServerConfig::with_secret(
        b"another key, sixteen bytes+".to_vec(),
    ))
    .unwrap();
    let foreign = challenge_for(&other_key, c.now(), Algorithm::Sha256).nonce;
    let later = format!("{:x}", u64::from_str_radix(issued, 16).unwrap() + 1);
    let mut flipped = real.nonce.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    for nonce in [
        foreign,
        format!("{later}.{rest}"),
        flipped,
        "abc".to_string(),
        String::new(),
        "..".to_string(),
        format!("{}.", real.nonce),
    ] {
        let mut ch = real.clone();
        ch.nonce = nonce.clone();
        let req = answered(register(), "Authorization", &ch, "anna", "pw");
        assert!(
            is_fresh_challenge(&check(&s, c.now(), &req, &anna())),
            "{nonce:?}"
        );
    }
}

#[test]
fn rfc3261_s22_4_a_nonce_of_another_realm_is_refused() {
    let c = clock();
    let s = server();
    let mut ids = IdGenerator::seeded(1);
    let h = s.challenge(c.now(), &mut ids, "other.example", false);
    let mut ch = DigestChallenge::parse(&h[0]).unwrap();
    ch.realm = REALM.into();
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &anna())));
}

#[test]
fn rfc3261_s22_4_wrong_password_and_unknown_user_get_the_same_answer() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let wrong_pw = answered(register(), "Authorization", &ch, "anna", "guess");
    let no_user = answered(register(), "Authorization", &ch, "nobody", "pw");
    let a = check(&s, c.now(), &wrong_pw, &anna());
    let b = check(&s, c.now(), &no_user, &anna());
    assert!(is_fresh_challenge(&a));
    assert_eq!(a, b, "byte for byte the same answer");
}

#[test]
fn rfc2617_s3_2_2_5_uri_naming_the_next_hop_is_accepted_as_signed() {
    // SIPp 3.6 writes the remote address; phones behind a proxy the URI they sent.
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Md5);
    let mut req = register();
    let v = authorization(&ch, "REGISTER", "sip:127.0.0.1:5060", "anna", "pw", "cn", 1);
    req.headers.push("Authorization", v);
    assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"));
}

#[test]
fn rfc2617_s3_2_2_5_uri_that_is_no_sip_uri_is_refused() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let mut req = register();
    let v = authorization(
        &ch,
        "REGISTER",
        "http://elsewhere.example/",
        "anna",
        "pw",
        "cn",
        1,
    );
    req.headers.push("Authorization", v);
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &anna())));
}

#[test]
fn rfc2617_s3_2_2_5_a_uri_changed_after_signing_is_refused() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let mut req = register();
    let v = authorization(&ch, "REGISTER", RURI, "anna", "pw", "cn", 1)
        .replace(RURI, "sip:127.0.0.1:5060");
    req.headers.push("Authorization", v);
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &anna())));
}

#[test]
fn rfc3261_s22_4_uri_differing_only_in_host_case_is_accepted() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let mut req = register();
    let v = authorization(&ch, "REGISTER", "sip:SIP.Example", "anna", "pw", "cn", 1);
    req.headers.push("Authorization", v);
    assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"));
}

#[test]
fn rfc2617_s3_2_2_the_method_is_part_of_the_digest() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Md5);
    let mut req = register();
    let v = authorization(&ch, "INVITE", RURI, "anna", "pw", "cn", 1);
    req.headers.push("Authorization", v);
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &anna())));
}

#[test]
fn rfc2617_s3_2_2_qop_auth_without_nc_is_refused() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Md5);
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    let v = req
        .headers
        .get("Authorization")
        .unwrap()
        .replace(", nc=00000001", "");
    let mut stripped = register();
    stripped.headers.push("Authorization", v);
    assert!(is_fresh_challenge(&check(&s, c.now(), &stripped, &anna())));
}

#[test]
fn rfc7616_s3_4_2_stored_ha1_forms_authenticate_each_algorithm() {
    let c = clock();
    let s = server();
    let secret = StoredSecret::ha1_from_password("anna", REALM, "pw");
    let users = dir_with("anna", secret);
    for alg in [Algorithm::Sha256, Algorithm::Md5] {
        let ch = challenge_for(&s, c.now(), alg);
        let req = answered(register(), "Authorization", &ch, "anna", "pw");
        assert_eq!(check(&s, c.now(), &req, &users), ok("anna"), "{alg}");
    }
}

#[test]
fn rfc7616_s3_4_2_a_missing_ha1_form_cannot_authenticate_that_algorithm() {
    let c = clock();
    let s = server();
    let md5_only = StoredSecret::Ha1 {
        md5: Some(Algorithm::Md5.hash_hex("anna:sip.example:pw")),
        sha256: None,
    };
    let users = dir_with("anna", md5_only);
    let sha = challenge_for(&s, c.now(), Algorithm::Sha256);
    let req = answered(register(), "Authorization", &sha, "anna", "pw");
    assert!(is_fresh_challenge(&check(&s, c.now(), &req, &users)));
    let md5 = challenge_for(&s, c.now(), Algorithm::Md5);
    let req = answered(register(), "Authorization", &md5, "anna", "pw");
    assert_eq!(check(&s, c.now(), &req, &users), ok("anna"));
}

#[test]
fn rfc3261_s22_3_proxy_authorization_is_checked_for_the_407_flow() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let req = answered(register(), "Proxy-Authorization", &ch, "anna", "pw");
    let mut ids = IdGenerator::seeded(3);
    assert_eq!(
        s.check(
            c.now(),
            &mut ids,
            &req,
            "Proxy-Authorization",
            REALM,
            &anna()
        ),
        ok("anna")
    );
    assert!(
        is_fresh_challenge(&check(&s, c.now(), &req, &anna())),
        "not in Authorization"
    );
    assert_eq!(
        challenge_header_for("Proxy-Authorization"),
        "Proxy-Authenticate"
    );
    assert_eq!(challenge_header_for("Authorization"), "WWW-Authenticate");
}

#[test]
fn rfc3261_s22_3_the_credentials_for_our_realm_are_picked_among_several() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let mut req = register();
    req.headers.push(
        "Authorization",
        r#"Digest username="anna", realm="upstream.example", nonce="x", uri="sip:sip.example", response="00""#,
    );
    let req = answered(req, "Authorization", &ch, "anna", "pw");
    assert_eq!(check(&s, c.now(), &req, &anna()), ok("anna"));
}

#[test]
fn rfc3261_s10_3_step3_another_users_credentials_are_forbidden_for_the_aor() {
    let c = clock();
    let s = server();
    let ch = challenge_for(&s, c.now(), Algorithm::Sha256);
    let req = answered(register(), "Authorization", &ch, "anna", "pw");
    let mut ids = IdGenerator::seeded(3);
    let as_ben = s.check_identity(
        c.now(),
        &mut ids,
        &req,
        "Authorization",
        REALM,
        &anna(),
        "ben",
    );
    assert_eq!(as_ben, AuthCheck::Forbidden);
    let as_anna = s.check_identity(
        c.now(),
        &mut ids,
        &req,
        "Authorization",
        REALM,
        &anna(),
        "anna",
    );
    assert_eq!(as_anna, ok("anna"));
}

#[test]
fn users_directory_runtime_users_authenticate_with_both_algorithms() {
    let c = clock();
    let s = server();
    let mut users = Users::new(vec![]).unwrap();
    users.add("ben", REALM, "ben-pw").unwrap();
    for alg in [Algorithm::Sha256, Algorithm::Md5] {
        let ch = challenge_for(&s, c.now(), alg);
        let req = answered(register(), "Authorization", &ch, "ben", "ben-pw");
        assert_eq!(check(&s, c.now(), &req, &users), ok("ben"), "{alg}");
    }
}

#[test]
fn digest_server_config_refuses_a_short_key_and_no_algorithm() {
    assert_eq!(
        DigestServer::new(DigestServerConfig::with_secret(b"short".to_vec())).err(),
        Some(DigestServerError::ShortSecret)
    );
    let none = DigestServerConfig {
        algorithms: vec![],
        ..DigestServerConfig::with_secret(SECRET.to_vec())
    };
    assert_eq!(
        DigestServer::new(none).err(),
        Some(DigestServerError::NoAlgorithm)
    );
}

proptest! {
    /// Arbitrary credentials never panic and never authenticate.
    #[test]
    fn digest_server_never_panics_on_arbitrary_authorization(
        value in prop_oneof![
            any::<String>(),
            "[ -~]{0,80}",
            "Digest( [a-z]{1,8}=(\"[ -~]{0,10}\"|[a-z0-9.]{0,8}),?){0,8}",
        ],
        uri in prop_oneof![any::<String>(), Just(RURI.to_string())],
    ) {
        let c = clock();
        let s = server();
        let mut req = register();
        req.uri = uri;
        req.headers.push("Authorization", value);
        let got = check(&s, c.now(), &req, &anna());
        let authenticated = matches!(got, AuthCheck::Authenticated { .. });
        prop_assert!(!authenticated, "{:?}", got);
    }

    /// Changing any one character of a valid answer never panics (some changes still
    /// authenticate: the case of the scheme or of a parameter name, or of the response hex).
    #[test]
    fn digest_server_never_panics_on_mutated_valid_authorization(
        pos in any::<prop::sample::Index>(),
        ch in any::<char>(),
    ) {
        let c = clock();
        let s = server();
        let challenge = challenge_for(&s, c.now(), Algorithm::Sha256);
        let valid = answered(register(), "Authorization", &challenge, "anna", "pw");
        let text = valid.headers.get("Authorization").unwrap().to_string();
        let mut chars: Vec<char> = text.chars().collect();
        let i = pos.index(chars.len());
        chars[i] = ch;
        let mutated: String = chars.into_iter().collect();
        let mut req = register();
        req.headers.push("Authorization", mutated);
        let _ = check(&s, c.now(), &req, &anna());
    }
}
