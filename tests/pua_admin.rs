//! The admin module (pua_mi's job, anchors.md §1.4).

mod support;

use support::*;
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply, PublishCommand};
use xmpp_sip_gateway::core::sip::Method;

fn refused(cmd: AdminCommand) -> (u16, String) {
    let mut h = Harness::new();
    let (id, outs) = h.admin(cmd);
    assert!(
        requests(&outs, Method::Publish).is_empty()
            && requests(&outs, Method::Subscribe).is_empty()
    );
    match &admin_replies(&outs)[..] {
        [(rid, AdminReply::Published(o))] if *rid == id => (o.code, o.reason.clone()),
        [(rid, AdminReply::Subscribed(o))] if *rid == id => (o.code, o.reason.clone()),
        other => panic!("{other:?}"),
    }
}

fn publish(
    presentity: &str,
    event: &str,
    ct: Option<&str>,
    body: Option<&str>,
    etag: Option<&str>,
) -> AdminCommand {
    AdminCommand::Publish(PublishCommand {
        presentity: presentity.into(),
        expires: 3600,
        event: event.into(),
        content_type: ct.map(str::to_string),
        body: body.map(str::to_string),
        etag: etag.map(str::to_string),
        extra_headers: None,
    })
}

#[test]
fn publish_replies_after_the_final_response_with_etag_and_expires() {
    let mut h = Harness::new();
    let (id, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    assert!(
        admin_replies(&outs).is_empty(),
        "no reply before the final response"
    );
    let p = one_request(&outs, Method::Publish);
    let outs = h.answer(&p, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "1800");
    });
    match &admin_replies(&outs)[..] {
        [(rid, AdminReply::Published(o))] => {
            assert_eq!(*rid, id);
            assert_eq!(
                (o.code, o.etag.as_deref(), o.expires),
                (200, Some("e1"), Some(1800))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn publish_failure_is_replied_with_its_code() {
    let mut h = Harness::new();
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p = one_request(&outs, Method::Publish);
    let outs = h.answer(&p, 404, |_| {});
    assert!(matches!(&admin_replies(&outs)[..], [(_, AdminReply::Published(o))] if o.code == 404));
}

#[test]
fn publish_with_known_etag_modifies_the_publication() {
    let mut h = Harness::new();
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p = one_request(&outs, Method::Publish);
    h.answer(&p, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "1800");
    });
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_CLOSED),
        Some("e1"),
    ));
    let m = one_request(&outs, Method::Publish);
    assert_eq!(header(&m, "SIP-If-Match"), Some("e1"));
    assert_eq!(m.body, PIDF_CLOSED.as_bytes());
}

#[test]
fn publish_with_bad_presentity_uri_is_refused_404() {
    assert_eq!(
        refused(publish("ben at example", "presence", None, None, None)).0,
        404
    );
}

#[test]
fn publish_with_empty_event_is_refused_400() {
    assert_eq!(
        refused(publish(
            "sip:ben@sip.example",
            "",
            Some("application/pidf+xml"),
            Some("x"),
            None
        ))
        .0,
        400
    );
}

#[test]
fn publish_with_unknown_event_is_refused_400() {
    assert_eq!(
        refused(publish(
            "sip:ben@sip.example",
            "foo",
            Some("application/pidf+xml"),
            Some("x"),
            None
        ))
        .0,
        400
    );
}

#[test]
fn publish_with_content_type_but_no_body_is_refused_400() {
    assert_eq!(
        refused(publish(
            "sip:ben@sip.example",
            "presence",
            Some("application/pidf+xml"),
            None,
            None
        ))
        .0,
        400
    );
}

#[test]
fn publish_with_body_but_no_content_type_is_refused_400() {
    assert_eq!(
        refused(publish(
            "sip:ben@sip.example",
            "presence",
            None,
            Some("x"),
            None
        ))
        .0,
        400
    );
}

#[test]
fn publish_with_unknown_etag_is_refused_418_wrong_etag() {
    let (code, reason) = refused(publish(
        "sip:ben@sip.example",
        "presence",
        None,
        None,
        Some("nope"),
    ));
    assert_eq!((code, reason.as_str()), (418, "Wrong ETag"));
}

#[test]
fn subscribe_replies_with_the_first_final_response() {
    let mut h = Harness::new();
    let (id, outs) = h.admin(Harness::subscribe_cmd("presence", 3600));
    assert!(admin_replies(&outs).is_empty());
    let s = one_request(&outs, Method::Subscribe);
    let outs = h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    match &admin_replies(&outs)[..] {
        [(rid, AdminReply::Subscribed(o))] => assert_eq!((*rid, o.code), (id, 200)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn subscribe_with_unknown_event_is_refused_400() {
    assert_eq!(refused(Harness::subscribe_cmd("bogus", 3600)).0, 400);
}

#[test]
fn winfo_is_a_known_event_for_subscribe() {
    let mut h = Harness::new();
    let (_, outs) = h.admin(Harness::subscribe_cmd("presence.winfo", 3600));
    assert_eq!(requests(&outs, Method::Subscribe).len(), 1);
}

#[test]
fn subscription_list_shows_the_last_notify_state_and_body() {
    let mut h = Harness::new();
    let (_, outs) = h.admin(Harness::subscribe_cmd("presence", -1));
    let s = one_request(&outs, Method::Subscribe);
    let n = h.notify(&s, "n1", 1, "active;expires=600", Some(PIDF_OPEN));
    h.peer_request(n);
    let (_, outs) = h.admin(AdminCommand::ListSubscriptions);
    match &admin_replies(&outs)[..] {
        [(_, AdminReply::Subscriptions(v))] => {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].state, "active");
            assert!(v[0]
                .last_notify_state
                .as_deref()
                .unwrap()
                .starts_with("active"));
            assert_eq!(v[0].last_body.as_deref(), Some(PIDF_OPEN));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn publication_list_shows_etag_and_body() {
    let mut h = Harness::new();
    let (_, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p = one_request(&outs, Method::Publish);
    h.answer(&p, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "1800");
    });
    let (_, outs) = h.admin(AdminCommand::ListPublications);
    match &admin_replies(&outs)[..] {
        [(_, AdminReply::Publications(v))] => {
            assert_eq!(v[0].etag.as_deref(), Some("e1"));
            assert_eq!(v[0].body.as_deref(), Some(PIDF_OPEN));
            assert_eq!(v[0].expires_in, Some(1800));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn health_counts_records() {
    let mut h = Harness::new();
    h.admin(Harness::subscribe_cmd("presence", -1));
    let (_, outs) = h.admin(AdminCommand::Health);
    match &admin_replies(&outs)[..] {
        [(_, AdminReply::Health(v))] => assert_eq!((v.subscriptions, v.publications), (1, 0)),
        other => panic!("{other:?}"),
    }
}

/// Publish commands coalesced behind an outstanding PUBLISH (case 67) are answered when
/// the PUBLISH carrying their state is answered, not before.
#[test]
fn coalesced_publish_commands_are_answered_by_the_publish_that_carries_them() {
    let mut h = Harness::new();
    let (first, outs) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p1 = one_request(&outs, Method::Publish);
    let (second, _) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_CLOSED),
        None,
    ));
    let (third, _) = h.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some("<latest/>"),
        None,
    ));
    let outs = h.answer(&p1, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "1800");
    });
    let ids: Vec<_> = admin_replies(&outs).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![first]);
    let p2 = one_request(&outs, Method::Publish);
    let outs = h.answer(&p2, 200, |r| {
        r.headers.push("SIP-ETag", "e2");
        r.headers.push("Expires", "1800");
    });
    let ids: Vec<_> = admin_replies(&outs).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![second, third]);
}

/// The issue: `ctl subscribe` with a short Expires → the gateway holds and refreshes the
/// dialog, past the interval asked for (pua_mi would let it lapse).
#[test]
fn operator_subscription_with_short_expires_is_refreshed_in_dialog_past_its_interval() {
    let mut h = Harness::new();
    let (_, outs) = h.admin(Harness::subscribe_cmd("presence", 20));
    let s = one_request(&outs, Method::Subscribe);
    assert_eq!(header(&s, "Expires"), Some("20"));
    h.answer(&s, 200, |r| r.headers.push("Expires", "20"));
    let n = h.notify(&s, "n1", 1, "active;expires=20", Some(PIDF_OPEN));
    h.peer_request(n);
    let mut last = s.clone();
    for round in 0..3 {
        let (r, waited) = h.next_request(Method::Subscribe, 20);
        assert!(waited < 20, "round {round}: refreshed before expiry");
        assert_eq!(
            header(&r, "Call-ID"),
            header(&s, "Call-ID"),
            "in the same dialog"
        );
        assert_eq!(header(&r, "Expires"), Some("20"));
        assert!(cseq_of(&r) > cseq_of(&last));
        h.answer(&r, 200, |resp| resp.headers.push("Expires", "20"));
        last = r;
    }
}
