//! The PUA over UDP: retransmissions stay in the transaction layer (RFC 3261 §17).

mod support;

use std::time::Duration;

use support::*;
use xmpp_sip_gateway::core::engine::{EngineConfig, Input};
use xmpp_sip_gateway::core::sip::{Method, Peer, SipMessage, Transport};

fn udp_server() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

fn udp_harness() -> Harness {
    Harness::with_config(EngineConfig {
        outbound_proxy: Some(udp_server()),
        ..test_config()
    })
}

/// A PUBLISH is retransmitted unchanged until answered, and answered once to the owner.
#[test]
fn publish_retransmissions_reach_the_owner_once() {
    let mut h = udp_harness();
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p = one_request(&outs, Method::Publish);
    let again = one_request(&h.advance(Duration::from_millis(600)), Method::Publish);
    assert_eq!(again, p, "a retransmission is the same request");
    let mut ok = response_to(&p, 200, "OK");
    ok.headers.push("SIP-ETag", "e1");
    ok.headers.push("Expires", "1800");
    let outs = h.input(Input::Sip {
        from: udp_server(),
        message: SipMessage::Response(ok.clone()),
    });
    assert_eq!(admin_replies(&outs).len(), 1);
    let outs = h.input(Input::Sip {
        from: udp_server(),
        message: SipMessage::Response(ok),
    });
    assert!(
        admin_replies(&outs).is_empty() && outs.is_empty(),
        "retransmitted 200 absorbed"
    );
}

/// A retransmitted NOTIFY gets the same 200 again and is delivered to the owner once.
#[test]
fn notify_retransmission_is_answered_again_but_delivered_once() {
    let mut h = udp_harness();
    let (_, outs) = h.admin(Harness::subscribe_cmd("presence", -1));
    let s = one_request(&outs, Method::Subscribe);
    let mut n = h.notify(&s, "n1", 1, "active;expires=600", Some(PIDF_OPEN));
    let via = n.headers.get("Via").unwrap().replace("TCP", "UDP");
    n.headers.set("Via", via);
    let first = h.input(Input::Sip {
        from: udp_server(),
        message: SipMessage::Request(n.clone()),
    });
    assert_eq!(one_response(&first).status, 200);
    let notifies = |h: &Harness| {
        h.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, xmpp_sip_gateway::core::pua::PuaEvent::Notify { .. }))
            .count()
    };
    assert_eq!(notifies(&h), 1);
    let second = h.input(Input::Sip {
        from: udp_server(),
        message: SipMessage::Request(n),
    });
    assert_eq!(one_response(&second).status, 200);
    assert_eq!(notifies(&h), 1);
}
