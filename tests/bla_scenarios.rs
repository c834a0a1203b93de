//! Bridged line appearance (draft-anil-sipping-bla-03) through the engine on a manual
//! clock: a phone registering to a shared line gets a `dialog;sla` subscription, its
//! NOTIFYs become the line's state for the other phones (never itself), and the
//! subscription ends with the binding (pua_bla never unsubscribes, anchors.md §6.3).

mod registrations_support;
mod support;

use registrations_support::*;
use support::*;
use xmpp_sip_gateway::core::engine::{Input, Output};
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply, BlaLineView};
use xmpp_sip_gateway::core::sip::{Method, Request};

const PHONE_A: &str = "sip:line1@192.0.2.11:5060";
const PHONE_B: &str = "sip:line1@192.0.2.12:5060";

fn dialog_info(version: u32, dialogs: &[(&str, &str)]) -> String {
    let mut s = format!(
        "<?xml version='1.0'?><dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='{version}' state='full' entity='{LINE}'>"
    );
    for (id, state) in dialogs {
        s += &format!("<dialog id='{id}' direction='initiator'><state>{state}</state></dialog>");
    }
    s + "</dialog-info>"
}

/// Registers `contact` to the line and accepts the gateway's `dialog;sla` SUBSCRIBE
/// (200, then an initial NOTIFY with no dialogs). Returns the SUBSCRIBE.
fn register_phone(h: &mut Harness, contact: &str, expires: u32, call_id: &str) -> Request {
    let outs = registered(h, LINE, contact, expires, call_id, 1);
    assert_eq!(final_status(&outs), 200);
    let sub = requests(&outs, Method::Subscribe)
        .into_iter()
        .find(|s| s.uri == contact)
        .expect("a dialog;sla SUBSCRIBE to the phone");
    h.answer(&sub, 200, |r| {
        r.headers.push("Expires", expires.to_string());
        r.headers.push("Contact", format!("<{contact}>"));
    });
    let outs = phone_notify(h, &sub, 1, &dialog_info(0, &[]));
    assert_eq!(final_status(&outs), 200);
    sub
}

/// A NOTIFY from the phone in the dialog of `sub`.
fn phone_notify(h: &mut Harness, sub: &Request, cseq: u32, body: &str) -> Vec<Output> {
    let mut n = h.notify_with_event(
        sub,
        "srv1",
        cseq,
        "active;expires=600",
        Some(body),
        "dialog;sla",
    );
    n.headers.set("Content-Type", "application/dialog-info+xml");
    h.peer_request(n)
}

/// The phone `contact` subscribes to the line's `dialog;sla` state at the gateway's agent.
fn watch_line(h: &mut Harness, contact: &str) -> Vec<Output> {
    let sub = subscribe(h, LINE, "dialog;sla", LINE, contact);
    let outs = h.peer_request(sub);
    assert_eq!(final_status(&outs), 200);
    let more = ack_notifies(h, &outs);
    [outs, more].concat()
}

/// NOTIFYs among `outs` sent to the watcher whose Contact is `contact` (answered 200).
fn notifies_to(h: &mut Harness, outs: &[Output], contact: &str) -> Vec<String> {
    let all = requests(outs, Method::Notify);
    ack_notifies(h, outs);
    all.iter()
        .filter(|n| n.uri == contact)
        .map(body_text)
        .collect()
}

fn lines(h: &mut Harness) -> Vec<BlaLineView> {
    let (_, outs) = h.admin(AdminCommand::ListBla);
    match admin_replies(&outs).pop() {
        Some((_, AdminReply::Bla(v))) => v,
        other => panic!("no bla listing: {other:?}"),
    }
}

#[test]
fn registering_to_a_line_subscribes_dialog_sla_to_the_phone_contact() {
    let mut h = harness();
    let outs = registered(&mut h, LINE, PHONE_A, 600, "a1", 1);
    let sub = one_request(&outs, Method::Subscribe);
    assert_eq!(sub.uri, PHONE_A);
    assert_eq!(sub.headers.get("Event"), Some("dialog;sla"));
    assert!(sub.headers.get("From").unwrap().contains(LINE));
    assert!(sub.headers.get("To").unwrap().contains(LINE));
    assert!(sub.headers.get("Contact").unwrap().contains("gateway@"));
    assert_eq!(sub.headers.get("Expires"), Some("600"));
    assert_eq!(
        sub.headers.get("Accept"),
        Some("application/dialog-info+xml")
    );
    // Not the line: no subscription.
    let outs = registered(&mut h, BOB, "sip:bob@192.0.2.1", 600, "b1", 1);
    assert!(requests(&outs, Method::Subscribe).is_empty());
}

#[test]
fn binding_expiry_unsubscribes_the_phone() {
    let mut h = harness();
    let sub = register_phone(&mut h, PHONE_A, 60, "a1");
    let outs = h.advance(secs(60));
    let unsub = requests(&outs, Method::Subscribe)
        .into_iter()
        .find(|s| s.headers.get("Expires") == Some("0"))
        .expect("an unSUBSCRIBE when the binding expired");
    assert_eq!(unsub.headers.get("Call-ID"), sub.headers.get("Call-ID"));
    assert!(unsub.headers.get("To").unwrap().contains("tag=srv1"));
    assert!(lines(&mut h)[0].phones.is_empty());
}

#[test]
fn unregistering_the_phone_unsubscribes_and_removes_its_line_state() {
    let mut h = harness();
    let sub_a = register_phone(&mut h, PHONE_A, 600, "a1");
    register_phone(&mut h, PHONE_B, 600, "b1");
    watch_line(&mut h, PHONE_B);
    let outs = phone_notify(
        &mut h,
        &sub_a,
        2,
        &dialog_info(1, &[("call1", "confirmed")]),
    );
    assert!(notifies_to(&mut h, &outs, PHONE_B)
        .iter()
        .any(|b| b.contains("confirmed")));
    let outs = registered(&mut h, LINE, PHONE_A, 0, "a1", 2);
    assert!(requests(&outs, Method::Subscribe)
        .iter()
        .any(|s| s.headers.get("Expires") == Some("0")));
    // A's call no longer shows on the line.
    let to_b = notifies_to(&mut h, &outs, PHONE_B);
    let last = to_b.last().expect("B is told A's state is gone");
    assert!(!last.contains("call1"), "{last}");
}

#[test]
fn a_phone_notify_reaches_the_other_phones_of_the_line_and_never_itself() {
    let mut h = harness();
    let sub_a = register_phone(&mut h, PHONE_A, 600, "a1");
    register_phone(&mut h, PHONE_B, 600, "b1");
    watch_line(&mut h, PHONE_A);
    watch_line(&mut h, PHONE_B);
    for (v, state) in [(1, "early"), (2, "confirmed"), (3, "terminated")] {
        let outs = phone_notify(&mut h, &sub_a, v + 1, &dialog_info(v, &[("call1", state)]));
        assert_eq!(final_status(&outs), 200);
        let all = requests(&outs, Method::Notify);
        assert!(
            all.iter().all(|n| n.uri != PHONE_A),
            "A was told its own state: {all:#?}"
        );
        let to_b = notifies_to(&mut h, &outs, PHONE_B);
        let last = to_b
            .last()
            .unwrap_or_else(|| panic!("B not told of {state}"));
        if state == "terminated" {
            assert!(!last.contains("call1"), "{last}");
        } else {
            assert!(last.contains(&format!("<state>{state}</state>")), "{last}");
        }
    }
}

#[test]
fn a_partial_document_after_a_version_gap_refreshes_the_subscription_for_full_state() {
    let mut h = harness();
    let sub_a = register_phone(&mut h, PHONE_A, 600, "a1");
    // A partial document two versions ahead: state was missed (RFC 4235 §4.1); a full
    // one after a gap would carry everything and need no refresh.
    let partial = dialog_info(3, &[("call1", "early")]).replace("state='full'", "state='partial'");
    let outs = phone_notify(&mut h, &sub_a, 2, &partial);
    assert_eq!(final_status(&outs), 200);
    let refresh = one_request(&outs, Method::Subscribe);
    assert_eq!(refresh.headers.get("Call-ID"), sub_a.headers.get("Call-ID"));
    assert!(refresh.headers.get("To").unwrap().contains("tag=srv1"));
    assert_ne!(refresh.headers.get("Expires"), Some("0"));
    // The state was applied all the same.
    assert_eq!(
        lines(&mut h)[0].phones[0].dialogs,
        [("call1".to_string(), "early".to_string())]
    );
}

#[test]
fn a_notify_that_is_not_dialog_info_is_400_and_the_line_state_is_unchanged() {
    let mut h = harness();
    let sub_a = register_phone(&mut h, PHONE_A, 600, "a1");
    phone_notify(&mut h, &sub_a, 2, &dialog_info(1, &[("call1", "early")]));
    let outs = phone_notify(
        &mut h,
        &sub_a,
        3,
        "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info'><oops/>",
    );
    assert_eq!(final_status(&outs), 400);
    let outs = phone_notify(
        &mut h,
        &sub_a,
        4,
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'/>",
    );
    assert_eq!(final_status(&outs), 400);
    let phone = &lines(&mut h)[0].phones[0];
    assert_eq!(phone.dialogs, [("call1".to_string(), "early".to_string())]);
    assert_eq!(phone.version, Some(1));
}

#[test]
fn a_notify_in_no_known_bla_dialog_is_481() {
    let mut h = harness();
    let mut fake = base(&mut h, Method::Subscribe, PHONE_A, LINE, LINE);
    fake.headers.push("Event", "dialog;sla");
    fake.headers.push("Contact", "<sip:gateway@127.0.0.1:5060>");
    let outs = phone_notify(&mut h, &fake, 1, &dialog_info(0, &[]));
    assert_eq!(final_status(&outs), 481);
}

#[test]
fn after_a_restart_live_phones_keep_their_subscription_and_lapsed_ones_are_unsubscribed_at_once() {
    let mut h = harness();
    h.input(Input::Restore(Vec::new()));
    let sub_a = register_phone(&mut h, PHONE_A, 60, "a1");
    register_phone(&mut h, PHONE_B, 600, "b1");
    let rows = rows_after(&store_ops(&h.all));

    let mut h2 = harness();
    h2.clock.set(h.now() + secs(61));
    let outs = h2.input(Input::Restore(rows));
    let subs = requests(&outs, Method::Subscribe);
    // A's binding lapsed while down: its dialog is ended; B's is resumed in dialog.
    let to_a: Vec<&Request> = subs
        .iter()
        .filter(|s| s.headers.get("Call-ID") == sub_a.headers.get("Call-ID"))
        .collect();
    assert!(
        to_a.iter().any(|s| s.headers.get("Expires") == Some("0")),
        "A not unsubscribed: {subs:#?}"
    );
    let phones = &lines(&mut h2)[0].phones;
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0].contact, PHONE_B);
    assert!(
        subs.iter()
            .all(|s| s.uri != PHONE_B || s.headers.get("To").unwrap().contains("tag=")),
        "B got a new dialog: {subs:#?}"
    );
}
