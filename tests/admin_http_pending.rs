//! The daemon-side registry of admin calls: ids in, replies routed back to the right request.

use tokio::sync::oneshot;
use xmpp_sip_gateway::core::engine::{AdminRequestId, Input};
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply, HealthView};
use xmpp_sip_gateway::io::admin_http::{AdminCall, PendingAdmin};

fn health(status: &str) -> AdminReply {
    AdminReply::Health(HealthView {
        status: status.into(),
        publications: 0,
        subscriptions: 0,
        notifier_dialogs: 0,
    })
}

fn call(command: AdminCommand) -> (AdminCall, oneshot::Receiver<AdminReply>) {
    let (reply, rx) = oneshot::channel();
    (AdminCall { command, reply }, rx)
}

fn id_of(input: &Input) -> AdminRequestId {
    match input {
        Input::Admin { id, .. } => *id,
        other => panic!("expected Input::Admin, got {other:?}"),
    }
}

#[test]
fn register_turns_a_call_into_an_admin_input_with_its_command() {
    let mut pending = PendingAdmin::new();
    let (c, _rx) = call(AdminCommand::ListPublications);
    let input = pending.register(c);
    assert!(matches!(
        input,
        Input::Admin {
            command: AdminCommand::ListPublications,
            ..
        }
    ));
    assert_eq!(pending.len(), 1);
}

#[test]
fn each_call_gets_a_distinct_id() {
    let mut pending = PendingAdmin::new();
    let (a, _ra) = call(AdminCommand::Health);
    let (b, _rb) = call(AdminCommand::Health);
    assert_ne!(id_of(&pending.register(a)), id_of(&pending.register(b)));
}

#[test]
fn reply_reaches_the_request_with_the_matching_id() {
    let mut pending = PendingAdmin::new();
    let (a, mut ra) = call(AdminCommand::Health);
    let (b, mut rb) = call(AdminCommand::Health);
    let ia = id_of(&pending.register(a));
    let ib = id_of(&pending.register(b));
    assert!(pending.complete(ib, health("b")));
    assert!(pending.complete(ia, health("a")));
    assert_eq!(ra.try_recv().unwrap(), health("a"));
    assert_eq!(rb.try_recv().unwrap(), health("b"));
    assert!(pending.is_empty());
}

#[test]
fn reply_for_an_unknown_id_is_dropped() {
    let mut pending = PendingAdmin::new();
    assert!(!pending.complete(AdminRequestId(99), health("x")));
}

#[test]
fn reply_after_the_request_gave_up_is_dropped() {
    let mut pending = PendingAdmin::new();
    let (a, ra) = call(AdminCommand::Health);
    let id = id_of(&pending.register(a));
    drop(ra); // the HTTP handler timed out
    assert!(!pending.complete(id, health("late")));
    assert!(pending.is_empty());
}

#[test]
fn abandoned_calls_are_forgotten_on_the_next_register() {
    let mut pending = PendingAdmin::new();
    let (a, ra) = call(AdminCommand::Health);
    pending.register(a);
    drop(ra);
    let (b, _rb) = call(AdminCommand::Health);
    pending.register(b);
    assert_eq!(pending.len(), 1);
}
