//! RFC 3903 publication client (standards.md §10, §16 cases 62–67).

mod support;

use support::*;
use xmpp_sip_gateway::core::engine::Output;
use xmpp_sip_gateway::core::sip::{Method, Request};

const BEN: &str = "sip:ben@sip.example";

/// Publishes PIDF_OPEN with a time limit of `expires` and returns the PUBLISH sent.
fn initial(h: &mut Harness, expires: i64) -> Request {
    let (_, outs) = h.admin(Harness::publish_cmd(BEN, expires, Some(PIDF_OPEN), None));
    one_request(&outs, Method::Publish)
}

fn ok_with(h: &mut Harness, req: &Request, etag: &str, expires: u32) -> Vec<Output> {
    h.answer(req, 200, |r| {
        r.headers.push("SIP-ETag", etag);
        r.headers.push("Expires", expires.to_string());
    })
}

/// Case 62: the initial PUBLISH carries the body, no SIP-If-Match, the requested Expires.
#[test]
fn case62_initial_publish_carries_body_without_if_match() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    assert_eq!(p.uri, BEN);
    assert_eq!(header(&p, "Event"), Some("presence"));
    assert_eq!(header(&p, "Expires"), Some("3600"));
    assert_eq!(header(&p, "SIP-If-Match"), None);
    assert_eq!(header(&p, "Content-Type"), Some("application/pidf+xml"));
    assert_eq!(p.body, PIDF_OPEN.as_bytes());
}

/// Case 62: a 200 with Expires 1800 → the refresh goes out within 80–90 % of 1800 s.
#[test]
fn case62_refresh_is_sent_within_the_refresh_window_of_the_granted_interval() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    ok_with(&mut h, &p, "e1", 1800);
    assert!(
        requests(&h.advance(secs(1439)), Method::Publish).is_empty(),
        "no refresh before 80 %"
    );
    let outs = h.advance(secs(1621 - 1439));
    assert_eq!(
        requests(&outs, Method::Publish).len(),
        1,
        "one refresh by 90 %"
    );
}

/// Case 63: the refresh has no body and SIP-If-Match of the stored tag; the next one uses
/// the tag of the latest 200.
#[test]
fn case63_refresh_has_no_body_and_uses_the_latest_etag() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    ok_with(&mut h, &p, "e1", 1800);
    let r1 = h.next_request(Method::Publish, 1621).0;
    assert!(r1.body.is_empty());
    assert_eq!(header(&r1, "Content-Type"), None);
    assert_eq!(header(&r1, "SIP-If-Match"), Some("e1"));
    ok_with(&mut h, &r1, "e2", 1800);
    let r2 = h.next_request(Method::Publish, 1621).0;
    assert_eq!(header(&r2, "SIP-If-Match"), Some("e2"));
}

/// Case 64: 412 discards the tag and publishes the full body anew; the failed request is
/// not repeated.
#[test]
fn case64_412_republishes_full_state_without_if_match() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    ok_with(&mut h, &p, "e1", 1800);
    let r1 = h.next_request(Method::Publish, 1621).0;
    let outs = h.answer(&r1, 412, |_| {});
    let again = one_request(&outs, Method::Publish);
    assert_eq!(header(&again, "SIP-If-Match"), None);
    assert_eq!(again.body, PIDF_OPEN.as_bytes());
}

/// Case 65: 423 with Min-Expires 7200 → the request is repeated with Expires 7200.
#[test]
fn case65_423_retries_with_min_expires() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    let outs = h.answer(&p, 423, |r| r.headers.push("Min-Expires", "7200"));
    let again = one_request(&outs, Method::Publish);
    assert_eq!(header(&again, "Expires"), Some("7200"));
    assert_eq!(again.body, PIDF_OPEN.as_bytes(), "still an initial PUBLISH");
}

/// Case 66: removal is Expires 0 with SIP-If-Match and no body.
#[test]
fn case66_removal_sends_expires_zero_with_if_match_and_no_body() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    ok_with(&mut h, &p, "e1", 1800);
    let (_, outs) = h.admin(Harness::publish_cmd(BEN, 0, None, None));
    let rm = one_request(&outs, Method::Publish);
    assert_eq!(header(&rm, "Expires"), Some("0"));
    assert_eq!(header(&rm, "SIP-If-Match"), Some("e1"));
    assert!(rm.body.is_empty());
}

/// Case 67: two changes while a PUBLISH is outstanding → nothing is sent until its final
/// response, then one PUBLISH with the latest state.
#[test]
fn case67_changes_during_an_outstanding_publish_wait_and_coalesce() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    let (_, o1) = h.admin(Harness::publish_cmd(BEN, -1, Some(PIDF_CLOSED), None));
    let (_, o2) = h.admin(Harness::publish_cmd(
        BEN,
        -1,
        Some("<presence-latest/>"),
        None,
    ));
    assert!(requests(&o1, Method::Publish).is_empty() && requests(&o2, Method::Publish).is_empty());
    let outs = ok_with(&mut h, &p, "e1", 1800);
    let next = one_request(&outs, Method::Publish);
    assert_eq!(next.body, b"<presence-latest/>");
    assert_eq!(
        header(&next, "SIP-If-Match"),
        Some("e1"),
        "a modify of the published entity"
    );
}

/// A 503 with Retry-After is honoured: nothing before it, a retry after it.
#[test]
fn retry_after_on_503_delays_the_retry() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    h.answer(&p, 503, |r| r.headers.push("Retry-After", "120"));
    assert!(requests(&h.advance(secs(119)), Method::Publish).is_empty());
    let again = one_request(&h.advance(secs(2)), Method::Publish);
    assert_eq!(again.body, PIDF_OPEN.as_bytes());
}

/// Other failures back off exponentially (each wait longer than the one before).
#[test]
fn failures_back_off_exponentially() {
    let mut h = Harness::new();
    let mut req = initial(&mut h, -1);
    let mut waits = Vec::new();
    for _ in 0..4 {
        h.answer(&req, 500, |_| {});
        let start = h.now();
        let mut waited = 0;
        loop {
            let outs = h.advance(secs(1));
            waited += 1;
            if let Some(r) = requests(&outs, Method::Publish).into_iter().next() {
                req = r;
                break;
            }
            assert!(waited < 700, "no retry");
        }
        waits.push(h.now().as_secs() - start.as_secs());
    }
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
    assert!(waits[3] > waits[0], "{waits:?}");
}

/// A publication without time limit is refreshed again and again.
#[test]
fn publication_without_time_limit_is_refreshed_until_removed() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    ok_with(&mut h, &p, "e1", 600);
    for i in 2..6 {
        let r = h.next_request(Method::Publish, 541).0;
        ok_with(&mut h, &r, &format!("e{i}"), 600);
    }
}

/// A publication with a time limit is not refreshed past it.
#[test]
fn publication_with_time_limit_is_not_refreshed_past_it() {
    let mut h = Harness::new();
    let p = initial(&mut h, 600);
    assert_eq!(header(&p, "Expires"), Some("600"));
    ok_with(&mut h, &p, "e1", 600);
    assert!(requests(&h.advance(secs(3600)), Method::Publish).is_empty());
}

/// Every change of the publication is written to the store, and the write precedes the
/// admin reply that acknowledges it.
#[test]
fn etag_is_stored_before_the_reply_acknowledges_it() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    let outs = ok_with(&mut h, &p, "e1", 1800);
    let put = outs
        .iter()
        .position(|o| matches!(o, Output::Store(s) if format!("{s:?}").contains("e1")));
    let reply = outs
        .iter()
        .position(|o| matches!(o, Output::AdminReply { .. }));
    assert!(put.is_some() && reply.is_some() && put < reply, "{outs:#?}");
}

/// A transport error on the PUBLISH counts as a timeout (RFC 3261 §17.1.4): reported as
/// 408, then retried after a back-off.
#[test]
fn transport_error_is_a_timeout_and_is_retried() {
    use xmpp_sip_gateway::core::engine::Input;
    use xmpp_sip_gateway::core::modules::admin::AdminReply;
    let mut h = Harness::new();
    let _p = initial(&mut h, -1);
    let outs = h.input(Input::SipTransportError { to: server() });
    assert!(matches!(&admin_replies(&outs)[..], [(_, AdminReply::Published(o))] if o.code == 408));
    let again = h.next_request(Method::Publish, 10).0;
    assert_eq!(again.body, PIDF_OPEN.as_bytes());
}

/// A caller's publish without a body on an existing publication is a refresh: no body,
/// SIP-If-Match of the current tag (RFC 3903 §4.2.2).
#[test]
fn caller_publish_without_body_refreshes() {
    let mut h = Harness::new();
    let p = initial(&mut h, -1);
    ok_with(&mut h, &p, "e1", 1800);
    let (_, outs) = h.admin(Harness::publish_cmd(BEN, -1, None, Some("e1")));
    let r = one_request(&outs, Method::Publish);
    assert!(r.body.is_empty());
    assert_eq!(header(&r, "SIP-If-Match"), Some("e1"));
}
