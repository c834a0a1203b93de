//! NOTIFY failures end the subscription (RFC 6665 §4.2.2; standards.md §16 case 43).

mod notifier_support;

use notifier_support::*;
use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable};
use xmpp_sip_gateway::core::sip::notifier::{EndReason, NotifierEvent, NotifyOutcome};

/// Subscribes (active, no state) and returns the harness, policy and dialog with its
/// first NOTIFY still outstanding.
fn outstanding() -> (
    Harness,
    TestPolicy,
    xmpp_sip_gateway::core::sip::notifier::NotifierDialogId,
) {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let actions = h.subscribe(&Sub::initial(), &policy);
    let (id, _) = only_notify(&actions);
    (h, policy, id)
}

fn assert_removed_without_more_notifies(
    h: &mut Harness,
    id: xmpp_sip_gateway::core::sip::notifier::NotifierDialogId,
) {
    assert!(!h.notifier.contains(id));
    let now = h.now();
    assert!(notifies(&h.notifier.notify(now, id, None, Some(pidf("later")))).is_empty());
}

/// standards.md §16 case 43: 481 to our NOTIFY removes the subscription.
#[test]
fn notify_answered_481_removes_subscription() {
    let (mut h, _, id) = outstanding();
    let actions = h.answer(id, 481);
    assert!(notifies(&actions).is_empty());
    assert!(stores(&actions).iter().any(|op| matches!(
        op,
        StoreOp::Delete {
            table: StoreTable::NotifierDialogs,
            ..
        }
    )));
    assert_removed_without_more_notifies(&mut h, id);
}

/// standards.md §16 case 43: 404 to our NOTIFY removes the subscription.
#[test]
fn notify_answered_404_removes_subscription() {
    let (mut h, _, id) = outstanding();
    h.answer(id, 404);
    assert_removed_without_more_notifies(&mut h, id);
}

/// standards.md §16 case 43: Timer F on our NOTIFY removes the subscription, and the
/// module hears why.
#[test]
fn notify_timeout_removes_subscription_and_reports_it() {
    let (mut h, _, id) = outstanding();
    let now = h.now();
    let actions = h
        .notifier
        .on_notify_outcome(now, id, NotifyOutcome::Timeout);
    assert!(events(&actions).iter().any(|e| matches!(
        e,
        NotifierEvent::Ended {
            reason: EndReason::NotifyFailed { status: None },
            ..
        }
    )));
    assert_removed_without_more_notifies(&mut h, id);
}

/// A removed subscription arms no timer: no terminated NOTIFY at the old expiry.
#[test]
fn removed_subscription_sends_nothing_at_its_expiry() {
    let (mut h, policy, id) = outstanding();
    h.answer(id, 481);
    h.advance(std::time::Duration::from_secs(7200));
    assert!(notifies(&h.tick(&policy)).is_empty());
    assert_eq!(h.notifier.next_deadline(), None);
}

/// RFC 6665 §4.2.2: other error codes keep the subscription.
#[test]
fn notify_answered_500_keeps_subscription() {
    let (mut h, _, id) = outstanding();
    h.answer(id, 500);
    assert!(h.notifier.contains(id));
    let now = h.now();
    assert_eq!(
        notifies(&h.notifier.notify(now, id, None, Some(pidf("next")))).len(),
        1
    );
}
