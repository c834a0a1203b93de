//! Bad input gets a protocol answer, never a panic (architecture.md habit 6).

mod support;

use proptest::prelude::*;
use support::*;
use xmpp_sip_gateway::core::sip::Method;

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ -~]{0,40}",
        Just("active;expires=".to_string()),
        Just("terminated;reason=;retry-after=x".to_string()),
        Just("pending;expires=99999999999999".to_string()),
        Just("presence;id=".to_string()),
        Just("<sip:;tag=".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any NOTIFY for our subscription, whatever its Event, Subscription-State,
    /// CSeq, Contact, Record-Route and body, gets exactly one final answer.
    #[test]
    fn any_notify_gets_exactly_one_answer(
        event in header_value(),
        state in header_value(),
        contact in header_value(),
        rr in header_value(),
        cseq in 0u32..5,
        body in prop::option::of("[ -~<>/]{0,60}"),
    ) {
        let mut h = Harness::new();
        let (_, outs) = h.admin(Harness::subscribe_cmd("presence", -1));
        let s = one_request(&outs, Method::Subscribe);
        let mut n = h.notify(&s, "n1", cseq, &state, body.as_deref());
        n.headers.set("Event", event);
        n.headers.set("Contact", contact);
        n.headers.push("Record-Route", rr);
        let outs = h.peer_request(n);
        let resp = responses(&outs);
        prop_assert_eq!(resp.len(), 1);
        prop_assert!(resp[0].status >= 200);
        // The engine keeps working afterwards.
        h.advance(secs(7200));
    }

    /// Any response to our SUBSCRIBE, whatever its status and headers, is handled.
    #[test]
    fn any_response_to_subscribe_is_handled(
        status in 200u16..700,
        expires in header_value(),
        min_expires in header_value(),
        retry_after in header_value(),
    ) {
        let mut h = Harness::new();
        let (_, outs) = h.admin(Harness::subscribe_cmd("presence", -1));
        let s = one_request(&outs, Method::Subscribe);
        h.answer(&s, status, |r| {
            r.headers.push("Expires", expires);
            r.headers.push("Min-Expires", min_expires);
            r.headers.push("Retry-After", retry_after);
        });
        h.advance(secs(7200));
    }

    /// Any response to our PUBLISH, whatever its status and headers, is handled.
    #[test]
    fn any_response_to_publish_is_handled(
        status in 200u16..700,
        etag in header_value(),
        expires in header_value(),
        min_expires in header_value(),
        retry_after in header_value(),
    ) {
        let mut h = Harness::new();
        let (_, outs) = h.admin(Harness::publish_cmd("sip:ben@sip.example", -1, Some(PIDF_OPEN), None));
        let p = one_request(&outs, Method::Publish);
        h.answer(&p, status, |r| {
            r.headers.push("SIP-ETag", etag);
            r.headers.push("Expires", expires);
            r.headers.push("Min-Expires", min_expires);
            r.headers.push("Retry-After", retry_after);
        });
        h.advance(secs(7200));
    }
}
