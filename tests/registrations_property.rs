//! Property (issue: usrloc + bla): random sequences of register / refresh / unregister /
//! expiry / restart for one shared-line AOR always end with the presence watchers see
//! (usrloc) naming exactly the live bindings as `open` tuples, and with exactly one live
//! `dialog;sla` subscription (bla) per live binding. The model is the list of live
//! bindings and their expiry; the gateway runs on a manual clock, restarts replay every
//! store write into a fresh engine, and the scripted phones answer every SUBSCRIBE.

mod registrations_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use registrations_support::*;
use support::*;
use xmpp_sip_gateway::core::engine::{Input, Output};
use xmpp_sip_gateway::core::modules::admin::{AdminCommand, AdminReply};
use xmpp_sip_gateway::core::persist::StoreOp;
use xmpp_sip_gateway::core::sip::Method;
use xmpp_sip_gateway::core::time::Timestamp;

const PHONES: [&str; 3] = [
    "sip:line1@192.0.2.21:5060",
    "sip:line1@192.0.2.22:5060",
    "sip:line1@192.0.2.23:5060",
];

#[derive(Clone, Debug)]
enum Op {
    Register { phone: usize, expires: u32 },
    Unregister { phone: usize },
    Advance { secs: u64 },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PHONES.len(), prop::sample::select(vec![60u32, 90, 300])).prop_map(|(phone, expires)| Op::Register { phone, expires }),
        2 => (0..PHONES.len()).prop_map(|phone| Op::Unregister { phone }),
        3 => (1u64..120).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Restart),
    ]
}

/// The scripted phones: every SUBSCRIBE the gateway sends is answered 200 and followed by
/// a NOTIFY (terminated for an unSUBSCRIBE), until nothing more goes out.
struct Phones {
    notify_cseq: BTreeMap<String, u32>,
}

impl Phones {
    fn serve(&mut self, h: &mut Harness, outs: Vec<Output>) {
        let mut pending = outs;
        for _ in 0..16 {
            let subs = requests(&pending, Method::Subscribe);
            if subs.is_empty() {
                return;
            }
            let mut next = Vec::new();
            for sub in subs {
                let expires: u32 = sub
                    .headers
                    .get("Expires")
                    .and_then(|e| e.parse().ok())
                    .unwrap_or(600);
                let contact = sub.uri.clone();
                next.extend(h.answer(&sub, 200, |r| {
                    r.headers.push("Expires", expires.to_string());
                    r.headers.push("Contact", format!("<{contact}>"));
                }));
                let call_id = sub.headers.get("Call-ID").unwrap().to_string();
                let cseq = self.notify_cseq.entry(call_id).or_insert(0);
                *cseq += 1;
                let state = if expires == 0 {
                    "terminated;reason=timeout".to_string()
                } else {
                    format!("active;expires={expires}")
                };
                let body = format!(
                    "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='{}' state='full' entity='{LINE}'/>",
                    *cseq - 1
                );
                let mut n =
                    h.notify_with_event(&sub, "srv1", *cseq, &state, Some(&body), "dialog;sla");
                n.headers.set("Content-Type", "application/dialog-info+xml");
                next.extend(h.peer_request(n));
            }
            pending = next;
        }
    }
}

/// The open tuples' contacts a watcher of the line sees now (a poll, RFC 6665 §4.4.3).
fn published_open(h: &mut Harness) -> BTreeSet<String> {
    let mut poll = subscribe(
        h,
        LINE,
        "presence",
        "sip:watcher@sip.test",
        "sip:watcher@127.0.0.1:5070;transport=tcp",
    );
    poll.headers.set("Expires", "0");
    let outs = h.peer_request(poll);
    let n = one_request(&outs, Method::Notify);
    h.answer(&n, 200, |_| {});
    let body = body_text(&n);
    // One tuple per binding; keep the contacts of the open ones.
    body.split("<tuple")
        .skip(1)
        .filter(|t| t.contains("<basic>open</basic>"))
        .flat_map(contacts)
        .collect()
}

/// The phones bla holds a live subscription for.
fn bla_subscribed(h: &mut Harness) -> BTreeSet<String> {
    let (_, outs) = h.admin(AdminCommand::ListBla);
    match admin_replies(&outs).pop() {
        Some((_, AdminReply::Bla(lines))) => lines
            .into_iter()
            .flat_map(|l| l.phones)
            .filter(|p| p.subscription.is_some())
            .map(|p| p.contact)
            .collect(),
        other => panic!("no bla listing: {other:?}"),
    }
}

fn run(ops: Vec<Op>) {
    let mut h = harness();
    let mut phones = Phones {
        notify_cseq: BTreeMap::new(),
    };
    let outs = h.input(Input::Restore(Vec::new()));
    phones.serve(&mut h, outs);
    let mut live: BTreeMap<usize, Timestamp> = BTreeMap::new();
    let mut cseq = [0u32; 3];
    let mut history: Vec<StoreOp> = Vec::new();
    for op in ops {
        match op {
            Op::Register { phone, expires } => {
                cseq[phone] += 1;
                let outs = registered(
                    &mut h,
                    LINE,
                    PHONES[phone],
                    expires,
                    &format!("ph{phone}"),
                    cseq[phone],
                );
                assert_eq!(final_status(&outs), 200);
                live.insert(phone, h.now() + secs(u64::from(expires)));
                phones.serve(&mut h, outs);
            }
            Op::Unregister { phone } => {
                cseq[phone] += 1;
                let outs = registered(
                    &mut h,
                    LINE,
                    PHONES[phone],
                    0,
                    &format!("ph{phone}"),
                    cseq[phone],
                );
                assert_eq!(final_status(&outs), 200);
                live.remove(&phone);
                phones.serve(&mut h, outs);
            }
            Op::Advance { secs: s } => {
                // Second by second, so every SUBSCRIBE the gateway sends is answered at once.
                for _ in 0..s {
                    let outs = h.advance(secs(1));
                    phones.serve(&mut h, outs);
                }
                let now = h.now();
                live.retain(|_, at| *at > now);
            }
            Op::Restart => {
                history.extend(store_ops(&h.all));
                let rows = rows_after(&history);
                let now = h.now();
                h = harness();
                h.clock.set(now);
                let outs = h.input(Input::Restore(rows));
                phones.serve(&mut h, outs);
                // Resumed subscriptions go out paced; let them.
                let outs = h.advance(secs(1));
                phones.serve(&mut h, outs);
                let now = h.now();
                live.retain(|_, at| *at > now);
            }
        }
        let want: BTreeSet<String> = live.keys().map(|p| PHONES[*p].to_string()).collect();
        assert_eq!(
            published_open(&mut h),
            want,
            "published presence vs live bindings"
        );
        assert_eq!(
            bla_subscribed(&mut h),
            want,
            "bla subscriptions vs live bindings"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn published_presence_and_bla_subscriptions_follow_the_live_bindings(ops in prop::collection::vec(op(), 1..16)) {
        run(ops);
    }
}
