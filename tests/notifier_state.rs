//! State pushed by the module, refreshes, unsubscribes, polls, expiry and the NOTIFY
//! rate limit (RFC 6665 §4.2.2; standards.md §16 cases 35, 36, 40, 41, 42, 44).

mod notifier_support;

use std::time::Duration;

use notifier_support::*;
use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable};
use xmpp_sip_gateway::core::sip::headers::{SubState, TerminationReason};
use xmpp_sip_gateway::core::sip::notifier::{EndReason, NotifierEvent, StateChange};

/// standards.md §16 case 35: XMPP `subscribed` → NOTIFY active;expires=<remaining>.
#[test]
fn activation_sends_active_notify_with_remaining_expires() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let (id, _) = h.established(&Sub::initial(), &policy);
    h.advance(Duration::from_secs(100));
    let now = h.now();
    let actions = h
        .notifier
        .notify(now, id, Some(StateChange::Activate), None);
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        sub_state(notify),
        SubState::Active {
            expires: Some(3500)
        }
    );
    assert_eq!(h.notifier.view(now, id).unwrap().state, "active");
}

/// A pending dialog caches state without sending it; activation carries it.
#[test]
fn state_pushed_while_pending_is_sent_only_on_activation() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let (id, _) = h.established(&Sub::initial(), &policy);
    let now = h.now();
    let while_pending = h.notifier.notify(now, id, None, Some(pidf("away")));
    assert!(notifies(&while_pending).is_empty());
    let actions = h
        .notifier
        .notify(now, id, Some(StateChange::Activate), None);
    assert!(body_text(only_notify(&actions).1).contains("away"));
}

/// standards.md §16 case 36: XMPP `unsubscribed` → an empty NOTIFY
/// terminated;reason=rejected without expires, and the dialog is removed.
#[test]
fn rejection_sends_empty_terminated_notify_and_removes_dialog() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(Some(pidf("online")));
    let (id, _) = h.established(&Sub::initial(), &policy);
    let now = h.now();
    let actions = h.notifier.notify(
        now,
        id,
        Some(StateChange::Terminate {
            reason: TerminationReason::Rejected,
            retry_after: None,
        }),
        None,
    );
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        notify.headers.get("Subscription-State"),
        Some("terminated;reason=rejected")
    );
    assert!(notify.body.is_empty());
    assert!(!h.notifier.contains(id));
    assert!(stores(&actions).iter().any(|op| matches!(
        op,
        StoreOp::Delete {
            table: StoreTable::NotifierDialogs,
            ..
        }
    )));
}

/// standards.md §16 case 36: after removal the module's later pushes send nothing.
#[test]
fn terminated_dialog_sends_no_further_notify() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let (id, _) = h.established(&Sub::initial(), &policy);
    let now = h.now();
    let terminate = Some(StateChange::Terminate {
        reason: TerminationReason::Rejected,
        retry_after: None,
    });
    h.notifier.notify(now, id, terminate, None);
    let later = h.notifier.notify(now, id, None, Some(pidf("online")));
    assert!(notifies(&later).is_empty());
}

/// standards.md §16 case 40: a refresh gets 200 and a NOTIFY with the full cached state.
#[test]
fn refresh_sends_notify_with_full_cached_state() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let (id, tag) = h.established(&Sub::initial(), &policy);
    let now = h.now();
    let pushed = h.notifier.notify(now, id, None, Some(pidf("busy")));
    h.answer(only_notify(&pushed).0, 200);
    h.advance(Duration::from_secs(1800));
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2).expires(3600), &policy);
    assert_eq!(response(&actions).status, 200);
    assert_eq!(response(&actions).headers.get("Expires"), Some("3600"));
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        sub_state(notify),
        SubState::Active {
            expires: Some(3600)
        }
    );
    assert!(body_text(notify).contains("busy"));
}

/// standards.md §16 case 40: with no cached state the refresh NOTIFY has no body.
#[test]
fn refresh_without_state_sends_notify_without_body() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let (_, tag) = h.established(&Sub::initial(), &policy);
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2), &policy);
    let (_, notify) = only_notify(&actions);
    assert!(notify.body.is_empty());
    assert_eq!(notify.headers.get("Content-Type"), None);
}

/// A refresh moves the expiry: the old deadline no longer ends the subscription.
#[test]
fn refresh_extends_the_subscription() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let (id, tag) = h.established(&Sub::initial().expires(600), &policy);
    h.advance(Duration::from_secs(500));
    let refresh = h.subscribe(&Sub::initial().in_dialog(&tag, 2).expires(600), &policy);
    h.answer(only_notify(&refresh).0, 200);
    h.advance(Duration::from_secs(200));
    let actions = h.tick(&policy);
    assert!(notifies(&actions).is_empty());
    assert!(h.notifier.contains(id));
}

/// standards.md §16 case 41: in-dialog Expires: 0 → 200 and NOTIFY
/// terminated;reason=timeout carrying the policy's final (closed) state.
#[test]
fn unsubscribe_sends_terminated_timeout_notify_with_final_state() {
    let mut h = Harness::new();
    let mut policy = TestPolicy::active(Some(pidf("online")));
    policy.closed = Some(pidf("closed"));
    let (id, tag) = h.established(&Sub::initial(), &policy);
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2).expires(0), &policy);
    assert_eq!(response(&actions).status, 200);
    assert_eq!(response(&actions).headers.get("Expires"), Some("0"));
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        notify.headers.get("Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert!(body_text(notify).contains("closed"));
    assert!(!h.notifier.contains(id));
}

/// standards.md §16 case 41: the module hears Ended{Unsubscribed} (and sends XMPP
/// `unavailable`, never `unsubscribe`).
#[test]
fn unsubscribe_reports_ended_unsubscribed_to_module() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let (id, tag) = h.established(&Sub::initial(), &policy);
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2).expires(0), &policy);
    let ended: Vec<_> = events(&actions)
        .into_iter()
        .filter_map(|e| match e {
            NotifierEvent::Ended { dialog, reason, .. } => Some((*dialog, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![(id, EndReason::Unsubscribed)]);
}

/// standards.md §7.8: a pending watcher that unsubscribes learns no state.
#[test]
fn unsubscribe_of_pending_dialog_carries_no_state() {
    let mut h = Harness::new();
    let mut policy = TestPolicy::pending();
    policy.closed = Some(pidf("closed"));
    let (_, tag) = h.established(&Sub::initial(), &policy);
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2).expires(0), &policy);
    assert!(only_notify(&actions).1.body.is_empty());
}

/// standards.md §16 case 42: out-of-dialog Expires: 0 with no state → 200, NOTIFY
/// terminated;reason=timeout without body, and a Polled event without state (the bridge
/// then probes).
#[test]
fn poll_without_state_answers_terminated_notify_and_reports_no_state() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let actions = h.subscribe(&Sub::initial().expires(0), &policy);
    assert_eq!(response(&actions).status, 200);
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        notify.headers.get("Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert!(notify.body.is_empty());
    let polled: Vec<bool> = events(&actions)
        .into_iter()
        .filter_map(|e| match e {
            NotifierEvent::Polled { had_state, .. } => Some(*had_state),
            _ => None,
        })
        .collect();
    assert_eq!(polled, vec![false]);
}

/// RFC 6665 §4.4.3: a poll leaves no dialog and writes nothing durable.
#[test]
fn poll_leaves_no_dialog_and_no_store_row() {
    let mut h = Harness::new();
    let actions = h.subscribe(&Sub::initial().expires(0), &TestPolicy::active(None));
    assert!(stores(&actions).is_empty());
    assert!(h.notifier.is_empty());
    assert_eq!(h.notifier.next_deadline(), None);
}

/// A poll of an authorized resource with cached state returns it.
#[test]
fn poll_with_state_carries_it() {
    let mut h = Harness::new();
    let actions = h.subscribe(
        &Sub::initial().expires(0),
        &TestPolicy::active(Some(pidf("online"))),
    );
    assert!(body_text(only_notify(&actions).1).contains("online"));
}

/// RFC 6665 §4.2.2: an expired subscription gets NOTIFY terminated;reason=timeout and is
/// removed.
#[test]
fn expiry_sends_terminated_timeout_notify_and_removes_dialog() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let (id, _) = h.established(&Sub::initial().expires(600), &policy);
    assert_eq!(
        h.notifier.next_deadline(),
        Some(h.now() + Duration::from_secs(600))
    );
    h.advance(Duration::from_secs(599));
    assert!(notifies(&h.tick(&policy)).is_empty());
    h.advance(Duration::from_secs(1));
    let actions = h.tick(&policy);
    let (_, notify) = only_notify(&actions);
    assert_eq!(
        notify.headers.get("Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert!(!h.notifier.contains(id));
    assert!(events(&actions).iter().any(|e| matches!(
        e,
        NotifierEvent::Ended {
            reason: EndReason::Expired,
            ..
        }
    )));
}

/// Only one NOTIFY is outstanding per dialog; a state pushed meanwhile waits and the
/// latest state goes out when the outstanding one completes.
#[test]
fn updates_wait_for_outstanding_notify_and_only_latest_is_sent() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let actions = h.subscribe(&Sub::initial(), &policy);
    let (id, first) = only_notify(&actions);
    let first_cseq = cseq_of(first);
    let now = h.now();
    assert!(notifies(&h.notifier.notify(now, id, None, Some(pidf("one")))).is_empty());
    assert!(notifies(&h.notifier.notify(now, id, None, Some(pidf("two")))).is_empty());
    let after = h.answer(id, 200);
    let (_, notify) = only_notify(&after);
    assert!(body_text(notify).contains("two"));
    assert_eq!(cseq_of(notify), first_cseq + 1);
}

/// standards.md §16 case 44: three updates within 2 s with a 5 s interval → at most one
/// NOTIFY per 5 s, and the last one carries the latest state.
#[test]
fn rate_limit_coalesces_updates_to_latest_state() {
    let mut cfg = config();
    cfg.min_notify_interval = Duration::from_secs(5);
    let mut h = Harness::with_config(cfg);
    let policy = TestPolicy::active(None);
    let (id, _) = h.established(&Sub::initial(), &policy);
    let start = h.now();
    let mut sent = Vec::new();
    for (i, note) in ["desk-1", "desk-2", "desk-3"].iter().enumerate() {
        if i > 0 {
            h.advance(Duration::from_millis(1000));
        }
        let now = h.now();
        for (nid, req) in notifies(&h.notifier.notify(now, id, None, Some(pidf(note)))) {
            sent.push((now, body_text(req)));
            h.answer(nid, 200);
        }
    }
    assert!(sent.is_empty(), "nothing within 5 s of the last NOTIFY");
    assert_eq!(
        h.notifier
            .next_deadline()
            .map(|d| d < start + Duration::from_secs(6)),
        Some(true)
    );
    h.clock.set(start + Duration::from_secs(5));
    let actions = h.tick(&policy);
    for (_, req) in notifies(&actions) {
        sent.push((h.now(), body_text(req)));
    }
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.contains("desk-3"));
}

/// With the throttle on, a NOTIFY that answers a refresh is still sent at once
/// (RFC 6665 §4.2.1.1).
#[test]
fn rate_limit_never_delays_the_notify_after_a_refresh() {
    let mut cfg = config();
    cfg.min_notify_interval = Duration::from_secs(5);
    let mut h = Harness::with_config(cfg);
    let policy = TestPolicy::active(None);
    let (_, tag) = h.established(&Sub::initial(), &policy);
    h.advance(Duration::from_secs(1));
    let actions = h.subscribe(&Sub::initial().in_dialog(&tag, 2), &policy);
    assert_eq!(notifies(&actions).len(), 1);
}

/// standards.md §11: the policy's per-package interval (5 s for winfo) throttles even
/// when the configured default is off.
#[test]
fn package_interval_from_policy_throttles_winfo_updates() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let sub = Sub::initial().header("Event", "presence.winfo");
    let (id, _) = h.established(&sub, &policy);
    let now = h.now();
    let winfo = xmpp_sip_gateway::core::sip::notifier::Body::new(
        "application/watcherinfo+xml",
        "<watcherinfo version='1'/>",
    );
    let actions = h.notifier.notify(now, id, None, Some(winfo));
    assert!(notifies(&actions).is_empty());
    assert_eq!(
        h.notifier.next_deadline(),
        Some(now + Duration::from_secs(5))
    );
}

/// The module may name the resource (a proxy may have rewritten the Request-URI); the
/// dialog is then found under that name.
#[test]
fn policy_named_resource_is_the_dialog_presentity() {
    let mut h = Harness::new();
    let mut policy = TestPolicy::pending();
    policy.decision = policy
        .decision
        .clone()
        .for_resource("sip:anna@xmpp.example");
    let sub = Sub::initial();
    let mut sub = sub;
    sub.req.uri = "sip:anna@198.51.100.1:5060".into();
    let (id, _) = h.established(&sub, &policy);
    assert_eq!(
        h.notifier
            .dialogs_between("presence", WATCHER, "sip:anna@xmpp.example"),
        vec![id]
    );
}
