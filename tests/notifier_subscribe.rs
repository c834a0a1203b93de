//! Answers to initial and in-dialog SUBSCRIBEs (RFC 6665 §4.2.1; standards.md §16 D).

mod notifier_support;

use notifier_support::*;
use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable};
use xmpp_sip_gateway::core::sip::headers::{NameAddr, SubState};
use xmpp_sip_gateway::core::sip::notifier::{Authorization, NotifierAction, NotifierEvent};

/// standards.md §16 case 34: 200 at once, with To-tag, Contact and Expires 3600.
#[test]
fn subscribe_without_expires_gets_200_with_to_tag_contact_and_default_expires() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::pending());
    let resp = response(&actions);
    assert_eq!(resp.status, 200);
    assert!(!to_tag(resp).is_empty());
    assert_eq!(
        resp.headers.get("Contact"),
        Some("<sip:gw@198.51.100.1:5060>")
    );
    assert_eq!(resp.headers.get("Expires"), Some("3600"));
    assert_eq!(resp.headers.get("Call-ID"), Some("call-1@192.0.2.7"));
    assert_eq!(resp.headers.get("CSeq"), Some("1 SUBSCRIBE"));
}

/// standards.md §16 case 34: the 200 is followed at once by NOTIFY pending;expires=N
/// with an empty body.
#[test]
fn pending_subscription_gets_immediate_pending_notify_without_body() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::pending());
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        sub_state(notify),
        SubState::Pending {
            expires: Some(3600)
        }
    );
    assert!(notify.body.is_empty());
    assert_eq!(notify.headers.get("Content-Type"), None);
    let respond_at = actions
        .iter()
        .position(|a| matches!(a, NotifierAction::Respond(_)))
        .unwrap();
    let notify_at = actions
        .iter()
        .position(|a| matches!(a, NotifierAction::SendNotify { .. }))
        .unwrap();
    assert!(respond_at < notify_at, "the 200 goes before the NOTIFY");
}

/// standards.md §16 case 34: the module learns of the pending subscription (and sends
/// XMPP `subscribe`).
#[test]
fn pending_subscription_is_reported_to_module_as_created() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::pending());
    let created: Vec<_> = events(&actions)
        .into_iter()
        .filter_map(|e| match e {
            NotifierEvent::Created { view, .. } => Some(view),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].state, "pending");
    assert_eq!(created[0].watcher, WATCHER);
    assert_eq!(created[0].presentity, PRESENTITY);
}

/// An authorized subscription gets NOTIFY active with the current state.
#[test]
fn active_subscription_gets_active_notify_with_current_state() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::active(Some(pidf("online"))));
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        sub_state(notify),
        SubState::Active {
            expires: Some(3600)
        }
    );
    assert_eq!(notify.headers.get("Content-Type"), Some(PIDF));
    assert!(body_text(notify).contains("online"));
}

/// Product.md Persistence: the dialog is stored before the 200 that reveals it.
#[test]
fn new_dialog_is_stored_before_the_200() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::pending());
    let first_store = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                NotifierAction::Store(StoreOp::Put {
                    table: StoreTable::NotifierDialogs,
                    ..
                })
            )
        })
        .expect("a Put");
    let respond_at = actions
        .iter()
        .position(|a| matches!(a, NotifierAction::Respond(_)))
        .unwrap();
    assert!(first_store < respond_at);
}

/// standards.md §16 case 37.
#[test]
fn accept_listing_only_text_plain_gets_406() {
    let mut h = Harness::new();
    let sub = Sub::initial().header("Accept", "text/plain");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    assert_eq!(response(&actions).status, 406);
    assert!(notifies(&actions).is_empty());
    assert!(h.notifier.is_empty());
}

/// RFC 6665 §4.2.1.1: a wildcard range covers the package's type.
#[test]
fn accept_wildcard_range_is_served_with_package_type() {
    let mut h = Harness::new();
    let sub = Sub::initial().header("Accept", "text/plain, application/*");
    let actions = h.subscribe(&sub, &TestPolicy::active(Some(pidf("x"))));
    assert_eq!(response(&actions).status, 200);
    assert_eq!(
        only_notify(&actions).1.headers.get("Content-Type"),
        Some(PIDF)
    );
}

/// standards.md §16 case 38, first variant.
#[test]
fn unknown_event_package_gets_489_with_allow_events() {
    let mut h = Harness::new();
    let sub = Sub::initial().header("Event", "foo");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    let resp = response(&actions);
    assert_eq!(resp.status, 489);
    let allow = resp.headers.get("Allow-Events").expect("Allow-Events");
    assert!(allow.contains("presence"));
    assert!(notifies(&actions).is_empty());
}

/// standards.md §16 case 38, second variant.
#[test]
fn missing_event_header_gets_489() {
    let mut h = Harness::new();
    let sub = Sub::initial().without("Event");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    assert_eq!(response(&actions).status, 489);
}

/// standards.md §16 case 39, first variant.
#[test]
fn expires_below_minimum_gets_423_with_min_expires() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial().expires(10), &TestPolicy::pending());
    let resp = response(&actions);
    assert_eq!(resp.status, 423);
    assert_eq!(resp.headers.get("Min-Expires"), Some("60"));
    assert!(h.notifier.is_empty());
}

/// standards.md §16 case 39, second variant: never lengthened, shortened to the maximum.
#[test]
fn expires_above_maximum_is_granted_the_maximum() {
    let mut cfg = config();
    cfg.max_expires = 3600;
    let mut h = Harness::with_config(cfg);
    let actions = h.subscribe(&Sub::initial().expires(7200), &TestPolicy::pending());
    let resp = response(&actions);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers.get("Expires"), Some("3600"));
    assert_eq!(
        sub_state(only_notify(&actions).1),
        SubState::Pending {
            expires: Some(3600)
        }
    );
}

/// standards.md §16 case 39, second variant with the default maximum (7200).
#[test]
fn expires_7200_is_granted_no_more_than_requested() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial().expires(7200), &TestPolicy::pending());
    let granted: u32 = response(&actions)
        .headers
        .get("Expires")
        .unwrap()
        .parse()
        .unwrap();
    assert!(granted <= 7200 && granted > 0);
}

/// RFC 6665 §4.2.1.2: an automatic denial is a final error, no dialog.
#[test]
fn policy_rejection_answers_403_without_dialog() {
    let mut h = Harness::new();
    let policy = TestPolicy::with(Authorization::Reject(403), None);
    let actions = h.subscribe(&Sub::initial(), &policy);
    assert_eq!(response(&actions).status, 403);
    assert!(notifies(&actions).is_empty());
    assert!(h.notifier.is_empty());
}

/// RFC 6665 §4.2.1: a SUBSCRIBE whose To-tag matches no dialog gets 481.
#[test]
fn subscribe_for_unknown_dialog_gets_481() {
    let mut h = Harness::new();
    let sub = Sub::initial().in_dialog("nosuchtag", 2).expires(3600);
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    assert_eq!(response(&actions).status, 481);
    assert!(notifies(&actions).is_empty());
}

/// A malformed header is a 400, not a crash.
#[test]
fn malformed_expires_gets_400() {
    let mut h = Harness::new();
    let sub = Sub::initial().header("Expires", "soon");
    let actions = h.subscribe(&sub, &TestPolicy::pending());
    assert_eq!(response(&actions).status, 400);
}

/// RFC 3261 §12.2.2: an in-dialog request with a lower CSeq is out of order.
#[test]
fn in_dialog_subscribe_with_lower_cseq_gets_500() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let (_, tag) = h.established(&Sub::initial().header("CSeq", "5 SUBSCRIBE"), &policy);
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 3).expires(600), &policy);
    assert_eq!(response(&actions).status, 500);
}

/// The From of the response keeps the watcher's tag; the To carries ours.
#[test]
fn response_to_tag_is_the_dialog_local_tag() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial(), &TestPolicy::pending());
    let tag = to_tag(response(&actions));
    let (_, notify) = only_notify(&actions);
    let from = NameAddr::parse("From", notify.headers.get("From").unwrap()).unwrap();
    assert_eq!(from.tag(), Some(tag.as_str()));
}

/// product.md Security: subscriptions per watcher are bounded (3 in the test config).
#[test]
fn watcher_over_subscription_limit_gets_403() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    for i in 0..3 {
        let sub = Sub::initial().header("Call-ID", &format!("call-{i}@192.0.2.7"));
        assert_eq!(response(&h.subscribe(&sub, &policy)).status, 200);
    }
    let fourth = Sub::initial().header("Call-ID", "call-9@192.0.2.7");
    let actions = h.subscribe(&fourth, &policy);
    assert_eq!(response(&actions).status, 403);
    assert_eq!(h.notifier.len(), 3);
}

/// RFC 6665 §8.2.1: every SUBSCRIBE, in-dialog too, needs its Event header.
#[test]
fn in_dialog_subscribe_without_event_gets_489() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let (_, tag) = h.established(&Sub::initial(), &policy);
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2).without("Event"), &policy);
    assert_eq!(response(&actions).status, 489);
}

/// RFC 6665 §4.1.2.2: a refresh for another Event package matches no subscription.
#[test]
fn in_dialog_subscribe_for_another_event_gets_481() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let (_, tag) = h.established(&Sub::initial(), &policy);
    let sub = Sub::initial()
        .in_dialog(&tag, 2)
        .header("Event", "presence.winfo");
    assert_eq!(response(&h.subscribe(&sub, &policy)).status, 481);
}
