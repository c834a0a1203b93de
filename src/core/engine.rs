//! The engine: the one object the drivers talk to (architecture.md, Core and drivers).
//!
//! Contract (after str0m): after every `handle_input`, drain `poll_output` until it returns
//! `None`, then sleep until `poll_timeout` (or the next input) and call
//! `handle_input(now, Input::Tick)`. Every input carries the time of receipt.
//!
//! Owner: pua. The Input/Output vocabulary below is fixed so the drivers can be written
//! against it.

use super::admin_api::{AdminCommand, AdminReply};
use super::persist::StoredRow;
use super::sip::{Peer, SipMessage};

pub use super::handles::AdminRequestId;
pub use super::services::{
    build_response, uri_peer, Credential, EngineConfig, Output, SendError, Services, TimerKey,
    TxOwner,
};

#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // inputs move once, by value, into the engine
pub enum Input {
    /// Time has passed; fire due timers.
    Tick,
    /// A parsed SIP message from `from`.
    Sip { from: Peer, message: SipMessage },
    /// Bytes framed as one SIP message that did not parse. The engine answers 400 with a
    /// reason naming the problem when it can salvage enough headers, else drops and logs.
    SipMalformed {
        from: Peer,
        raw: Vec<u8>,
        error: String,
    },
    /// A message larger than the configured limit (answered 513 when salvageable).
    SipOversized { from: Peer, head: Vec<u8> },
    /// Sending to `to` failed at the transport (RFC 3261 §17.1.4: report as timeout).
    SipTransportError { to: Peer },
    /// An operator command from the management API.
    Admin {
        id: AdminRequestId,
        command: AdminCommand,
    },
    /// Rows loaded from the store at start, before any other input.
    Restore(Vec<StoredRow>),
    /// Graceful shutdown requested: persist what must survive, stop timers.
    Shutdown,
    /// A stanza from the XMPP server over the component link, already checked by
    /// `Stanza::from_element` (malformed ones are bounced by the link).
    Stanza(Stanza),
    /// The component link completed its handshake (first time or after a reconnect).
    XmppLinkUp,
    /// The component link went down; stanzas are queued by the link meanwhile.
    XmppLinkDown,
}

// ---------------------------------------------------------------------------------------
// The engine proper.
// ---------------------------------------------------------------------------------------

use std::time::Duration;

use super::flood::{FloodVerdict, SourceLimiter};
use super::local_site::LocalSite;
use super::modules::admin::AdminModule;
use super::modules::{Module, ModuleCtx, ModuleId};
use super::pua::{PuaService, SubscriptionId};
use super::routing::{Routing, RoutingTable};
use super::sip::digest_server::AuthCheck;
use super::sip::headers::{CSeq, NameAddr};
use super::sip::message::{salvage_for_reply, Salvaged};
use super::sip::message::{Method, Request, Response};
use super::sip::notifier::{
    Body as NotifierBody, Decision, NotifierDialogId, NotifierDialogView, NotifierPolicy,
    NotifyOutcome, SubscribeInfo,
};
use super::sip::transaction::{ClientTxId, RequestDisposition, ServerTxId, TxEvent};
use super::time::Timestamp;
use super::xmpp::stanza::{Condition, Stanza};

/// Makes arbitrary text usable as a reason phrase (one line, bounded).
fn reason_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clean.chars().take(120).collect()
}

/// The gateway's core: see the module doc for the drive contract.
///
/// Routing of incoming SIP (architecture.md, Core and drivers; every request gets an
/// explicit answer):
/// - a peer outside `EngineConfig::trusted` → 403; missing From/To/Call-ID/CSeq → 400;
///   an unparseable message → 400 naming the problem, an oversized one → 513 (both
///   stateless, when enough headers can be salvaged; otherwise dropped and logged);
/// - NOTIFY → the PUA's subscriptions (481 when none matches, 489 for another Event,
///   400 for a bad Subscription-State or body);
/// - SUBSCRIBE → the notifier when a module serves the package, else 489 with
///   `Allow-Events`; CANCEL → 200 and nothing else (RFC 6665 §4.1, case 33);
/// - OPTIONS → 200; other known methods → 405, unknown ones → 501, both with `Allow`.
///
/// Outgoing requests go to the first Route, else `outbound_proxy`, else the numeric host
/// of the Request-URI; 401/407 are answered once with the configured credentials (again
/// only on `stale=true`), then the challenge is the final response.
pub struct Engine {
    svc: Services,
    flood: SourceLimiter,
    pua: PuaService,
    modules: Vec<Box<dyn Module>>,
    shutting_down: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("publications", &self.pua.publication_count())
            .field("subscriptions", &self.pua.subscription_count())
            .finish()
    }
}

impl Engine {
    /// An engine with the built-in modules (admin). `seed` seeds every id and jitter.
    pub fn new(config: EngineConfig, seed: u64) -> Self {
        Self::with_modules(config, seed, vec![Box::new(AdminModule::new())])
    }

    /// An engine with the given modules (each `ModuleId` at most once).
    pub fn with_modules(config: EngineConfig, seed: u64, modules: Vec<Box<dyn Module>>) -> Self {
        let (routing, conflicts) =
            RoutingTable::new(modules.iter().map(|m| (m.id(), m.routes())).collect());
        for c in conflicts {
            tracing::warn!(method = %c.method, event = ?c.event, kept = c.kept.as_str(), ignored = c.ignored.as_str(), "two modules route the same requests; the first is kept");
        }
        Engine {
            flood: SourceLimiter::new(config.max_requests_per_source),
            svc: Services::new(config, seed, routing),
            pua: PuaService::new(),
            modules,
            shutting_down: false,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.svc.config
    }

    pub fn pua(&self) -> &PuaService {
        &self.pua
    }

    /// Feeds one input stamped with its time of receipt.
    pub fn handle_input(&mut self, now: Timestamp, input: Input) {
        match input {
            Input::Tick => self.on_tick(now),
            Input::Sip {
                from,
                message: SipMessage::Request(req),
            } => self.on_request(now, from, req),
            Input::Sip {
                from,
                message: SipMessage::Response(resp),
            } => {
                if let Some(ev) = self.svc.tx.on_response(now, from, resp) {
                    self.on_tx_event(now, ev);
                }
            }
            Input::SipMalformed { from, raw, error } => self.on_malformed(from, &raw, &error),
            Input::SipOversized { from, head } => self.on_oversized(from, &head),
            Input::SipTransportError { to } => {
                // RFC 3261 §17.1.4: a transport error is reported to the TU like a timeout.
                let mut failed: Vec<ClientTxId> = self
                    .svc
                    .outgoing
                    .iter()
                    .filter(|(_, o)| o.peer == to)
                    .map(|(tx, _)| *tx)
                    .collect();
                failed.sort();
                for tx in failed {
                    tracing::warn!(peer = %to, "transport error, request failed");
                    self.on_tx_event(now, TxEvent::Timeout { tx });
                }
            }
            Input::Admin { id, command } => self.on_admin(now, id, command),
            Input::Restore(rows) => {
                self.pua.restore(&mut self.svc, now, &rows);
                self.svc.notifier.restore(&rows);
                if let Some(auth) = self.svc.site.auth.as_mut() {
                    let refused = auth.users.restore(&rows);
                    for (key, why) in refused {
                        tracing::warn!(%key, %why, "stored user not restored");
                    }
                }
                let stats = self.notifier_dialogs();
                for m in self.modules.iter_mut() {
                    let mut ctx = ModuleCtx::new(now, m.id(), &mut self.pua, &mut self.svc, stats);
                    m.on_restore(&mut ctx, &rows);
                }
            }
            Input::Shutdown => {
                // Records are written on every change, so nothing is lost by stopping here;
                // notifier dialogs are kept, not terminated (product.md).
                let stats = self.notifier_dialogs();
                for m in self.modules.iter_mut() {
                    let mut ctx = ModuleCtx::new(now, m.id(), &mut self.pua, &mut self.svc, stats);
                    m.on_shutdown(&mut ctx);
                }
                self.shutting_down = true;
            }
            Input::Stanza(stanza) => self.on_stanza(now, stanza),
            Input::XmppLinkUp | Input::XmppLinkDown => {
                let up = matches!(input, Input::XmppLinkUp);
                let stats = self.notifier_dialogs();
                for m in self.modules.iter_mut() {
                    let mut ctx = ModuleCtx::new(now, m.id(), &mut self.pua, &mut self.svc, stats);
                    m.on_xmpp_link(&mut ctx, up);
                }
            }
        }
        self.svc.flush_tx();
        self.dispatch_events(now);
    }

    /// The next output to perform, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.svc.flush_tx();
        self.svc.out.pop_front()
    }

    /// When to call `handle_input(Input::Tick)` next: the earliest of the transaction
    /// layer's timers, PUA and module timers (and the notifier's).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.shutting_down {
            return None;
        }
        [
            self.svc.tx.next_deadline(),
            self.svc.timers.next_deadline(),
            self.svc.notifier.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn notifier_dialogs(&self) -> usize {
        self.svc.notifier.len()
    }

    fn on_tick(&mut self, now: Timestamp) {
        if self.shutting_down {
            return;
        }
        for ev in self.svc.tx.handle_timeout(now) {
            self.on_tx_event(now, ev);
        }
        if self.svc.notifier.next_deadline().is_some_and(|d| d <= now) {
            let policy = PolicyAdapter {
                modules: &self.modules,
                routing: &self.svc.routing,
                site: &self.svc.site,
                owner: None,
            };
            let actions = self.svc.notifier.handle_timeout(now, &policy);
            self.svc.perform_notifier_actions(now, actions, None);
            self.dispatch_events(now);
        }
        while let Some(key) = self.svc.timers.pop_expired(now) {
            match key {
                TimerKey::Pua(t) => self.pua.on_timer(&mut self.svc, now, t),
                TimerKey::Notifier(_) => {}
                TimerKey::Module(mid, token) => {
                    let stats = self.notifier_dialogs();
                    if let Some(m) = self.modules.iter_mut().find(|m| m.id() == mid) {
                        let mut ctx = ModuleCtx::new(now, mid, &mut self.pua, &mut self.svc, stats);
                        m.on_timer(&mut ctx, token);
                    }
                }
            }
            // Events of one timer reach their module before the next timer fires.
            self.dispatch_events(now);
        }
    }

    /// Hands PUA events to their owning modules until none are left (a module may act on
    /// the PUA again from its hook).
    fn dispatch_events(&mut self, now: Timestamp) {
        for _ in 0..64 {
            let events = self.pua.take_events();
            let nevents: Vec<_> = self.svc.notifier_events.drain(..).collect();
            let changes: Vec<_> = self.svc.site_changes.drain(..).collect();
            let bindings: Vec<_> = self.svc.binding_changes.drain(..).collect();
            if events.is_empty() && nevents.is_empty() && changes.is_empty() && bindings.is_empty()
            {
                return;
            }
            let stats = self.notifier_dialogs();
            for change in &bindings {
                for m in self.modules.iter_mut() {
                    let mid = m.id();
                    let mut ctx = ModuleCtx::new(now, mid, &mut self.pua, &mut self.svc, stats);
                    m.on_binding_changed(&mut ctx, change);
                }
            }
            for (presentity, event, changed) in changes {
                for m in self.modules.iter_mut() {
                    let mid = m.id();
                    let mut ctx = ModuleCtx::new(now, mid, &mut self.pua, &mut self.svc, stats);
                    m.on_presence_changed(&mut ctx, &presentity, &event, changed);
                }
            }
            for (owner, ev) in nevents {
                if let Some(m) = self.modules.iter_mut().find(|m| m.id() == owner) {
                    let mut ctx = ModuleCtx::new(now, owner, &mut self.pua, &mut self.svc, stats);
                    m.on_notifier_event(&mut ctx, &ev);
                }
            }
            for (owner, ev) in events {
                match self.modules.iter_mut().find(|m| m.id() == owner) {
                    Some(m) => {
                        let mut ctx =
                            ModuleCtx::new(now, owner, &mut self.pua, &mut self.svc, stats);
                        m.on_pua_event(&mut ctx, &ev);
                    }
                    None => tracing::debug!(
                        owner = owner.as_str(),
                        ?ev,
                        "PUA event for an absent module"
                    ),
                }
            }
        }
        tracing::warn!("module events keep cascading; stopped after 64 rounds");
    }

    /// Offers a stanza to each module in turn; one no module takes is refused with
    /// `service-unavailable` (RFC 6120 §8.3.3.19), except error stanzas, which are never
    /// answered with an error (§8.3.1).
    fn on_stanza(&mut self, now: Timestamp, stanza: Stanza) {
        let stats = self.notifier_dialogs();
        for m in self.modules.iter_mut() {
            let mid = m.id();
            let mut ctx = ModuleCtx::new(now, mid, &mut self.pua, &mut self.svc, stats);
            if m.on_stanza(&mut ctx, &stanza) {
                return;
            }
        }
        tracing::debug!(from = ?stanza.from(), to = ?stanza.to(), "stanza served by no module");
        if let Some(reply) = stanza.error_reply(Condition::ServiceUnavailable, None) {
            self.svc.send_stanza(reply);
        }
    }

    fn on_admin(&mut self, now: Timestamp, id: AdminRequestId, command: AdminCommand) {
        let stats = self.notifier_dialogs();
        for m in self.modules.iter_mut() {
            let mid = m.id();
            let mut ctx = ModuleCtx::new(now, mid, &mut self.pua, &mut self.svc, stats);
            if m.on_admin(&mut ctx, id, &command) {
                return;
            }
        }
        tracing::warn!(?command, "no module serves this admin command");
        self.svc.admin_reply(
            id,
            AdminReply::Error {
                code: 404,
                reason: "no module serves this command (is [presence_agent] configured?)".into(),
            },
        );
    }

    fn on_tx_event(&mut self, now: Timestamp, ev: TxEvent) {
        let (tx, response) = match ev {
            TxEvent::Response { response, .. } if response.is_provisional() => return,
            TxEvent::Response { tx, response } => (tx, Some(response)),
            TxEvent::Timeout { tx } => (tx, None),
        };
        let Some(out) = self.svc.outgoing.remove(&tx) else {
            return;
        };
        if let Some(resp) = &response {
            if matches!(resp.status, 401 | 407) {
                if let Some((new_tx, cseq)) = self.svc.retry_with_credentials(now, &out, resp) {
                    self.pua.on_resent(out.owner, tx, new_tx, cseq);
                    return;
                }
            }
        }
        match out.owner {
            TxOwner::Publication(_) | TxOwner::Subscription(_) => {
                self.pua
                    .on_response(&mut self.svc, now, out.owner, tx, response.as_ref())
            }
            TxOwner::Module(module, token) => {
                let stats = self.notifier_dialogs();
                if let Some(m) = self.modules.iter_mut().find(|m| m.id() == module) {
                    let mut ctx = ModuleCtx::new(now, module, &mut self.pua, &mut self.svc, stats);
                    m.on_response(&mut ctx, token, response.as_ref());
                }
            }
            TxOwner::Notifier(d) => {
                let outcome = match &response {
                    Some(r) => NotifyOutcome::Response(r.status),
                    None => NotifyOutcome::Timeout,
                };
                let actions =
                    self.svc
                        .notifier
                        .on_notify_outcome(now, NotifierDialogId(d), outcome);
                self.svc.perform_notifier_actions(now, actions, None);
            }
        }
    }

    fn is_trusted(&self, from: &Peer) -> bool {
        let ip = from.addr.ip();
        self.svc.config.trusted.iter().any(|net| net.contains(&ip))
    }

    fn on_request(&mut self, now: Timestamp, from: Peer, req: Request) {
        if req.method == Method::Ack {
            // ACK to a non-2xx is absorbed; there is no INVITE usage here.
            return;
        }
        if req.headers.get("Via").is_none() {
            tracing::warn!(peer = %from, method = %req.method, "request without Via dropped");
            return;
        }
        if req.method == Method::Invite && !self.svc.routing.serves_method(&Method::Invite) {
            // No INVITE server transactions here: answer statelessly; a retransmitted
            // INVITE gets the same answer again.
            let mut resp = build_response(&req, 405, "Method Not Allowed", &mut self.svc.ids);
            resp.headers.push("Allow", self.svc.routing.allow());
            self.svc
                .tx
                .respond_stateless(from, req.headers.get("Via"), resp);
            self.svc.flush_tx();
            return;
        }
        let stx = match self.svc.tx.on_request(now, from, &req) {
            RequestDisposition::New(stx) => stx,
            RequestDisposition::Retransmission => return,
        };
        if let Some(problem) = basic_problem(&req) {
            tracing::warn!(peer = %from, method = %req.method, problem = %problem, "bad request");
            self.svc.reply(now, stx, &req, 400, &problem, |_| {});
            return;
        }
        if self.flooded(now, from, stx, &req) {
            return;
        }
        // The hot path of the bridge: a NOTIFY in one of the PUA's dialogs is matched once.
        let pua_dialog = match req.method {
            Method::Notify => self.pua_subscription_of(&req),
            _ => None,
        };
        if !self.is_trusted(&from) && !self.authenticate(now, from, stx, &req, pua_dialog.is_some())
        {
            return;
        }
        match (&req.method, pua_dialog) {
            (Method::Notify, Some(id)) => {
                self.pua.on_notify(&mut self.svc, now, id, stx, &req);
            }
            (Method::Notify, None) if !self.svc.routing.serves_method(&Method::Notify) => {
                tracing::info!(
                    call_id = req.headers.get("Call-ID").unwrap_or(""),
                    "NOTIFY matching no subscription"
                );
                self.svc
                    .reply(now, stx, &req, 481, "Subscription Does Not Exist", |_| {});
            }
            // RFC 6665 §4.1: SUBSCRIBE cannot be cancelled; the CANCEL is answered and the
            // SUBSCRIBE completes normally (standards.md §16 case 33).
            (Method::Cancel, _) => self.svc.reply(now, stx, &req, 200, "OK", |_| {}),
            (Method::Options, _) => {
                let allow = self.svc.routing.allow();
                self.svc.reply(now, stx, &req, 200, "OK", |r| {
                    r.headers.push("Allow", allow);
                })
            }
            _ => match self.svc.routing.route(&req) {
                Routing::Module(module) if req.method == Method::Subscribe => {
                    self.on_subscribe(now, from, stx, &req, module)
                }
                Routing::Module(module) => self.on_module_request(now, from, stx, &req, module),
                Routing::Unrouted(answer) => {
                    tracing::info!(peer = %from, method = %req.method, status = answer.status, "request served by no module");
                    self.svc
                        .reply(now, stx, &req, answer.status, answer.reason, |r| {
                            for (name, value) in answer.headers {
                                r.headers.push(name, value);
                            }
                        });
                }
            },
        }
    }

    /// Digest authentication of a request from an untrusted peer (RFC 3261 §22.4): a
    /// phone of a locally served domain sending REGISTER, PUBLISH or SUBSCRIBE must prove
    /// it is the From user (realm = its domain); a NOTIFY in one of the PUA's dialogs
    /// passes. Everything else from an untrusted peer is refused with 403. Answers the
    /// request (401 with one challenge per algorithm, or 403) and returns `false` when it
    /// may not proceed. Unknown users and wrong passwords get the same answer.
    fn authenticate(
        &mut self,
        now: Timestamp,
        from: Peer,
        stx: ServerTxId,
        req: &Request,
        in_pua_dialog: bool,
    ) -> bool {
        if in_pua_dialog {
            return true;
        }
        if req.method == Method::Register && !registers_itself(req) {
            // RFC 3261 §10.3 step 3: a phone authenticates as its From user, so it may
            // change that AOR's bindings only; third-party registration is for trusted
            // peers (a proxy replicating REGISTERs).
            tracing::warn!(peer = %from, "third-party REGISTER from an untrusted peer refused");
            self.svc.reply(now, stx, req, 403, "Forbidden", |_| {});
            return false;
        }
        let challengeable = matches!(
            req.method,
            Method::Register | Method::Publish | Method::Subscribe | Method::Message
        );
        let from_uri = req
            .headers
            .get("From")
            .and_then(|v| NameAddr::parse("From", v).ok())
            .map(|n| n.uri);
        let identity = from_uri
            .as_deref()
            .and_then(|u| super::sip::uri::SipUri::parse(u).ok())
            .filter(|u| self.svc.site.serves_domain(&u.host))
            .and_then(|u| u.user.map(|user| (user, u.host.to_ascii_lowercase())));
        let (Some(auth), true, Some((user, domain))) =
            (self.svc.site.auth.as_ref(), challengeable, identity)
        else {
            tracing::warn!(peer = %from, method = %req.method, "request from an untrusted peer refused");
            self.svc.reply(now, stx, req, 403, "Forbidden", |_| {});
            return false;
        };
        let realm = auth.realm.clone().unwrap_or(domain);
        let check = auth.server.check_identity(
            now,
            &mut self.svc.ids,
            req,
            "Authorization",
            &realm,
            &auth.users,
            &user,
        );
        match check {
            AuthCheck::Authenticated { .. } => true,
            AuthCheck::Challenge { headers, stale } => {
                tracing::info!(peer = %from, method = %req.method, user = %user, stale, "digest challenge");
                self.svc.reply(now, stx, req, 401, "Unauthorized", |r| {
                    for h in headers {
                        r.headers.push("WWW-Authenticate", h);
                    }
                });
                false
            }
            AuthCheck::Forbidden => {
                tracing::warn!(peer = %from, method = %req.method, user = %user, "authenticated as another user; refused");
                self.svc.reply(now, stx, req, 403, "Forbidden", |_| {});
                false
            }
        }
    }

    /// Flood control of new requests (see `flood`): answers 503 with Retry-After and
    /// returns `true` when `from` is over its per-second limit. In-dialog requests (To
    /// with a tag) are never counted: they belong to state the gateway already holds.
    fn flooded(&mut self, now: Timestamp, from: Peer, stx: ServerTxId, req: &Request) -> bool {
        if !matches!(
            req.method,
            Method::Register | Method::Publish | Method::Subscribe | Method::Message
        ) {
            return false;
        }
        let in_dialog = req
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse("To", v).ok())
            .is_some_and(|n| n.tag().is_some());
        if in_dialog {
            return false;
        }
        match self.flood.check(now, from.addr.ip()) {
            FloodVerdict::Allow => false,
            FloodVerdict::Refuse { retry_after, log } => {
                if log {
                    tracing::warn!(peer = %from, method = %req.method, "request flood from this source: answering 503");
                }
                self.svc
                    .reply(now, stx, req, 503, "Service Unavailable", |r| {
                        r.headers.push("Retry-After", retry_after.to_string());
                    });
                true
            }
        }
    }

    /// The PUA subscription an incoming NOTIFY belongs to (Call-ID and To-tag = our
    /// From-tag, RFC 6665 §4.4.1), if any.
    fn pua_subscription_of(&self, req: &Request) -> Option<SubscriptionId> {
        let call_id = req.headers.get("Call-ID").unwrap_or("");
        let to_tag = req
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse("To", v).ok())
            .and_then(|n| n.tag().map(str::to_string));
        self.pua.owns_notify(call_id, to_tag.as_deref())
    }

    /// Hands a routed request to its module, which owns the server transaction `stx`.
    fn on_module_request(
        &mut self,
        now: Timestamp,
        from: Peer,
        stx: ServerTxId,
        req: &Request,
        module: ModuleId,
    ) {
        let stats = self.notifier_dialogs();
        match self.modules.iter_mut().find(|m| m.id() == module) {
            Some(m) => {
                let mut ctx = ModuleCtx::new(now, module, &mut self.pua, &mut self.svc, stats);
                m.on_request(&mut ctx, stx, from, req);
            }
            None => self
                .svc
                .reply(now, stx, req, 500, "Server Internal Error", |_| {}),
        }
    }

    fn on_subscribe(
        &mut self,
        now: Timestamp,
        from: Peer,
        stx: ServerTxId,
        req: &Request,
        owner: ModuleId,
    ) {
        let policy = PolicyAdapter {
            modules: &self.modules,
            routing: &self.svc.routing,
            site: &self.svc.site,
            owner: Some(owner),
        };
        let actions = self
            .svc
            .notifier
            .on_subscribe(now, &mut self.svc.ids, from, req, &policy);
        self.svc
            .perform_notifier_actions_for(now, actions, Some(stx), Some(owner));
    }

    fn on_malformed(&mut self, from: Peer, raw: &[u8], error: &str) {
        match salvage_for_reply(raw) {
            Some(s) => {
                tracing::warn!(peer = %from, error, "malformed request answered 400");
                let reason = format!("Bad Request ({})", reason_text(error));
                let resp = self.salvaged_response(&s, 400, &reason);
                self.svc.tx.respond_stateless(from, s.top_via(), resp);
            }
            None => tracing::warn!(peer = %from, error, "malformed message dropped"),
        }
    }

    /// A response to a salvaged request, with a To-tag added when it had none.
    fn salvaged_response(&mut self, s: &Salvaged, status: u16, reason: &str) -> Response {
        let mut resp = s.response(status, reason);
        let has_tag = NameAddr::parse("To", &s.to)
            .map(|n| n.tag().is_some())
            .unwrap_or(true);
        if !has_tag {
            resp.headers
                .set("To", format!("{};tag={}", s.to.trim(), self.svc.ids.tag()));
        }
        resp
    }

    fn on_oversized(&mut self, from: Peer, head: &[u8]) {
        match salvage_for_reply(head) {
            Some(s) => {
                tracing::warn!(peer = %from, "oversized request answered 513");
                let resp = self.salvaged_response(&s, 513, "Message Too Large");
                self.svc.tx.respond_stateless(from, s.top_via(), resp);
            }
            None => tracing::warn!(peer = %from, "oversized message dropped"),
        }
    }
}

/// The notifier policy of the engine's modules: each question goes to the module a
/// SUBSCRIBE was routed to, or to the module owning the dialog.
struct PolicyAdapter<'a> {
    modules: &'a [Box<dyn Module>],
    routing: &'a RoutingTable,
    site: &'a LocalSite,
    /// The module new dialogs belong to (the one the SUBSCRIBE was routed to).
    owner: Option<ModuleId>,
}

impl PolicyAdapter<'_> {
    fn serving(&self, _package: &str) -> Option<&dyn Module> {
        let id = self.owner?;
        self.modules
            .iter()
            .find(|m| m.id() == id)
            .map(|m| m.as_ref())
    }
}

impl NotifierPolicy for PolicyAdapter<'_> {
    fn owner(&self) -> &str {
        self.owner.map(ModuleId::as_str).unwrap_or("engine")
    }

    fn packages(&self) -> Vec<String> {
        match self.owner {
            Some(m) => self.routing.packages_of(m, &Method::Subscribe),
            None => self.routing.packages(&Method::Subscribe),
        }
    }

    fn body_types(&self, package: &str) -> Vec<String> {
        self.serving(package)
            .map(|m| m.notifier_body_types(package))
            .unwrap_or_default()
    }

    fn default_expires(&self, package: &str) -> Option<u32> {
        self.serving(package)
            .and_then(|m| m.notifier_default_expires(package))
    }

    fn min_notify_interval(&self, package: &str) -> Option<Duration> {
        self.serving(package)
            .and_then(|m| m.notifier_min_notify_interval(package))
    }

    fn authorize(&self, info: &SubscribeInfo<'_>) -> Decision {
        match self.serving(&info.event.package) {
            Some(m) => m.authorize_local(self.site, info),
            None => Decision::reject(403),
        }
    }

    fn final_body(
        &self,
        dialog: &NotifierDialogView,
        cached: Option<&NotifierBody>,
    ) -> Option<NotifierBody> {
        match ModuleId::parse(&dialog.owner)
            .and_then(|id| self.modules.iter().find(|m| m.id() == id))
        {
            Some(m) => m.final_body(dialog, cached),
            None => cached.cloned(),
        }
    }
}

/// Whether a REGISTER's To (the AOR, RFC 3261 §10.3 step 5) is its From.
fn registers_itself(req: &Request) -> bool {
    let aor_of = |name: &'static str| {
        req.headers
            .get(name)
            .and_then(|v| NameAddr::parse(name, v).ok())
            .and_then(|n| super::routing::aor_of(&n.uri))
    };
    matches!((aor_of("From"), aor_of("To")), (Some(f), Some(t)) if f == t)
}

/// Checks the headers every request needs (RFC 3261 §8.1.1); names the first problem.
fn basic_problem(req: &Request) -> Option<String> {
    for h in ["From", "To", "Call-ID", "CSeq"] {
        if req.headers.get(h).is_none() {
            return Some(format!("Missing {h}"));
        }
    }
    for h in ["From", "To"] {
        if req
            .headers
            .get(h)
            .is_some_and(|v| NameAddr::parse("From", v).is_err())
        {
            return Some(format!("Bad {h}"));
        }
    }
    match req.headers.get("CSeq").map(CSeq::parse) {
        Some(Ok(c)) if c.method == req.method => None,
        Some(Ok(_)) => Some("CSeq Method Mismatch".into()),
        _ => Some("Bad CSeq".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_text_is_one_bounded_line() {
        let r = reason_text(&format!("bad\r\nthing{}", "x".repeat(500)));
        assert!(!r.contains('\r') && !r.contains('\n') && r.chars().count() <= 120);
    }
}
