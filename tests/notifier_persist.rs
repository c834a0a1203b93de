//! Notifier dialogs survive a restart (product.md, Persistence): NOTIFYs continue on the
//! same dialog with CSeq continuing.

mod notifier_support;

use std::time::Duration;

use notifier_support::*;
use xmpp_sip_gateway::core::persist::{StoreOp, StoredRow};
use xmpp_sip_gateway::core::sip::headers::{NameAddr, SubState};
use xmpp_sip_gateway::core::sip::notifier::{Notifier, NotifierAction, StateChange};

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
    assert_eq!(cseq_of(notify), before + 1);
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
