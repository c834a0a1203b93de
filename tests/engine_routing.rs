//! Routing of incoming SIP in the engine (architecture.md, Core and drivers): every request
//! gets an explicit answer.

mod support;

use support::*;
use xmpp_sip_gateway::core::engine::Input;
use xmpp_sip_gateway::core::sip::{Method, Request, SipMessage};

fn request(h: &mut Harness, method: Method, extra: &[(&str, &str)]) -> Request {
    let mut r = Request::new(method.clone(), "sip:anna@xmpp.example");
    let b = h.branch();
    r.headers
        .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", "<sip:ben@sip.example>;tag=f1");
    r.headers.push("To", "<sip:anna@xmpp.example>");
    r.headers.push("Call-ID", format!("call-{b}@peer"));
    r.headers.push("CSeq", format!("1 {method}"));
    for (n, v) in extra {
        r.headers.push(n, *v);
    }
    r
}

#[test]
fn request_from_untrusted_peer_gets_403() {
    let mut h = Harness::new();
    let r = request(&mut h, Method::Subscribe, &[("Event", "presence")]);
    let outs = h.input(Input::Sip {
        from: stranger(),
        message: SipMessage::Request(r),
    });
    assert_eq!(one_response(&outs).status, 403);
}

#[test]
fn malformed_request_gets_400_naming_the_problem() {
    let mut h = Harness::new();
    let raw = b"SUBSCRIBE sip:anna@xmpp.example SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKm1\r\n\
From: <sip:ben@sip.example>;tag=f1\r\nTo: <sip:anna@xmpp.example>\r\nCall-ID: m1@peer\r\nCSeq: 1 SUBSCRIBE\r\n\
Expires: soon\r\nContent-Length: 0\r\n\r\n"
        .to_vec();
    let outs = h.input(Input::SipMalformed {
        from: server(),
        raw,
        error: "bad Expires header: soon".into(),
    });
    let resp = one_response(&outs);
    assert_eq!(resp.status, 400);
    assert!(resp.reason.contains("Expires"), "{}", resp.reason);
    assert!(resp.headers.get("To").unwrap().contains("tag="));
}

#[test]
fn unsalvageable_garbage_is_dropped() {
    let mut h = Harness::new();
    let outs = h.input(Input::SipMalformed {
        from: server(),
        raw: b"\x00\x01garbage".to_vec(),
        error: "garbage".into(),
    });
    assert!(outs.is_empty());
}

#[test]
fn oversized_request_gets_513() {
    let mut h = Harness::new();
    let head = b"NOTIFY sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKo1\r\n\
From: <sip:ben@sip.example>;tag=f1\r\nTo: <sip:anna@xmpp.example>;tag=t1\r\nCall-ID: o1@peer\r\nCSeq: 1 NOTIFY\r\n\r\n"
        .to_vec();
    let outs = h.input(Input::SipOversized {
        from: server(),
        head,
    });
    assert_eq!(one_response(&outs).status, 513);
}

#[test]
fn unknown_method_gets_501_with_allow() {
    let mut h = Harness::new();
    let r = request(&mut h, Method::Other("FROB".into()), &[]);
    let resp = one_response(&h.peer_request(r));
    assert_eq!(resp.status, 501);
    assert!(resp.headers.get("Allow").unwrap().contains("SUBSCRIBE"));
}

#[test]
fn known_but_unserved_methods_get_405_with_allow() {
    for m in [Method::Publish, Method::Register, Method::Message] {
        let mut h = Harness::new();
        let r = request(&mut h, m.clone(), &[]);
        let resp = one_response(&h.peer_request(r));
        assert_eq!(resp.status, 405, "{m}");
        assert!(resp.headers.get("Allow").unwrap().contains("NOTIFY"));
    }
}

#[test]
fn subscribe_for_an_unserved_package_gets_489() {
    let mut h = Harness::new();
    let r = request(
        &mut h,
        Method::Subscribe,
        &[("Event", "foo"), ("Expires", "3600")],
    );
    assert_eq!(one_response(&h.peer_request(r)).status, 489);
}

#[test]
fn subscribe_without_event_gets_489() {
    let mut h = Harness::new();
    let r = request(&mut h, Method::Subscribe, &[("Expires", "3600")]);
    assert_eq!(one_response(&h.peer_request(r)).status, 489);
}

/// Case 33: a CANCEL is answered 200 and cancels nothing.
#[test]
fn case33_cancel_is_answered_200() {
    let mut h = Harness::new();
    let r = request(&mut h, Method::Cancel, &[]);
    let resp = one_response(&h.peer_request(r));
    assert_eq!(resp.status, 200);
}

#[test]
fn request_without_call_id_gets_400() {
    let mut h = Harness::new();
    let mut r = request(&mut h, Method::Notify, &[]);
    r.headers.remove("Call-ID");
    let resp = one_response(&h.peer_request(r));
    assert_eq!(resp.status, 400);
    assert!(resp.reason.contains("Call-ID"));
}

/// Without an outbound proxy, requests go to the Request-URI's numeric host and port.
#[test]
fn without_proxy_requests_go_to_the_request_uri_host() {
    use xmpp_sip_gateway::core::engine::Output;
    let mut h = Harness::with_config(xmpp_sip_gateway::core::engine::EngineConfig {
        outbound_proxy: None,
        ..test_config()
    });
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@127.0.0.1:5080;transport=tcp",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let to = outs.iter().find_map(|o| match o {
        Output::SendSip { to, .. } => Some(*to),
        _ => None,
    });
    assert_eq!(to.unwrap().addr, "127.0.0.1:5080".parse().unwrap());
}

/// An unroutable target (a name, no proxy, no DNS in the core) fails locally.
#[test]
fn unroutable_publish_fails_with_500() {
    use xmpp_sip_gateway::core::modules::admin::AdminReply;
    let mut h = Harness::with_config(xmpp_sip_gateway::core::engine::EngineConfig {
        outbound_proxy: None,
        ..test_config()
    });
    let (id, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let replies = admin_replies(&outs);
    assert!(
        matches!(&replies[..], [(rid, AdminReply::Published(o))] if *rid == id && o.code == 500),
        "{replies:?}"
    );
}

/// The daemon moves the engine into its own task.
#[test]
fn engine_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<xmpp_sip_gateway::core::engine::Engine>();
}

/// After Shutdown the engine asks for no more wake-ups.
#[test]
fn shutdown_stops_timers() {
    let mut h = Harness::new();
    h.admin(Harness::subscribe_cmd("presence", -1));
    assert!(h.engine.poll_timeout().is_some());
    h.input(Input::Shutdown);
    assert_eq!(h.engine.poll_timeout(), None);
}
