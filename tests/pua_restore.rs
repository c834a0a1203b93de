//! Restart: restored records are refreshed in place (product.md, Persistence).

mod support;

use support::*;
use xmpp_sip_gateway::core::engine::Input;
use xmpp_sip_gateway::core::sip::Method;

/// A restored publication is refreshed with its stored ETag at its normal time.
#[test]
fn restored_publication_is_refreshed_with_its_stored_etag() {
    let mut h1 = Harness::new();
    let (_, outs) = h1.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p = one_request(&outs, Method::Publish);
    h1.answer(&p, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "1800");
    });
    let rows = Harness::rows_from_puts(&h1.all);

    let mut h2 = Harness::new();
    h2.advance(secs(100));
    let outs = h2.input(Input::Restore(rows));
    assert!(requests(&outs, Method::Publish).is_empty(), "not due yet");
    let r = h2.next_request(Method::Publish, 1600).0;
    assert_eq!(header(&r, "SIP-If-Match"), Some("e1"));
    assert!(r.body.is_empty(), "a refresh, not a new initial");
}

/// A restored publication whose refresh is already due is refreshed at once.
#[test]
fn restored_publication_past_its_refresh_time_is_refreshed_at_once() {
    let mut h1 = Harness::new();
    let (_, outs) = h1.admin(Harness::publish_cmd(
        "sip:ben@sip.example",
        -1,
        Some(PIDF_OPEN),
        None,
    ));
    let p = one_request(&outs, Method::Publish);
    h1.answer(&p, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "1800");
    });
    let rows = Harness::rows_from_puts(&h1.all);

    let mut h2 = Harness::new();
    h2.advance(secs(1650));
    h2.input(Input::Restore(rows));
    let r = one_request(&h2.advance(secs(0)), Method::Publish);
    assert_eq!(header(&r, "SIP-If-Match"), Some("e1"));
}

/// A restored subscription is refreshed in its dialog, CSeq continuing.
#[test]
fn restored_subscription_is_refreshed_in_dialog() {
    let mut h1 = Harness::new();
    let (_, outs) = h1.admin(Harness::subscribe_cmd("presence", -1));
    let s = one_request(&outs, Method::Subscribe);
    h1.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let n = h1.notify(&s, "n1", 1, "active;expires=3600", None);
    h1.peer_request(n);
    let rows = Harness::rows_from_puts(&h1.all);

    let mut h2 = Harness::new();
    h2.advance(secs(60));
    assert!(requests(&h2.input(Input::Restore(rows)), Method::Subscribe).is_empty());
    let r = h2.next_request(Method::Subscribe, 3300).0;
    assert_eq!(header(&r, "Call-ID"), header(&s, "Call-ID"));
    assert!(header(&r, "To").unwrap().contains("tag=n1"));
    assert_eq!(
        tag_of(header(&r, "From").unwrap()),
        tag_of(header(&s, "From").unwrap())
    );
    assert_eq!(cseq_of(&r), 2);
    assert_eq!(r.uri, "sip:notifier@127.0.0.1:5070;transport=tcp");
}

/// NOTIFYs on a restored dialog are matched.
#[test]
fn restored_subscription_accepts_notifies_of_its_dialog() {
    let mut h1 = Harness::new();
    let (_, outs) = h1.admin(Harness::subscribe_cmd("presence", -1));
    let s = one_request(&outs, Method::Subscribe);
    let n = h1.notify(&s, "n1", 1, "active;expires=3600", None);
    h1.peer_request(n);
    let rows = Harness::rows_from_puts(&h1.all);

    let mut h2 = Harness::new();
    h2.input(Input::Restore(rows));
    let n2 = h2.notify(&s, "n1", 2, "active;expires=3600", Some(PIDF_CLOSED));
    assert_eq!(one_response(&h2.peer_request(n2)).status, 200);
}

/// Records due at once after a restart are paced, not sent in one burst.
#[test]
fn due_records_are_paced_after_a_restart() {
    let mut h1 = Harness::new();
    h1.admin(Harness::subscribe_cmd("presence", -1));
    h1.admin(Harness::subscribe_cmd("presence.winfo", -1));
    let rows = Harness::rows_from_puts(&h1.all);
    assert_eq!(rows.len(), 2);

    let mut h2 = Harness::new();
    h2.advance(secs(7200));
    h2.input(Input::Restore(rows));
    assert_eq!(requests(&h2.advance(secs(0)), Method::Subscribe).len(), 1);
    let pace = h2.engine.config().restore_pace;
    assert_eq!(requests(&h2.advance(pace), Method::Subscribe).len(), 1);
}

/// Live subscriptions are resumed at once with an in-dialog refresh after a restart, paced
/// at `restore_pace` (product.md: resumed with an in-dialog refresh; no storm).
#[test]
fn live_subscriptions_are_refreshed_at_once_and_paced_after_a_restart() {
    use xmpp_sip_gateway::core::modules::admin::{AdminCommand, SubscribeCommand};
    let mut h1 = Harness::new();
    let mut subs = Vec::new();
    for i in 0..2 {
        let (_, outs) = h1.admin(AdminCommand::Subscribe(SubscribeCommand {
            presentity: format!("sip:p{i}@sip.example"),
            watcher: "sip:anna@xmpp.example".into(),
            event: "presence".into(),
            expires: -1,
        }));
        let s = one_request(&outs, Method::Subscribe);
        h1.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
        let n = h1.notify(&s, "n1", 1, "active;expires=3600", None);
        h1.peer_request(n);
        subs.push(s);
    }
    let rows = Harness::rows_from_puts(&h1.all);

    let mut h2 = Harness::new();
    h2.advance(secs(10));
    h2.input(Input::Restore(rows));
    let first = requests(&h2.advance(secs(0)), Method::Subscribe);
    assert_eq!(first.len(), 1);
    assert!(
        header(&first[0], "To").unwrap().contains("tag=n1"),
        "in dialog"
    );
    let pace = h2.engine.config().restore_pace;
    let second = requests(&h2.advance(pace), Method::Subscribe);
    assert_eq!(second.len(), 1);
    assert_ne!(
        header(&first[0], "Call-ID"),
        header(&second[0], "Call-ID"),
        "one refresh per subscription"
    );
}

/// A live subscription whose own refresh comes before its turn in the paced resync keeps
/// its refresh time, so a long resync does not let its dialog expire.
#[test]
fn live_subscription_due_before_its_paced_turn_keeps_its_refresh_time() {
    use xmpp_sip_gateway::core::engine::EngineConfig;
    let mut h1 = Harness::new();
    let s = one_request(
        &h1.admin(Harness::subscribe_cmd("presence", -1)).1,
        Method::Subscribe,
    );
    h1.answer(&s, 200, |r| r.headers.push("Expires", "3600"));
    let n = h1.notify(&s, "n1", 1, "active;expires=3600", None);
    h1.peer_request(n);
    // A second (dead) record restored first takes the first slot; a huge pace puts the
    // live one's slot after its own refresh time.
    let mut rows = Harness::rows_from_puts(&h1.all);
    let mut dead = rows[0].clone();
    dead.key = "0".into();
    if let Some(obj) = dead.data.as_object_mut() {
        obj.insert("id".into(), serde_json::json!(0));
        obj.insert("expires_at".into(), serde_json::Value::Null);
        obj.insert("to_tag".into(), serde_json::Value::Null);
    }
    rows.insert(0, dead);
    let config = EngineConfig {
        restore_pace: secs(100_000),
        ..support::test_config()
    };
    let mut h2 = Harness::with_config(config);
    h2.input(Input::Restore(rows));
    let first = requests(&h2.advance(secs(0)), Method::Subscribe);
    assert_eq!(first.len(), 1, "the dead record takes the first slot");
    assert!(
        !header(&first[0], "To").unwrap().contains("tag="),
        "a new dialog"
    );
    let mut refreshed_in_dialog = false;
    for _ in 0..3300 {
        for r in requests(&h2.advance(secs(1)), Method::Subscribe) {
            if header(&r, "Call-ID") == header(&s, "Call-ID") {
                refreshed_in_dialog = true;
            }
        }
        if refreshed_in_dialog {
            break;
        }
    }
    assert!(
        refreshed_in_dialog,
        "the live dialog was refreshed before it expired"
    );
}
