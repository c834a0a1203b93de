//! Notifier dialogs survive a restart (product.md, Persistence): NOTIFYs continue on the
//! same dialog with CSeq continuing.

mod notifier_support;

use std::time::Duration;

use notifier_support::*;
use xmpp_sip_gateway::core::persist::{StoreOp, StoredRow};
use xmpp_sip_gateway::core::sip::headers::{NameAddr, SubState};
use xmpp_sip_gateway::core::sip::notifier::{
    Notifier, NotifierAction, NotifierDialogId, StateChange, CSEQ_STRIDE,
};

/// Applies store ops to an in-memory table, as the SQLite driver would.
fn apply(rows: &mut Vec<StoredRow>, actions: &[NotifierAction]) {
    for op in stores(actions) {
        match op {
            StoreOp::Put {
                table,
                key,
                owner,
                data,
                ..
            } => {
                rows.retain(|r| &r.key != key);
                rows.push(StoredRow {
                    table: *table,
                    key: key.clone(),
                    owner: owner.clone(),
                    data: data.clone(),
                });
            }
            StoreOp::Delete { key, .. } => rows.retain(|r| &r.key != key),
        }
    }
}

#[test]
fn restored_dialog_continues_cseq_on_the_same_dialog() {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let mut rows = Vec::new();
    let actions = h.subscribe(&Sub::initial(), &policy);
    apply(&mut rows, &actions);
    let (id, first) = only_notify(&actions);
    let first = first.clone();
    apply(&mut rows, &h.answer(id, 200));
    let now = h.now();
    let act = h
        .notifier
        .notify(now, id, Some(StateChange::Activate), Some(pidf("online")));
    apply(&mut rows, &act);
    let before = cseq_of(only_notify(&act).1);
    apply(&mut rows, &h.answer(id, 200));

    // Restart: a fresh notifier from the stored rows only.
    let mut restarted = Notifier::new(config());
    assert_eq!(restarted.restore(&rows), 1);
    h.advance(Duration::from_secs(60));
    let now = h.now();
    let after = restarted.notify(now, id, None, Some(pidf("away")));
    let (_, notify) = only_notify(&after);
    assert!(cseq_of(notify) > before);
    assert_eq!(notify.headers.get("Call-ID"), first.headers.get("Call-ID"));
    let tag = |v: Option<&str>| {
        NameAddr::parse("From", v.unwrap())
            .unwrap()
            .tag()
            .map(str::to_string)
    };
    assert_eq!(
        tag(notify.headers.get("From")),
        tag(first.headers.get("From"))
    );
    assert_eq!(tag(notify.headers.get("To")), tag(first.headers.get("To")));
    assert_eq!(notify.uri, first.uri);
    assert!(matches!(sub_state(notify), SubState::Active { .. }));
}

#[test]
fn restored_dialog_answers_in_dialog_refresh() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(Some(pidf("online")));
    let mut rows = Vec::new();
    let actions = h.subscribe(&Sub::initial(), &policy);
    apply(&mut rows, &actions);
    let tag = to_tag(response(&actions));
    let mut restarted = Notifier::new(config());
    restarted.restore(&rows);
    let now = h.now();
    let refresh = Sub::initial().in_dialog(&tag, 2);
    let actions = restarted.on_subscribe(now, &mut h.ids, h.peer, &refresh.req, &policy);
    assert_eq!(response(&actions).status, 200);
    assert!(body_text(only_notify(&actions).1).contains("online"));
}

#[test]
fn restored_dialog_still_expires() {
    let mut h = Harness::new();
    let policy = TestPolicy::active(None);
    let mut rows = Vec::new();
    let actions = h.subscribe(&Sub::initial().expires(600), &policy);
    apply(&mut rows, &actions);
    let mut restarted = Notifier::new(config());
    restarted.restore(&rows);
    h.advance(Duration::from_secs(601));
    let now = h.now();
    let actions = restarted.handle_timeout(now, &policy);
    assert_eq!(
        only_notify(&actions).1.headers.get("Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert!(restarted.is_empty());
}

/// Run `n` state-only NOTIFYs on an active dialog, each answered 200; returns the stored
/// rows, the dialog id, the highest CSeq sent and how many store writes they caused.
fn active_dialog_with_updates(n: usize) -> (Vec<StoredRow>, NotifierDialogId, Harness, u32, usize) {
    let mut h = Harness::new();
    let policy = TestPolicy::pending();
    let mut rows = Vec::new();
    let actions = h.subscribe(&Sub::initial(), &policy);
    apply(&mut rows, &actions);
    let (id, _) = only_notify(&actions);
    apply(&mut rows, &h.answer(id, 200));
    let now = h.now();
    let act = h
        .notifier
        .notify(now, id, Some(StateChange::Activate), Some(pidf("online")));
    apply(&mut rows, &act);
    let mut max = cseq_of(only_notify(&act).1);
    apply(&mut rows, &h.answer(id, 200));
    let mut writes = 0;
    for i in 0..n {
        let now = h.now();
        let act = h
            .notifier
            .notify(now, id, None, Some(pidf(&format!("note {i}"))));
        writes += act
            .iter()
            .filter(|a| matches!(a, NotifierAction::Store(_)))
            .count();
        apply(&mut rows, &act);
        max = max.max(cseq_of(only_notify(&act).1));
        apply(&mut rows, &h.answer(id, 200));
    }
    (rows, id, h, max, writes)
}

#[test]
fn state_only_notifies_write_the_dialog_record_once_per_cseq_stride() {
    let n = 3 * CSEQ_STRIDE as usize;
    let (_, _, _, _, writes) = active_dialog_with_updates(n);
    assert!(writes <= 3, "{writes} store writes for {n} NOTIFYs");
    assert!(
        writes >= 2,
        "the CSeq is still written now and then: {writes}"
    );
}

#[test]
fn restored_cseq_exceeds_every_cseq_sent_before_the_restart() {
    // Not a multiple of the stride: the last NOTIFYs were not written.
    let (rows, id, mut h, max, _) = active_dialog_with_updates(CSEQ_STRIDE as usize + 17);
    let mut restarted = Notifier::new(config());
    assert_eq!(restarted.restore(&rows), 1);
    h.advance(Duration::from_secs(1));
    let now = h.now();
    let after = restarted.notify(now, id, None, Some(pidf("away")));
    let (_, notify) = only_notify(&after);
    assert!(cseq_of(notify) > max, "{} after {max}", cseq_of(notify));
}
