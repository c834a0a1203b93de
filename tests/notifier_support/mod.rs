//! Shared harness for the notifier tests: a manual clock, a seeded id generator, a
//! configurable test policy and helpers to build SUBSCRIBEs and pick actions apart.
#![allow(dead_code)]

use std::cell::RefCell;
use std::time::Duration;

use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::persist::StoreOp;
use xmpp_sip_gateway::core::sip::headers::{NameAddr, SubState};
use xmpp_sip_gateway::core::sip::notifier::{
    Authorization, Body, Decision, Notifier, NotifierAction, NotifierConfig, NotifierDialogId,
    NotifierDialogView, NotifierEvent, NotifierPolicy, NotifyOutcome, SubscribeInfo,
};
use xmpp_sip_gateway::core::sip::{Peer, Request, Response, Transport};
use xmpp_sip_gateway::core::time::{ManualClock, Timestamp};

pub const PIDF: &str = "application/pidf+xml";
pub const PRESENTITY: &str = "sip:anna@xmpp.example";
pub const WATCHER: &str = "sip:ben@sip.example";
pub const WATCHER_CONTACT: &str = "sip:ben@192.0.2.7:5062";

pub fn pidf(note: &str) -> Body {
    Body::new(
        PIDF,
        format!("<presence entity='{PRESENTITY}'><note>{note}</note></presence>"),
    )
}

/// A policy serving `presence` (PIDF) and `presence.winfo`, deciding every new
/// subscription with `decision`.
pub struct TestPolicy {
    pub decision: Decision,
    /// Returned by `final_body` when set; otherwise the default (cached state).
    pub closed: Option<Body>,
    pub seen: RefCell<Vec<(String, bool, Option<String>)>>,
}

impl TestPolicy {
    pub fn pending() -> Self {
        Self::with(Authorization::Pending, None)
    }

    pub fn active(body: Option<Body>) -> Self {
        Self::with(Authorization::Active, body)
    }

    pub fn with(authorization: Authorization, body: Option<Body>) -> Self {
        TestPolicy {
            decision: Decision {
                authorization,
                body,
                resource: None,
            },
            closed: None,
            seen: RefCell::new(Vec::new()),
        }
    }
}

impl NotifierPolicy for TestPolicy {
    fn owner(&self) -> &str {
        "test"
    }

    fn packages(&self) -> Vec<String> {
        vec!["presence".into(), "presence.winfo".into()]
    }

    fn body_types(&self, package: &str) -> Vec<String> {
        match package {
            "presence" => vec![PIDF.into()],
            "presence.winfo" => vec!["application/watcherinfo+xml".into()],
            _ => vec![],
        }
    }

    /// RFC 3857: watcherinfo at most once per 5 s, whatever the configured default.
    fn min_notify_interval(&self, package: &str) -> Option<Duration> {
        (package == "presence.winfo").then_some(Duration::from_secs(5))
    }

    fn authorize(&self, info: &SubscribeInfo<'_>) -> Decision {
        self.seen.borrow_mut().push((
            info.presentity.to_string(),
            info.is_poll,
            info.content_type.map(str::to_string),
        ));
        self.decision.clone()
    }

    fn final_body(&self, _dialog: &NotifierDialogView, cached: Option<&Body>) -> Option<Body> {
        self.closed.clone().or_else(|| cached.cloned())
    }
}

/// A SUBSCRIBE under construction.
#[derive(Clone)]
pub struct Sub {
    pub req: Request,
}

impl Sub {
    /// An initial `SUBSCRIBE sip:anna@xmpp.example` from ben, Event: presence, no Expires.
    pub fn initial() -> Self {
        let mut req = Request::new(xmpp_sip_gateway::core::sip::Method::Subscribe, PRESENTITY);
        req.headers
            .push("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKsub1");
        req.headers.push("Max-Forwards", "70");
        req.headers.push("From", format!("<{WATCHER}>;tag=ben1"));
        req.headers.push("To", format!("<{PRESENTITY}>"));
        req.headers.push("Call-ID", "call-1@192.0.2.7");
        req.headers.push("CSeq", "1 SUBSCRIBE");
        req.headers.push("Contact", format!("<{WATCHER_CONTACT}>"));
        req.headers.push("Event", "presence");
        Sub { req }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.req.headers.set(name, value);
        self
    }

    pub fn push(mut self, name: &str, value: &str) -> Self {
        self.req.headers.push(name, value);
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.req.headers.remove(name);
        self
    }

    pub fn expires(self, secs: u32) -> Self {
        self.header("Expires", &secs.to_string())
    }

    /// Turns this into an in-dialog request of the dialog `to_tag`, CSeq `cseq`.
    pub fn in_dialog(self, to_tag: &str, cseq: u32) -> Self {
        self.header("To", &format!("<{PRESENTITY}>;tag={to_tag}"))
            .header("CSeq", &format!("{cseq} SUBSCRIBE"))
            .header(
                "Via",
                &format!("SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKsub{cseq}"),
            )
    }
}

pub struct Harness {
    pub notifier: Notifier,
    pub ids: IdGenerator,
    pub clock: ManualClock,
    pub peer: Peer,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(config: NotifierConfig) -> Self {
        Harness {
            notifier: Notifier::new(config),
            ids: IdGenerator::seeded(42),
            clock: ManualClock::starting_at(Timestamp::from_secs(1_700_000_000)),
            peer: Peer {
                transport: Transport::Udp,
                addr: "192.0.2.7:5062".parse().unwrap(),
            },
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn subscribe(&mut self, sub: &Sub, policy: &TestPolicy) -> Vec<NotifierAction> {
        let now = self.clock.now();
        self.notifier
            .on_subscribe(now, &mut self.ids, self.peer, &sub.req, policy)
    }

    /// Subscribes, answers the first NOTIFY 200, and returns the dialog id and our tag.
    pub fn established(&mut self, sub: &Sub, policy: &TestPolicy) -> (NotifierDialogId, String) {
        let actions = self.subscribe(sub, policy);
        let resp = response(&actions);
        assert_eq!(resp.status, 200, "setup SUBSCRIBE failed: {resp:?}");
        let (id, _) = only_notify(&actions);
        self.answer(id, 200);
        (id, to_tag(resp))
    }

    pub fn answer(&mut self, id: NotifierDialogId, code: u16) -> Vec<NotifierAction> {
        let now = self.clock.now();
        self.notifier
            .on_notify_outcome(now, id, NotifyOutcome::Response(code))
    }

    pub fn tick(&mut self, policy: &TestPolicy) -> Vec<NotifierAction> {
        let now = self.clock.now();
        self.notifier.handle_timeout(now, policy)
    }
}

pub fn config() -> NotifierConfig {
    NotifierConfig {
        min_expires: 60,
        max_expires: 7200,
        default_expires: 3600,
        contact_uri: "sip:gw@198.51.100.1:5060".into(),
        min_notify_interval: Duration::ZERO,
        max_dialogs_per_watcher: 3,
        user_agent: "test-gw".into(),
    }
}

/// The single response among the actions.
pub fn response(actions: &[NotifierAction]) -> &Response {
    let all: Vec<&Response> = actions
        .iter()
        .filter_map(|a| match a {
            NotifierAction::Respond(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        all.len(),
        1,
        "expected exactly one response in {actions:#?}"
    );
    all[0]
}

pub fn notifies(actions: &[NotifierAction]) -> Vec<(NotifierDialogId, &Request)> {
    actions
        .iter()
        .filter_map(|a| match a {
            NotifierAction::SendNotify {
                dialog, request, ..
            } => Some((*dialog, request)),
            _ => None,
        })
        .collect()
}

pub fn only_notify(actions: &[NotifierAction]) -> (NotifierDialogId, &Request) {
    let all = notifies(actions);
    assert_eq!(all.len(), 1, "expected exactly one NOTIFY in {actions:#?}");
    all[0]
}

pub fn events(actions: &[NotifierAction]) -> Vec<&NotifierEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            NotifierAction::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub fn stores(actions: &[NotifierAction]) -> Vec<&StoreOp> {
    actions
        .iter()
        .filter_map(|a| match a {
            NotifierAction::Store(op) => Some(op),
            _ => None,
        })
        .collect()
}

pub fn sub_state(notify: &Request) -> SubState {
    SubState::parse(
        notify
            .headers
            .get("Subscription-State")
            .expect("Subscription-State"),
    )
    .expect("valid Subscription-State")
}

pub fn cseq_of(notify: &Request) -> u32 {
    notify
        .headers
        .get("CSeq")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("CSeq")
}

pub fn to_tag(resp: &Response) -> String {
    NameAddr::parse("To", resp.headers.get("To").expect("To"))
        .expect("To parses")
        .tag()
        .expect("To-tag")
        .to_string()
}

pub fn body_text(req: &Request) -> String {
    String::from_utf8(req.body.clone()).expect("utf-8 body")
}
