//! In-memory harness for engine scenarios: one `Engine` on a manual clock, a scripted SIP
//! peer (the presence server / proxy at 127.0.0.1:5070 over TCP, so requests are sent once
//! and never retransmitted), and a log of every PUA event the admin module receives.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use xmpp_sip_gateway::core::engine::{
    AdminRequestId, Credential, Engine, EngineConfig, Input, Output,
};
use xmpp_sip_gateway::core::modules::admin::{
    AdminCommand, AdminModule, AdminReply, PublishCommand, SubscribeCommand,
};
use xmpp_sip_gateway::core::modules::{Module, ModuleCtx, ModuleId};
use xmpp_sip_gateway::core::persist::{StoreOp, StoredRow};
use xmpp_sip_gateway::core::pua::PuaEvent;
use xmpp_sip_gateway::core::sip::headers::NameAddr;
use xmpp_sip_gateway::core::sip::{Method, Peer, Request, Response, SipMessage, Transport};
use xmpp_sip_gateway::core::time::{ManualClock, Timestamp};

pub const PIDF_OPEN: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
<tuple id='t1'><status><basic>open</basic></status></tuple></presence>";

pub const PIDF_CLOSED: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
<tuple id='t1'><status><basic>closed</basic></status></tuple></presence>";

/// The scripted server (presence server / outbound proxy).
pub fn server() -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

/// A peer outside the trusted networks.
pub fn stranger() -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: "192.0.2.9:5060".parse().unwrap(),
    }
}

pub fn test_config() -> EngineConfig {
    EngineConfig {
        outbound_proxy: Some(server()),
        credentials: vec![Credential {
            realm: None,
            username: "gw".into(),
            password: "secret".into(),
        }],
        ..EngineConfig::default()
    }
}

/// The admin module, recording every PUA event it gets.
pub struct Recorder {
    inner: AdminModule,
    log: Arc<Mutex<Vec<PuaEvent>>>,
}

impl Module for Recorder {
    fn id(&self) -> ModuleId {
        ModuleId::Admin
    }
    fn on_pua_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &PuaEvent) {
        self.log.lock().unwrap().push(event.clone());
        self.inner.on_pua_event(ctx, event)
    }
    fn on_admin(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        id: AdminRequestId,
        command: &AdminCommand,
    ) -> bool {
        self.inner.on_admin(ctx, id, command)
    }
}

pub struct Harness {
    pub engine: Engine,
    pub clock: ManualClock,
    pub events: Arc<Mutex<Vec<PuaEvent>>>,
    next_admin: u64,
    next_branch: u64,
    /// Every output so far, in order.
    pub all: Vec<Output>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(test_config())
    }

    pub fn with_config(config: EngineConfig) -> Self {
        Self::with_modules(config, Vec::new())
    }

    /// The recording admin module plus `extra` modules.
    pub fn with_modules(config: EngineConfig, extra: Vec<Box<dyn Module>>) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let rec = Recorder {
            inner: AdminModule::new(),
            log: events.clone(),
        };
        let mut modules: Vec<Box<dyn Module>> = vec![Box::new(rec)];
        modules.extend(extra);
        Harness {
            engine: Engine::with_modules(config, 42, modules),
            clock: ManualClock::starting_at(Timestamp::from_secs(1_700_000_000)),
            events,
            next_admin: 0,
            next_branch: 0,
            all: Vec::new(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Feeds one input at the current time and drains the outputs.
    pub fn input(&mut self, input: Input) -> Vec<Output> {
        self.engine.handle_input(self.clock.now(), input);
        let mut outs = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            outs.push(o);
        }
        self.all.extend(outs.iter().cloned());
        outs
    }

    /// Moves the clock forward by `by`, ticking at every deadline on the way.
    pub fn advance(&mut self, by: Duration) -> Vec<Output> {
        let target = self.clock.now() + by;
        let mut outs = Vec::new();
        while let Some(next) = self.engine.poll_timeout() {
            if next > target {
                break;
            }
            if next > self.clock.now() {
                self.clock.set(next);
            }
            outs.extend(self.input(Input::Tick));
        }
        self.clock.set(target);
        outs.extend(self.input(Input::Tick));
        outs
    }

    /// Advances second by second until a request of `method` goes out (at most
    /// `max_secs`); returns it and the seconds waited. Panics if none does.
    pub fn next_request(&mut self, method: Method, max_secs: u64) -> (Request, u64) {
        for waited in 1..=max_secs {
            let outs = self.advance(Duration::from_secs(1));
            let mut v = requests(&outs, method.clone());
            if !v.is_empty() {
                assert_eq!(v.len(), 1, "several {method} at once: {outs:#?}");
                return (v.remove(0), waited);
            }
        }
        panic!("no {method} within {max_secs} s");
    }

    pub fn take_events(&self) -> Vec<PuaEvent> {
        self.events.lock().unwrap().drain(..).collect()
    }

    pub fn admin(&mut self, command: AdminCommand) -> (AdminRequestId, Vec<Output>) {
        self.next_admin += 1;
        let id = AdminRequestId(self.next_admin);
        let outs = self.input(Input::Admin { id, command });
        (id, outs)
    }

    /// A request from the scripted server.
    pub fn peer_request(&mut self, req: Request) -> Vec<Output> {
        self.input(Input::Sip {
            from: server(),
            message: SipMessage::Request(req),
        })
    }

    /// A response from the scripted server.
    pub fn respond(&mut self, resp: Response) -> Vec<Output> {
        self.input(Input::Sip {
            from: server(),
            message: SipMessage::Response(resp),
        })
    }

    /// Answers `req` (as we sent it) with `status`, letting `edit` add headers.
    pub fn answer(
        &mut self,
        req: &Request,
        status: u16,
        edit: impl FnOnce(&mut Response),
    ) -> Vec<Output> {
        let mut resp = response_to(req, status, "Whatever");
        edit(&mut resp);
        self.respond(resp)
    }

    pub fn branch(&mut self) -> String {
        self.next_branch += 1;
        format!("z9hG4bKpeer{}", self.next_branch)
    }

    /// A publish command from the operator.
    pub fn publish_cmd(
        presentity: &str,
        expires: i64,
        body: Option<&str>,
        etag: Option<&str>,
    ) -> AdminCommand {
        AdminCommand::Publish(PublishCommand {
            presentity: presentity.into(),
            expires,
            event: "presence".into(),
            content_type: body.map(|_| "application/pidf+xml".into()),
            body: body.map(str::to_string),
            etag: etag.map(str::to_string),
            extra_headers: None,
        })
    }

    pub fn subscribe_cmd(event: &str, expires: i64) -> AdminCommand {
        AdminCommand::Subscribe(SubscribeCommand {
            presentity: "sip:ben@sip.example".into(),
            watcher: "sip:anna@xmpp.example".into(),
            event: event.into(),
            expires,
        })
    }

    /// A NOTIFY from the server in the dialog of our SUBSCRIBE `sub`.
    pub fn notify(
        &mut self,
        sub: &Request,
        notifier_tag: &str,
        cseq: u32,
        state: &str,
        body: Option<&str>,
    ) -> Request {
        let event = sub.headers.get("Event").unwrap_or("presence").to_string();
        self.notify_with_event(sub, notifier_tag, cseq, state, body, &event)
    }

    pub fn notify_with_event(
        &mut self,
        sub: &Request,
        notifier_tag: &str,
        cseq: u32,
        state: &str,
        body: Option<&str>,
        event: &str,
    ) -> Request {
        let to = NameAddr::parse("To", sub.headers.get("To").unwrap()).unwrap();
        let from = sub.headers.get("From").unwrap().to_string();
        let contact = NameAddr::parse("Contact", sub.headers.get("Contact").unwrap()).unwrap();
        let mut n = Request::new(Method::Notify, contact.uri);
        let b = self.branch();
        n.headers
            .push("Via", format!("SIP/2.0/TCP 127.0.0.1:5070;branch={b}"));
        n.headers.push("Max-Forwards", "70");
        n.headers
            .push("From", format!("<{}>;tag={}", to.uri, notifier_tag));
        n.headers.push("To", from);
        n.headers
            .push("Call-ID", sub.headers.get("Call-ID").unwrap());
        n.headers.push("CSeq", format!("{cseq} NOTIFY"));
        n.headers
            .push("Contact", "<sip:notifier@127.0.0.1:5070;transport=tcp>");
        n.headers.push("Event", event);
        n.headers.push("Subscription-State", state);
        if let Some(b) = body {
            n.headers.push("Content-Type", "application/pidf+xml");
            n.body = b.as_bytes().to_vec();
        }
        n
    }

    /// Restores rows as the store would hand them back (from the `Put`s seen so far).
    pub fn rows_from_puts(outs: &[Output]) -> Vec<StoredRow> {
        let mut rows: Vec<StoredRow> = Vec::new();
        for o in outs {
            match o {
                Output::Store(StoreOp::Put {
                    table,
                    key,
                    owner,
                    data,
                    ..
                }) => {
                    rows.retain(|r| !(r.table == *table && r.key == *key));
                    rows.push(StoredRow {
                        table: *table,
                        key: key.clone(),
                        owner: owner.clone(),
                        data: data.clone(),
                    });
                }
                Output::Store(StoreOp::Delete { table, key }) => {
                    rows.retain(|r| !(r.table == *table && r.key == *key))
                }
                _ => {}
            }
        }
        rows
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// A response to `req` as a UAS builds it (RFC 3261 §8.2.6), with a To-tag.
pub fn response_to(req: &Request, status: u16, reason: &str) -> Response {
    let mut r = Response::new(status, reason);
    for v in req.headers.get_all("Via") {
        r.headers.push("Via", v);
    }
    r.headers.push("From", req.headers.get("From").unwrap());
    let to = req.headers.get("To").unwrap();
    if to.contains("tag=") {
        r.headers.push("To", to);
    } else {
        r.headers.push("To", format!("{to};tag=srv1"));
    }
    r.headers
        .push("Call-ID", req.headers.get("Call-ID").unwrap());
    r.headers.push("CSeq", req.headers.get("CSeq").unwrap());
    r
}

/// Requests sent, of `method`.
pub fn requests(outs: &[Output], method: Method) -> Vec<Request> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendSip {
                message: SipMessage::Request(r),
                ..
            } if r.method == method => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The one request of `method` sent; panics with the outputs otherwise.
pub fn one_request(outs: &[Output], method: Method) -> Request {
    let v = requests(outs, method.clone());
    assert_eq!(v.len(), 1, "expected one {method} in {outs:#?}");
    v.into_iter().next().unwrap()
}

/// Responses sent.
pub fn responses(outs: &[Output]) -> Vec<Response> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendSip {
                message: SipMessage::Response(r),
                ..
            } => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn one_response(outs: &[Output]) -> Response {
    let v = responses(outs);
    assert_eq!(v.len(), 1, "expected one response in {outs:#?}");
    v.into_iter().next().unwrap()
}

pub fn admin_replies(outs: &[Output]) -> Vec<(AdminRequestId, AdminReply)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::AdminReply { id, reply } => Some((*id, reply.clone())),
            _ => None,
        })
        .collect()
}

pub fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.get(name)
}

pub fn tag_of(value: &str) -> String {
    NameAddr::parse("From", value)
        .unwrap()
        .tag()
        .unwrap()
        .to_string()
}

pub fn cseq_of(r: &Request) -> u32 {
    r.headers
        .get("CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A response edit adding a digest challenge: `header` is WWW-Authenticate (401) or
/// Proxy-Authenticate (407), `params` what follows `Digest `.
pub fn digest_challenge(header: &'static str, params: &'static str) -> impl Fn(&mut Response) {
    move |r| r.headers.push(header, format!("Digest {params}"))
}

/// The store writes among `outs`, in order.
pub fn store_ops(outs: &[Output]) -> Vec<StoreOp> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Store(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

/// The rows a store holds after performing `ops` in order (what a restart reads back).
pub fn rows_after(ops: &[StoreOp]) -> Vec<StoredRow> {
    let mut rows: std::collections::BTreeMap<(&'static str, String), StoredRow> =
        Default::default();
    for op in ops {
        match op {
            StoreOp::Put {
                table,
                key,
                owner,
                data,
                ..
            } => {
                rows.insert(
                    (table.name(), key.clone()),
                    StoredRow {
                        table: *table,
                        key: key.clone(),
                        owner: owner.clone(),
                        data: data.clone(),
                    },
                );
            }
            StoreOp::Delete { table, key } => {
                rows.remove(&(table.name(), key.clone()));
            }
        }
    }
    rows.into_values().collect()
}
