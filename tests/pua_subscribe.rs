//! RFC 6665 subscriber (standards.md §6, §16 cases 15–33 in their generic PUA form).

mod support;

use support::*;
use xmpp_sip_gateway::core::pua::{PuaEvent, SubscriptionEnd};
use xmpp_sip_gateway::core::sip::headers::SubState;
use xmpp_sip_gateway::core::sip::{Method, Request};

fn start(h: &mut Harness, event: &str) -> Request {
    let (_, outs) = h.admin(Harness::subscribe_cmd(event, -1));
    one_request(&outs, Method::Subscribe)
}

/// SUBSCRIBE, 200 (Expires 3600), NOTIFY active;expires=3600 with a PIDF.
fn establish(h: &mut Harness) -> Request {
    let sub = start(h, "presence");
    h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
    let n = h.notify(&sub, "n1", 1, "active;expires=3600", Some(PIDF_OPEN));
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    h.take_events();
    sub
}

fn ended(h: &Harness) -> Vec<(SubscriptionEnd, bool)> {
    h.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            PuaEvent::SubscriptionEnded { end, retry_at, .. } => {
                Some((end.clone(), retry_at.is_some()))
            }
            _ => None,
        })
        .collect()
}

/// Case 15: the initial SUBSCRIBE's headers.
#[test]
fn case15_initial_subscribe_carries_the_required_headers() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    assert_eq!(s.uri, "sip:ben@sip.example");
    assert_eq!(header(&s, "Event"), Some("presence"));
    assert_eq!(header(&s, "Accept"), Some("application/pidf+xml"));
    assert_eq!(header(&s, "Expires"), Some("3600"));
    assert_eq!(header(&s, "Max-Forwards"), Some("70"));
    assert!(header(&s, "From").unwrap().contains("tag="));
    assert!(!header(&s, "To").unwrap().contains("tag="));
    assert!(header(&s, "Call-ID").is_some());
    assert!(header(&s, "Contact").is_some());
    assert_eq!(header(&s, "CSeq"), Some("1 SUBSCRIBE"));
}

/// Case 15: Accept follows the package (winfo, dialog;sla).
#[test]
fn case15_accept_follows_the_event_package() {
    let mut h = Harness::new();
    let w = start(&mut h, "presence.winfo");
    assert_eq!(header(&w, "Accept"), Some("application/watcherinfo+xml"));
    let mut h = Harness::new();
    let d = start(&mut h, "dialog;sla");
    assert_eq!(header(&d, "Accept"), Some("application/dialog-info+xml"));
}

/// Case 16: a 200 (or 202) alone delivers no state.
#[test]
fn case16_accepted_subscribe_without_notify_delivers_nothing() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    h.answer(&s, 202, |r| r.headers.push("Expires", "3600"));
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, PuaEvent::Notify { .. })));
}

/// Case 17: a pending NOTIFY without body is answered 200.
#[test]
fn case17_pending_notify_is_answered_200() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let n = h.notify(&s, "n1", 1, "pending;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(n)).status, 200);
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        PuaEvent::Notify {
            state: SubState::Pending { .. },
            ..
        }
    )));
}

/// Case 18: an active NOTIFY is answered 200, its body handed to the owner, and a refresh
/// goes out before its expires (499 s), in the dialog.
#[test]
fn case18_active_notify_delivers_state_and_schedules_refresh() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let n = h.notify(&s, "n1", 1, "active;expires=499", Some(PIDF_OPEN));
    assert_eq!(one_response(&h.peer_request(n)).status, 200);
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        PuaEvent::Notify {
            state: SubState::Active { expires: Some(499) },
            ..
        }
    )));
    let r = h.next_request(Method::Subscribe, 450).0;
    assert!(header(&r, "To").unwrap().contains("tag=n1"));
    assert_eq!(header(&r, "Call-ID"), header(&s, "Call-ID"));
    assert_eq!(cseq_of(&r), 2);
}

/// Case 19: later NOTIFYs on the dialog are delivered as state updates.
#[test]
fn case19_second_active_notify_is_an_update() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "active;expires=3000", Some(PIDF_CLOSED));
    assert_eq!(one_response(&h.peer_request(n)).status, 200);
    let ev = h.take_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PuaEvent::Notify { .. }))
            .count(),
        1
    );
}

/// Case 20: 403, 489 or 603 to the initial SUBSCRIBE ends the subscription; no retry.
#[test]
fn case20_initial_refusal_is_final() {
    for code in [403, 489, 603] {
        let mut h = Harness::new();
        let s = start(&mut h, "presence");
        h.answer(&s, code, |_| {});
        assert_eq!(
            ended(&h),
            vec![(
                SubscriptionEnd::Response {
                    code,
                    reason: "Whatever".into()
                },
                false
            )]
        );
        assert!(
            requests(&h.advance(secs(3600)), Method::Subscribe).is_empty(),
            "{code} retried"
        );
    }
}

/// Case 21: a refresh answered 423 → an in-dialog SUBSCRIBE with Expires ≥ Min-Expires.
#[test]
fn case21_refresh_answered_423_retries_in_dialog_with_min_expires() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let r = h.next_request(Method::Subscribe, 3300).0;
    let outs = h.answer(&r, 423, |resp| resp.headers.push("Min-Expires", "1800"));
    let again = one_request(&outs, Method::Subscribe);
    assert!(header(&again, "Expires").unwrap().parse::<u32>().unwrap() >= 1800);
    assert_eq!(header(&again, "Call-ID"), header(&s, "Call-ID"));
    assert!(header(&again, "To").unwrap().contains("tag=n1"));
    assert_eq!(cseq_of(&again), cseq_of(&r) + 1);
}

/// Case 22: a refresh answered 481 → an initial SUBSCRIBE with a new Call-ID and From-tag.
#[test]
fn case22_refresh_answered_481_subscribes_on_a_new_dialog() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let r = h.next_request(Method::Subscribe, 3300).0;
    let outs = h.answer(&r, 481, |_| {});
    let fresh = one_request(&outs, Method::Subscribe);
    assert_ne!(header(&fresh, "Call-ID"), header(&s, "Call-ID"));
    assert_ne!(
        tag_of(header(&fresh, "From").unwrap()),
        tag_of(header(&s, "From").unwrap())
    );
    assert!(!header(&fresh, "To").unwrap().contains("tag="));
    assert_eq!(
        ended(&h).last().map(|e| e.1),
        Some(true),
        "re-subscribing, not ended for good"
    );
}

/// After a re-subscribe on a new dialog, NOTIFYs are matched by the new Call-ID: one on the
/// new dialog is accepted, one on the old dialog gets 481.
#[test]
fn after_a_new_dialog_notify_matches_the_new_call_id_only() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let r = h.next_request(Method::Subscribe, 3300).0;
    let outs = h.answer(&r, 481, |_| {});
    let fresh = one_request(&outs, Method::Subscribe);
    h.answer(&fresh, 200, |r| r.headers.push("Expires", "3600"));
    let new = h.notify(&fresh, "n2", 1, "active;expires=3600", Some(PIDF_OPEN));
    assert_eq!(one_response(&h.peer_request(new)).status, 200);
    let old = h.notify(&s, "n1", 2, "active;expires=3600", Some(PIDF_OPEN));
    assert_eq!(one_response(&h.peer_request(old)).status, 481);
}

/// Case 23: no NOTIFY within 64·T1 of the SUBSCRIBE → failed (Timer N), retried later on a
/// new dialog; no state delivered.
#[test]
fn case23_timer_n_without_notify_fails_and_retries() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    h.advance(secs(33));
    assert_eq!(ended(&h), vec![(SubscriptionEnd::NoNotify, true)]);
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, PuaEvent::Notify { .. })));
    // Once Timer N has fired, a NOTIFY that would create the dialog is refused.
    let late = h.notify(&s, "n1", 1, "active;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(late)).status, 481);
    let retry = h.next_request(Method::Subscribe, 10).0;
    assert_ne!(header(&retry, "Call-ID"), header(&s, "Call-ID"));
}

/// Case 24: terminated;reason=rejected → 200, ended for good, no re-SUBSCRIBE.
#[test]
fn case24_terminated_rejected_is_final() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "terminated;reason=rejected", None);
    assert_eq!(one_response(&h.peer_request(n)).status, 200);
    assert_eq!(ended(&h).last().map(|e| e.1), Some(false));
    assert!(requests(&h.advance(secs(7200)), Method::Subscribe).is_empty());
}

/// Case 25: terminated;reason=deactivated → 200 then at once a new-dialog SUBSCRIBE.
#[test]
fn case25_terminated_deactivated_resubscribes_at_once_on_a_new_dialog() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "terminated;reason=deactivated", None);
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    let fresh = one_request(&outs, Method::Subscribe);
    assert_ne!(header(&fresh, "Call-ID"), header(&s, "Call-ID"));
    assert!(!header(&fresh, "To").unwrap().contains("tag="));
}

/// Case 26: terminated;reason=probation;retry-after=600 → no SUBSCRIBE before 600 s.
#[test]
fn case26_probation_waits_for_retry_after() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(
        &s,
        "n1",
        2,
        "terminated;reason=probation;retry-after=600",
        None,
    );
    assert!(requests(&h.peer_request(n), Method::Subscribe).is_empty());
    assert!(requests(&h.advance(secs(599)), Method::Subscribe).is_empty());
    assert_eq!(requests(&h.advance(secs(2)), Method::Subscribe).len(), 1);
    assert_eq!(ended(&h).last().map(|e| e.1), Some(true));
}

/// Case 27: terminated;reason=timeout → re-SUBSCRIBE; the subscription is not ended.
#[test]
fn case27_terminated_timeout_resubscribes() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "terminated;reason=timeout", None);
    assert_eq!(requests(&h.peer_request(n), Method::Subscribe).len(), 1);
    assert!(ended(&h).iter().all(|e| e.1), "never ended for good");
}

/// Case 28: unsubscribe is an in-dialog SUBSCRIBE (same Call-ID and tags, CSeq+1) with
/// Expires 0; the final terminated NOTIFY is answered 200.
#[test]
fn case28_unsubscribe_is_in_dialog_expires_zero() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let (_, outs) = h.admin(Harness::subscribe_cmd("presence", 0));
    let u = one_request(&outs, Method::Subscribe);
    assert_eq!(header(&u, "Expires"), Some("0"));
    assert_eq!(header(&u, "Call-ID"), header(&s, "Call-ID"));
    assert_eq!(
        tag_of(header(&u, "From").unwrap()),
        tag_of(header(&s, "From").unwrap())
    );
    assert!(header(&u, "To").unwrap().contains("tag=n1"));
    assert_eq!(cseq_of(&u), cseq_of(&s) + 1);
    h.answer(&u, 200, |r| r.headers.push("Expires", "0"));
    assert!(ended(&h).contains(&(SubscriptionEnd::Unsubscribed, false)));
    let n = h.notify(&s, "n1", 2, "terminated;reason=timeout", None);
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    assert!(requests(&outs, Method::Subscribe).is_empty());
}

/// Case 29: for presence, a NOTIFY from a second fork (another From-tag) gets 481.
#[test]
fn case29_second_fork_notify_for_presence_gets_481() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "b2", 1, "active;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(n)).status, 481);
}

/// Case 29 (winfo): other packages keep each forked dialog.
#[test]
fn case29_second_fork_notify_for_winfo_is_accepted() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence.winfo");
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let a = h.notify(&s, "a1", 1, "active;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(a)).status, 200);
    let b = h.notify(&s, "b2", 1, "active;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(b)).status, 200);
}

/// Case 30: a NOTIFY matching no subscription gets 481.
#[test]
fn case30_unmatched_notify_gets_481() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let mut n = h.notify(&s, "n1", 2, "active;expires=3600", None);
    n.headers.set("Call-ID", "unknown@elsewhere");
    assert_eq!(one_response(&h.peer_request(n)).status, 481);
}

/// Case 31: a NOTIFY with Event: dialog on a presence dialog gets 489.
#[test]
fn case31_notify_with_a_foreign_event_gets_489() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify_with_event(&s, "n1", 2, "active;expires=3600", None, "dialog");
    assert_eq!(one_response(&h.peer_request(n)).status, 489);
}

/// Case 32: a NOTIFY before the 200 is accepted and creates the dialog.
#[test]
fn case32_notify_before_the_200_creates_the_dialog() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    let n = h.notify(&s, "n1", 1, "active;expires=600", Some(PIDF_OPEN));
    assert_eq!(one_response(&h.peer_request(n)).status, 200);
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let r = h.next_request(Method::Subscribe, 560).0;
    assert!(
        header(&r, "To").unwrap().contains("tag=n1"),
        "refresh in the NOTIFY's dialog, per its expires"
    );
}

/// The route set comes from the NOTIFY's Record-Route and the remote target from its
/// Contact (RFC 6665 §4.1.2.4).
#[test]
fn refresh_uses_route_set_and_remote_target_from_the_notify() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let mut n = h.notify(&s, "n1", 1, "active;expires=600", None);
    n.headers
        .push("Record-Route", "<sip:127.0.0.1:5070;transport=tcp;lr>");
    h.peer_request(n);
    let r = h.next_request(Method::Subscribe, 560).0;
    assert_eq!(r.uri, "sip:notifier@127.0.0.1:5070;transport=tcp");
    assert!(header(&r, "Route")
        .unwrap()
        .contains("sip:127.0.0.1:5070;transport=tcp;lr"));
}

/// A NOTIFY without a usable Subscription-State gets 400.
#[test]
fn notify_with_bad_subscription_state_gets_400() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "bogus;;", None);
    assert_eq!(one_response(&h.peer_request(n)).status, 400);
}

/// A NOTIFY whose body does not parse gets 400.
#[test]
fn notify_with_unparseable_body_gets_400() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(
        &s,
        "n1",
        2,
        "active;expires=3600",
        Some("<presence><unclosed>"),
    );
    assert_eq!(one_response(&h.peer_request(n)).status, 400);
}

/// Store writes precede the 200 that acknowledges a NOTIFY (product.md, Persistence).
#[test]
fn dialog_is_stored_before_the_notify_is_answered() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    let n = h.notify(&s, "n1", 1, "active;expires=600", None);
    let outs = h.peer_request(n);
    assert_stored_before_answered(&outs);
}

/// Timer N also runs on refreshes: a refresh accepted but never followed by a NOTIFY
/// fails the dialog, and the subscription is re-made on a new one.
#[test]
fn refresh_without_notify_fails_on_timer_n_and_resubscribes() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let r = h.next_request(Method::Subscribe, 3300).0;
    h.answer(&r, 200, |resp| resp.headers.push("Expires", "3600"));
    h.advance(secs(33));
    assert!(ended(&h).contains(&(SubscriptionEnd::NoNotify, true)));
    let fresh = h.next_request(Method::Subscribe, 10).0;
    assert_ne!(header(&fresh, "Call-ID"), header(&s, "Call-ID"));
}

/// A server answering 423 again and again is not retried forever.
#[test]
fn repeated_423_is_not_retried_forever() {
    let mut h = Harness::new();
    let mut s = start(&mut h, "presence");
    for _ in 0..2 {
        let outs = h.answer(&s, 423, |r| r.headers.push("Min-Expires", "7200"));
        s = one_request(&outs, Method::Subscribe);
    }
    let outs = h.answer(&s, 423, |r| r.headers.push("Min-Expires", "7200"));
    assert!(
        requests(&outs, Method::Subscribe).is_empty(),
        "third 423 not retried at once"
    );
}

/// A subscription ended for good is deleted from the store.
#[test]
fn final_termination_deletes_the_stored_subscription() {
    use xmpp_sip_gateway::core::engine::Output;
    use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable};
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "terminated;reason=noresource", None);
    let outs = h.peer_request(n);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Store(StoreOp::Delete {
            table: StoreTable::Subscriptions,
            ..
        })
    )));
}

/// Within a dialog a NOTIFY older than the last one is refused (RFC 3261 §12.2.2): the
/// highest CSeq holds the current document (RFC 3856 §6.6).
#[test]
fn out_of_order_notify_is_refused() {
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n5 = h.notify(&s, "n1", 5, "active;expires=3600", Some(PIDF_CLOSED));
    h.peer_request(n5);
    let n3 = h.notify(&s, "n1", 3, "active;expires=3600", Some(PIDF_OPEN));
    assert_eq!(one_response(&h.peer_request(n3)).status, 500);
}

/// dialog;sla subscriptions keep forked dialogs as well (RFC 6665 §4.1.2.4).
#[test]
fn case29_second_fork_notify_for_dialog_sla_is_accepted() {
    let mut h = Harness::new();
    let s = start(&mut h, "dialog;sla");
    let a = h.notify(&s, "a1", 1, "active;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(a)).status, 200);
    let b = h.notify(&s, "b2", 1, "active;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(b)).status, 200);
}

/// Write-behind: an in-dialog NOTIFY that only brings new state (same phase, dialog and
/// expiry) is answered without a store write.
#[test]
fn notify_with_only_new_state_is_not_written() {
    use xmpp_sip_gateway::core::engine::Output;
    let mut h = Harness::new();
    let s = establish(&mut h);
    let n = h.notify(&s, "n1", 2, "active;expires=3600", Some(PIDF_OPEN));
    let outs = h.peer_request(n);
    assert_eq!(one_response(&outs).status, 200);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Store(_))),
        "{outs:#?}"
    );
}

/// A NOTIFY that changes the phase (pending → active) is written before its 200.
#[test]
fn notify_changing_the_phase_is_written() {
    let mut h = Harness::new();
    let s = start(&mut h, "presence");
    h.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let n = h.notify(&s, "n1", 1, "pending;expires=3600", None);
    assert_eq!(one_response(&h.peer_request(n)).status, 200);
    let n = h.notify(&s, "n1", 2, "active;expires=3600", Some(PIDF_OPEN));
    let outs = h.peer_request(n);
    assert_stored_before_answered(&outs);
}

/// Subscriptions made in one burst do not refresh in one burst: the first refresh of a new
/// dialog is drawn over most of the granted interval (10–90 %), not only 80–90 %.
#[test]
fn first_refreshes_of_a_burst_are_spread_over_the_interval() {
    use std::collections::HashMap;
    use xmpp_sip_gateway::core::modules::admin::{AdminCommand, SubscribeCommand};
    let mut h = Harness::new();
    for i in 0..8 {
        let (_, outs) = h.admin(AdminCommand::Subscribe(SubscribeCommand {
            presentity: format!("sip:p{i}@sip.example"),
            watcher: "sip:anna@xmpp.example".into(),
            event: "presence".into(),
            expires: -1,
        }));
        let sub = one_request(&outs, Method::Subscribe);
        h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
        let n = h.notify(&sub, "n1", 1, "active;expires=3600", None);
        assert_eq!(one_response(&h.peer_request(n)).status, 200);
    }
    let mut first: HashMap<String, u64> = HashMap::new();
    for t in 1..=3300u64 {
        for r in requests(&h.advance(secs(1)), Method::Subscribe) {
            let call_id = header(&r, "Call-ID").unwrap().to_string();
            first.entry(call_id).or_insert(t);
        }
    }
    assert_eq!(first.len(), 8, "{first:?}");
    assert!(
        first.values().all(|t| (360..=3240).contains(t)),
        "{first:?}"
    );
    assert!(
        first.values().any(|t| *t < 2880),
        "all first refreshes in 80–90 %: {first:?}"
    );
}

/// The turn's outputs write the dialog before they send the answer: a NOTIFY is answered
/// 200 only once its dialog is durable.
fn assert_stored_before_answered(outs: &[xmpp_sip_gateway::core::engine::Output]) {
    use xmpp_sip_gateway::core::engine::Output;
    let put = outs.iter().position(|o| matches!(o, Output::Store(_)));
    let ok = outs
        .iter()
        .position(|o| matches!(o, Output::SendSip { .. }));
    assert!(put.is_some() && put < ok, "{outs:#?}");
}
