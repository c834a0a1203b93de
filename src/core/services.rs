//! The shared services a module and the PUA act through (architecture.md, "Shared
//! services reach modules through the context object"): transactions, timers, ids, the
//! notifier, the local site, store writes and the ordered output queue. The engine owns
//! one [`Services`] and hands it out by `&mut` for one hook at a time; nothing here knows
//! a module (only their names, `ModuleId`) or the engine.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::admin_api::AdminReply;
pub use super::handles::AdminRequestId;
use super::handles::{PuaTimer, PublicationId, SubscriptionId};
use super::ids::IdGenerator;
use super::local_site::{LocalSite, LocalSiteConfig};
use super::module_id::ModuleId;
use super::persist::{StoreOp, StoreTable};
use super::registrar::BindingChange;
use super::routing::RoutingTable;
use super::sip::digest;
use super::sip::headers::{CSeq, NameAddr};
use super::sip::message::{Request, Response, Transport};
use super::sip::notifier::{
    Notifier, NotifierAction, NotifierConfig, NotifierDialogId, NotifierEvent,
};
use super::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer, TxConfig};
use super::sip::{Peer, SipMessage};
use super::time::Timestamp;
use super::timers::TimerTable;
use super::xmpp::stanza::Stanza;

#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // outputs move once, by value, to their driver
pub enum Output {
    SendSip {
        to: Peer,
        message: SipMessage,
    },
    /// Perform before any later output.
    Store(StoreOp),
    AdminReply {
        id: AdminRequestId,
        reply: AdminReply,
    },
    /// A stanza for the XMPP server; its `from` is in a component domain.
    SendStanza(Stanza),
}

/// A credential for answering 401/407 challenges to our requests (RFC 3261 §22.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Match only challenges of this realm; `None` answers any realm.
    pub realm: Option<String>,
    pub username: String,
    pub password: String,
}

/// The engine's validated settings, built by `config` from `gateway.toml`.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub tx: TxConfig,
    /// Host (and port) used in our Contact and Call-IDs, e.g. `127.0.0.1:5060`.
    pub local_host: String,
    /// Our Contact URI for dialogs we create, e.g. `sip:gateway@127.0.0.1:5060`.
    pub contact_uri: String,
    /// Where out-of-dialog requests go (the SIP presence server / outbound proxy). When
    /// absent, the Request-URI's numeric host and port are used.
    pub outbound_proxy: Option<Peer>,
    /// Networks whose requests are served; others get 403.
    pub trusted: Vec<ipnet::IpNet>,
    pub credentials: Vec<Credential>,
    /// Largest SIP message accepted (bytes); larger ones get 513 (RFC 3261 §21.5.14).
    pub max_message_size: usize,
    /// Expires we request on SUBSCRIBE and PUBLISH when the caller leaves it open.
    pub default_expires: u32,
    /// Notifier side: shortest Expires accepted (423 below it) and longest granted.
    pub min_expires: u32,
    pub max_expires: u32,
    /// Refresh window as fractions of the granted interval (product.md: 0.8–0.9).
    pub refresh_window: (f64, f64),
    /// Cap of the exponential back-off after failures (product.md: 10 minutes).
    pub max_backoff: Duration,
    pub user_agent: String,
    /// Notifier side: least time between two state-update NOTIFYs of one dialog; zero
    /// turns the throttle off (product.md: default 0).
    pub min_notify_interval: Duration,
    /// After a restart, records due at once are sent this far apart (product.md: restart
    /// must not storm; 20 ms = 50 requests per second).
    pub restore_pace: Duration,
    /// The locally served SIP site (presence agent, registrar, authentication); no
    /// domains: none.
    pub site: LocalSiteConfig,
    /// New (out-of-dialog) REGISTER, PUBLISH, SUBSCRIBE and MESSAGE requests accepted per
    /// source address per second; more get 503 with Retry-After. 0: no limit.
    pub max_requests_per_source: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tx: TxConfig::default(),
            local_host: "127.0.0.1:5060".into(),
            contact_uri: "sip:gateway@127.0.0.1:5060".into(),
            outbound_proxy: None,
            trusted: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            credentials: Vec::new(),
            max_message_size: 64 * 1024,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            refresh_window: (0.8, 0.9),
            max_backoff: Duration::from_secs(600),
            user_agent: concat!("xmpp-sip-gateway/", env!("CARGO_PKG_VERSION")).into(),
            min_notify_interval: Duration::ZERO,
            restore_pace: Duration::from_millis(20),
            site: LocalSiteConfig::default(),
            max_requests_per_source: 0,
        }
    }
}

/// Who a client transaction belongs to: its final response goes back there.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxOwner {
    Publication(PublicationId),
    Subscription(SubscriptionId),
    /// A NOTIFY sent by the notifier side (key chosen by it).
    Notifier(u64),
    /// A request a module sent itself (token of its choice); the final response goes to
    /// its `on_response` hook.
    Module(ModuleId, u64),
}

/// Every timer of the core, keyed by its owner (one timer per key).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    Pua(PuaTimer),
    /// A notifier-side timer (key chosen by it).
    Notifier(u64),
    /// A module's own timer, identified by a token of its choice.
    Module(ModuleId, u64),
}

/// Why an outgoing request could not be sent at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No outbound proxy, and the target URI has no numeric host (no DNS in the core).
    #[error("no route to {0}")]
    Unroutable(String),
}

/// A request in flight, kept to answer a digest challenge with a copy of it.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) owner: TxOwner,
    pub(crate) peer: Peer,
    /// The request as built by its owner (before the transaction layer's Via).
    pub(crate) request: Request,
    /// How many times it was re-sent with credentials.
    pub(crate) auth_rounds: u8,
}

/// The shared services a module and the PUA act through: transactions, timers, ids,
/// outputs. Owned by the engine; handed out by `&mut` for the duration of one hook.
#[derive(Debug)]
pub struct Services {
    pub config: EngineConfig,
    pub ids: IdGenerator,
    pub tx: TransactionLayer,
    pub timers: TimerTable<TimerKey>,
    pub(crate) out: VecDeque<Output>,
    pub(crate) outgoing: HashMap<ClientTxId, Outgoing>,
    /// The notifier side: dialogs of SIP watchers (RFC 6665 §4.2).
    pub notifier: Notifier,
    /// Notifier events waiting for their module.
    pub(crate) notifier_events: VecDeque<(ModuleId, NotifierEvent)>,
    /// Which module serves which request (method, event with parameters, domain).
    pub routing: RoutingTable,
    /// The locally served SIP site: presence state, rules, location, authentication.
    pub site: LocalSite,
    /// Changes of local presence state made through the PUA (presentity, event, whether
    /// the composed document changed), for the module serving that state's watchers.
    pub site_changes: VecDeque<(String, String, bool)>,
    /// Binding changes of every registration source, for the modules that follow
    /// registrations (usrloc, bla), in the order they happened.
    pub binding_changes: VecDeque<BindingChange>,
}

impl Services {
    pub(crate) fn new(config: EngineConfig, seed: u64, routing: RoutingTable) -> Self {
        let notifier = Notifier::new(NotifierConfig {
            min_expires: config.min_expires,
            max_expires: config.max_expires,
            default_expires: config.default_expires,
            contact_uri: config.contact_uri.clone(),
            min_notify_interval: config.min_notify_interval,
            user_agent: config.user_agent.clone(),
            ..NotifierConfig::default()
        });
        let site = LocalSite::new(&config.site);
        Services {
            tx: TransactionLayer::new(config.tx.clone()),
            config,
            ids: IdGenerator::seeded(seed),
            timers: TimerTable::new(),
            out: VecDeque::new(),
            outgoing: HashMap::new(),
            notifier,
            notifier_events: VecDeque::new(),
            routing,
            site,
            site_changes: VecDeque::new(),
            binding_changes: VecDeque::new(),
        }
    }

    /// Performs the notifier's actions in order (see `sip::notifier`): store writes, the
    /// response on `stx`, NOTIFY client transactions, events for the owning module.
    /// `polled_by` is the module a poll answered here belongs to (the routed one).
    pub fn perform_notifier_actions(
        &mut self,
        now: Timestamp,
        actions: Vec<NotifierAction>,
        stx: Option<ServerTxId>,
    ) {
        self.perform_notifier_actions_for(now, actions, stx, None)
    }

    /// [`Self::perform_notifier_actions`] for a SUBSCRIBE routed to `polled_by`.
    pub fn perform_notifier_actions_for(
        &mut self,
        now: Timestamp,
        actions: Vec<NotifierAction>,
        stx: Option<ServerTxId>,
        polled_by: Option<ModuleId>,
    ) {
        for action in actions {
            match action {
                NotifierAction::Store(op) => self.store(op),
                NotifierAction::Respond(resp) => match stx {
                    Some(stx) => {
                        self.tx.respond(now, stx, resp);
                        self.flush_tx();
                    }
                    None => tracing::warn!(
                        status = resp.status,
                        "notifier response without a transaction"
                    ),
                },
                NotifierAction::SendNotify {
                    dialog,
                    to_uri,
                    subscriber,
                    request,
                } => {
                    // The next hop's numeric address, else back where the SUBSCRIBE came from
                    // (no DNS in the core).
                    let peer = uri_peer(&to_uri).unwrap_or(subscriber);
                    let tx = self
                        .tx
                        .send_request(now, &mut self.ids, peer, request.clone());
                    self.outgoing.insert(
                        tx,
                        Outgoing {
                            owner: TxOwner::Notifier(dialog.0),
                            peer,
                            request,
                            auth_rounds: 0,
                        },
                    );
                    self.flush_tx();
                }
                NotifierAction::Event(ev) => {
                    let owner = match &ev {
                        NotifierEvent::Created { view, .. } | NotifierEvent::Ended { view, .. } => {
                            ModuleId::parse(&view.owner)
                        }
                        NotifierEvent::Refreshed { dialog, .. } => self
                            .notifier
                            .view(now, *dialog)
                            .and_then(|v| ModuleId::parse(&v.owner)),
                        NotifierEvent::Polled { .. } => polled_by,
                    };
                    match owner {
                        Some(o) => self.notifier_events.push_back((o, ev)),
                        None => tracing::warn!(?ev, "notifier event without an owning module"),
                    }
                }
            }
        }
    }

    /// Moves what the transaction layer queued to the output queue, keeping the order of
    /// outputs equal to the order of decisions (a store write before the message that
    /// acknowledges it).
    pub(crate) fn flush_tx(&mut self) {
        while let Some((to, message)) = self.tx.poll_transmit() {
            self.out.push_back(Output::SendSip { to, message });
        }
    }

    /// Queues a `Put` of `record` (serialised to JSON) under `key`; a record that does not
    /// serialise is logged and not written (the previous row stays).
    pub fn put_record(
        &mut self,
        table: StoreTable,
        key: String,
        owner: &str,
        subject: &str,
        expires_at: Option<Timestamp>,
        record: &impl serde::Serialize,
    ) {
        match serde_json::to_value(record) {
            Ok(data) => self.store(StoreOp::Put {
                table,
                key,
                owner: owner.to_string(),
                subject: subject.to_string(),
                expires_at,
                data,
            }),
            Err(e) => {
                tracing::error!(table = table.name(), %key, error = %e, "record not serialisable")
            }
        }
    }

    /// Queues a store write; it is performed before any later output.
    pub fn store(&mut self, op: StoreOp) {
        self.flush_tx();
        self.out.push_back(Output::Store(op));
    }

    pub fn admin_reply(&mut self, id: AdminRequestId, reply: AdminReply) {
        self.flush_tx();
        self.out.push_back(Output::AdminReply { id, reply });
    }

    /// Queues a stanza for the component link, in order with the SIP outputs.
    pub fn send_stanza(&mut self, stanza: Stanza) {
        self.flush_tx();
        self.out.push_back(Output::SendStanza(stanza));
    }

    pub fn set_timer(&mut self, key: TimerKey, at: Timestamp) {
        self.timers.set(key, at);
    }

    pub fn cancel_timer(&mut self, key: TimerKey) {
        self.timers.cancel(&key);
    }

    /// The next hop of a request: the first Route of `route_set` (loose routing, RFC 3261
    /// §12.2.1.1), else the outbound proxy, else the numeric host of `target`.
    pub fn next_hop(&self, route_set: &[String], target: &str) -> Result<Peer, SendError> {
        if let Some(first) = route_set.first() {
            let uri = NameAddr::parse("Route", first)
                .map(|n| n.uri)
                .unwrap_or_else(|_| first.clone());
            return uri_peer(&uri).ok_or(SendError::Unroutable(uri));
        }
        if let Some(proxy) = self.config.outbound_proxy {
            return Ok(proxy);
        }
        uri_peer(target).ok_or_else(|| SendError::Unroutable(target.to_string()))
    }

    /// Starts a client transaction for `request` (built by its owner, without Via) towards
    /// the hop chosen by [`Self::next_hop`].
    pub fn send_request(
        &mut self,
        now: Timestamp,
        owner: TxOwner,
        route_set: &[String],
        request: Request,
    ) -> Result<ClientTxId, SendError> {
        self.send_request_via(now, owner, route_set, None, request)
    }

    /// [`Self::send_request`], with `hop` (a URI) as the first hop instead of the outbound
    /// proxy and the Request-URI when `route_set` is empty.
    pub fn send_request_via(
        &mut self,
        now: Timestamp,
        owner: TxOwner,
        route_set: &[String],
        hop: Option<&str>,
        request: Request,
    ) -> Result<ClientTxId, SendError> {
        let chosen = match hop.filter(|_| route_set.is_empty()) {
            Some(h) => uri_peer(h).ok_or_else(|| SendError::Unroutable(h.to_string())),
            None => self.next_hop(route_set, &request.uri),
        };
        let peer = match chosen {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(method = %request.method, uri = %request.uri, error = %e, "request not sent");
                return Err(e);
            }
        };
        let tx = self
            .tx
            .send_request(now, &mut self.ids, peer, request.clone());
        self.outgoing.insert(
            tx,
            Outgoing {
                owner,
                peer,
                request,
                auth_rounds: 0,
            },
        );
        self.flush_tx();
        Ok(tx)
    }

    /// Answers request `req` on server transaction `stx` with `status`, letting `edit` add
    /// headers or a body. A To-tag is added when the request had none (RFC 3261 §8.2.6.2).
    pub fn reply(
        &mut self,
        now: Timestamp,
        stx: ServerTxId,
        req: &Request,
        status: u16,
        reason: &str,
        edit: impl FnOnce(&mut Response),
    ) {
        let mut resp = build_response(req, status, reason, &mut self.ids);
        edit(&mut resp);
        self.tx.respond(now, stx, resp);
        self.flush_tx();
    }

    /// Answers a 401/407 by re-sending the request once with credentials (new CSeq, same
    /// Call-ID and tags). A further challenge is answered only when it says `stale=true`
    /// (RFC 7616 §3.4); then the challenge is the final answer.
    pub(crate) fn retry_with_credentials(
        &mut self,
        now: Timestamp,
        out: &Outgoing,
        resp: &Response,
    ) -> Option<(ClientTxId, u32)> {
        const MAX_ROUNDS: u8 = 3;
        let (challenge_header, auth_header) = match resp.status {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return None,
        };
        if out.auth_rounds >= MAX_ROUNDS {
            return None;
        }
        for value in resp.headers.get_all(challenge_header) {
            let ch = match digest::DigestChallenge::parse(value) {
                Ok(ch) => ch,
                Err(e) => {
                    tracing::warn!(status = resp.status, error = %e, "unusable digest challenge");
                    continue;
                }
            };
            if out.auth_rounds > 0 && !ch.stale {
                tracing::warn!(status = resp.status, realm = %ch.realm, "credentials refused");
                return None;
            }
            let Some(cred) = self
                .config
                .credentials
                .iter()
                .find(|c| c.realm.as_deref().is_none_or(|r| r == ch.realm))
                .cloned()
            else {
                tracing::warn!(realm = %ch.realm, "challenged for a realm we have no credentials for");
                return None;
            };
            let mut req = out.request.clone();
            let next_in_request = req
                .headers
                .get("CSeq")
                .and_then(|v| CSeq::parse(v).ok())
                .map(|c| c.seq.saturating_add(1))
                .unwrap_or(1);
            // A NOTIFY's CSeq belongs to its notifier dialog, which hands out the next one.
            let cseq = match out.owner {
                TxOwner::Notifier(d) => match self.notifier.take_resend_cseq(NotifierDialogId(d)) {
                    Some((cseq, store)) => {
                        if let Some(op) = store {
                            self.store(op);
                        }
                        cseq
                    }
                    None => next_in_request,
                },
                TxOwner::Publication(_) | TxOwner::Subscription(_) | TxOwner::Module(..) => {
                    next_in_request
                }
            };
            req.headers.set("CSeq", format!("{} {}", cseq, req.method));
            let cnonce = self.ids.token(16);
            let auth = digest::authorization(
                &ch,
                req.method.as_str(),
                &req.uri,
                &cred.username,
                &cred.password,
                &cnonce,
                1,
            );
            req.headers.set(auth_header, auth);
            let tx = self
                .tx
                .send_request(now, &mut self.ids, out.peer, req.clone());
            self.outgoing.insert(
                tx,
                Outgoing {
                    owner: out.owner,
                    peer: out.peer,
                    request: req,
                    auth_rounds: out.auth_rounds + 1,
                },
            );
            self.flush_tx();
            return Some((tx, cseq));
        }
        None
    }
}

/// A response to `req` copying Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2).
pub fn build_response(req: &Request, status: u16, reason: &str, ids: &mut IdGenerator) -> Response {
    let mut resp = Response::new(status, reason);
    for via in req.headers.get_all("Via") {
        resp.headers.push("Via", via);
    }
    if let Some(v) = req.headers.get("From") {
        resp.headers.push("From", v);
    }
    if let Some(v) = req.headers.get("To") {
        let has_tag = NameAddr::parse("To", v)
            .map(|n| n.tag().is_some())
            .unwrap_or(true);
        if has_tag || status == 100 {
            resp.headers.push("To", v);
        } else {
            resp.headers
                .push("To", format!("{};tag={}", v.trim(), ids.tag()));
        }
    }
    for name in ["Call-ID", "CSeq"] {
        if let Some(v) = req.headers.get(name) {
            resp.headers.push(name, v);
        }
    }
    resp
}

/// The numeric host, port and transport of a SIP URI (RFC 3263 §4.1–4.2 for numeric
/// hosts: UDP unless `transport=tcp`; default port 5060). `None` for names (no DNS here).
pub fn uri_peer(uri: &str) -> Option<Peer> {
    let uri = uri.trim().trim_start_matches('<');
    let uri = uri.split('>').next().unwrap_or(uri);
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (hostpart, params) = match rest.find([';', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let hostport = hostpart.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6.find(']')?;
        let port = v6[end + 1..].strip_prefix(':');
        (&v6[..end], port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let ip: IpAddr = host.parse().ok()?;
    let port: u16 = match port {
        Some(p) => p.parse().ok()?,
        None => 5060,
    };
    let tcp = params
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case("transport=tcp"));
    Some(Peer {
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        addr: SocketAddr::new(ip, port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_peer_uses_numeric_host_default_port_and_udp() {
        let p = uri_peer("sip:ben@192.0.2.1").unwrap();
        assert_eq!(
            (p.transport, p.addr),
            (Transport::Udp, "192.0.2.1:5060".parse().unwrap())
        );
    }

    #[test]
    fn uri_peer_honours_port_and_transport_tcp() {
        let p = uri_peer("<sip:192.0.2.1:5080;transport=TCP;lr>").unwrap();
        assert_eq!(
            (p.transport, p.addr),
            (Transport::Tcp, "192.0.2.1:5080".parse().unwrap())
        );
    }

    #[test]
    fn uri_peer_reads_ipv6_references() {
        let p = uri_peer("sip:ben@[2001:db8::1]:5070").unwrap();
        assert_eq!(p.addr, "[2001:db8::1]:5070".parse().unwrap());
    }

    #[test]
    fn uri_peer_refuses_names_without_dns() {
        assert_eq!(uri_peer("sip:ben@sip.example"), None);
        assert_eq!(uri_peer("mailto:ben@192.0.2.1"), None);
    }
}
