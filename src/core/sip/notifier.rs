//! Notifier-side subscriptions (RFC 6665 §4.2): the gateway as the notifier of SIP
//! watchers (standards.md §6, §7.3, §8.2).
//!
//! [`Notifier`] is a pure, self-contained set of notifier dialogs. It never touches the
//! transaction layer, the clock or the network: the engine hands it parsed SUBSCRIBE
//! requests, NOTIFY outcomes and the time, and performs the [`NotifierAction`]s it returns,
//! **in order**:
//!
//! - [`NotifierAction::Store`]: written before any later action is performed, so a dialog
//!   is durable before the 200 or NOTIFY that reveals it leaves (product.md, Persistence).
//! - [`NotifierAction::Respond`]: the final response to the SUBSCRIBE being handled; the
//!   engine sends it on that request's server transaction.
//! - [`NotifierAction::SendNotify`]: a complete in-dialog NOTIFY without a Via (the
//!   transaction layer adds it). The engine starts a client transaction towards `to_uri`
//!   and reports its final outcome with [`Notifier::on_notify_outcome`] (Timer F and
//!   transport errors as [`NotifyOutcome::Timeout`]).
//! - [`NotifierAction::Event`]: news for the module that owns the dialog (the policy).
//!
//! Modules push state with [`Notifier::notify`]. After every call the engine re-reads
//! [`Notifier::next_deadline`] and calls [`Notifier::handle_timeout`] when it is due.
//!
//! Invariants kept here:
//! - At most one NOTIFY is outstanding per dialog. Later ones wait, and when the
//!   outstanding one completes only the *latest* state is sent, so CSeq order is state
//!   order and a subscriber never sees an older state after a newer one.
//! - Every NOTIFY carries full state (product.md): the cached body of the dialog, or no
//!   body when nothing is known. Pending NOTIFYs never carry a body (product.md), and the
//!   final NOTIFY of a pending dialog never leaks state (standards.md §7.8).
//! - With `min_notify_interval` > 0, state-only updates are sent at most once per interval
//!   per dialog, coalesced to the latest state (product.md; RFC 3856 §6.9 suggests 5 s).
//!   NOTIFYs that answer a SUBSCRIBE or change Subscription-State are never delayed by
//!   the throttle (RFC 6665 §4.2.1.1: a NOTIFY follows every 2xx at once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::ids::IdGenerator;
use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::time::Timestamp;
use crate::core::timers::TimerTable;

use super::headers::{
    media_type, parse_accept, parse_delta_seconds, CSeq, EventHeader, NameAddr, Params, SubState,
    TerminationReason,
};
use super::message::{response_to, Method, Peer, Request, Response, Transport};

/// Max-Forwards of the NOTIFYs we originate (RFC 3261 §8.1.1.6 recommends 70).
const MAX_FORWARDS: &str = "70";

/// Version of [`DialogRecord`], bumped when its meaning changes.
const RECORD_VERSION: u32 = 1;

/// Write-behind of the NOTIFY CSeq: a state-only NOTIFY writes the dialog record only when
/// its CSeq is a multiple of this, and a restored dialog continues at the stored CSeq plus
/// this. The CSeq sent before a restart is below `stored + CSEQ_STRIDE`, so the CSeq still
/// only increases (RFC 3261 §12.2.1.1) while a presence update costs a store write once in
/// `CSEQ_STRIDE` updates instead of every time (the cached body is written behind too,
/// product.md: it is re-probed after a restart). Phase, expiry and authorization changes
/// are still written at once.
pub const CSEQ_STRIDE: u32 = 64;

/// Settings of the notifier side, validated by `config` from `gateway.toml`.
#[derive(Clone, Debug)]
pub struct NotifierConfig {
    /// Shortest Expires accepted: below it (and below 3600) a SUBSCRIBE gets 423 with
    /// Min-Expires (RFC 6665 §4.2.1.1).
    pub min_expires: u32,
    /// Longest Expires granted; longer requests are shortened (RFC 6665 §4.2.1.1).
    pub max_expires: u32,
    /// Interval granted when a SUBSCRIBE has no Expires and the policy names no package
    /// default (standards.md §6.1: presence, winfo and dialog all default to 3600).
    pub default_expires: u32,
    /// Our Contact in 2xx responses and NOTIFYs (RFC 6665 §4.5.1 would want a GRUU).
    pub contact_uri: String,
    /// Least time between two state-update NOTIFYs of one dialog; zero turns the throttle
    /// off (product.md: default 0).
    pub min_notify_interval: Duration,
    /// Most live subscriptions one watcher (From URI) may hold; more get 403
    /// (product.md, Security: every input is bounded). Zero: no bound.
    pub max_dialogs_per_watcher: usize,
    /// Sent as `User-Agent` in NOTIFYs and `Server` in responses.
    pub user_agent: String,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            contact_uri: "sip:gateway@127.0.0.1:5060".into(),
            min_notify_interval: Duration::ZERO,
            max_dialogs_per_watcher: 1000,
            user_agent: concat!("xmpp-sip-gateway/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// A notifier dialog's handle, drawn from the injected [`IdGenerator`] (so deterministic
/// in tests) and unique among live dialogs. It is also the dialog's store key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotifierDialogId(pub u64);

impl NotifierDialogId {
    /// The store key / admin id form (`nd-` and 16 hex digits).
    pub fn key(self) -> String {
        self.to_string()
    }

    /// Parses [`NotifierDialogId::key`] back.
    pub fn parse(key: &str) -> Option<Self> {
        let hex = key.strip_prefix("nd-")?;
        u64::from_str_radix(hex, 16).ok().map(NotifierDialogId)
    }
}

impl fmt::Display for NotifierDialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nd-{:016x}", self.0)
    }
}

/// A NOTIFY body: its Content-Type (parameters allowed) and bytes. The bytes are shared:
/// one document pushed to a thousand watchers is held once, not once per dialog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub content_type: String,
    pub bytes: std::sync::Arc<[u8]>,
    /// The document's language, sent as `Content-Language` (RFC 3261 §20.13; RFC 8048
    /// §7.5 maps XMPP `xml:lang` to it).
    pub language: Option<String>,
}

impl Body {
    pub fn new(content_type: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Body {
            content_type: content_type.into(),
            bytes: bytes.into().into(),
            language: None,
        }
    }
}

/// The policy's answer to a new subscription (RFC 6665 §4.2.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// Authorization is not known yet: 200 + NOTIFY `pending` (standards.md case 34).
    Pending,
    /// Authorized: 200 + NOTIFY `active` with the current state.
    Active,
    /// Denied by automatic policy: this final response (403 or 603, RFC 6665 §4.2.1.2).
    /// Codes outside 400–699 are answered 403.
    Reject(u16),
}

/// What the policy decides for a new subscription or a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub authorization: Authorization,
    /// The current state, cached for the dialog; `None` = no state yet (a NOTIFY without
    /// a body). Sent only while the dialog is active.
    pub body: Option<Body>,
    /// The resource as the module names it, used as the dialog's presentity (views,
    /// [`Notifier::dialogs_for`]). `None` keeps the Request-URI. Lets a module normalise
    /// when a proxy rewrote the Request-URI (the To URI still names the resource).
    pub resource: Option<String>,
}

impl Decision {
    pub fn pending() -> Self {
        Decision {
            authorization: Authorization::Pending,
            body: None,
            resource: None,
        }
    }

    pub fn active(body: Option<Body>) -> Self {
        Decision {
            authorization: Authorization::Active,
            body,
            resource: None,
        }
    }

    pub fn reject(code: u16) -> Self {
        Decision {
            authorization: Authorization::Reject(code),
            body: None,
            resource: None,
        }
    }

    /// Names the resource (see [`Decision::resource`]).
    pub fn for_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }
}

/// What the policy is told about a SUBSCRIBE it must decide.
#[derive(Clone, Copy, Debug)]
pub struct SubscribeInfo<'a> {
    /// The watcher: the From URI.
    pub watcher: &'a str,
    /// The resource: the Request-URI (RFC 6665 §4.2.1).
    pub presentity: &'a str,
    /// The To URI (the resource as the subscriber addressed it).
    pub to_uri: &'a str,
    pub event: &'a EventHeader,
    /// The negotiated NOTIFY body type, `None` when the package produces no bodies.
    pub content_type: Option<&'a str>,
    /// The interval that will be granted (0 for a poll).
    pub expires: u32,
    /// `Expires: 0` outside a dialog: a one-off fetch (RFC 6665 §4.4.3).
    pub is_poll: bool,
    pub request: &'a Request,
    pub from: Peer,
}

/// Module policy for the notifier: which packages are served, what bodies they produce,
/// who may subscribe. Implemented by modules (the bridge, the presence agent); the engine
/// may pass a dispatcher that routes by package or by [`NotifierDialogView::owner`].
pub trait NotifierPolicy {
    /// The module owning the dialogs created under this policy (store rows, views, events).
    fn owner(&self) -> &str;

    /// Event packages served, as listed in `Allow-Events` on 489 (RFC 6665 §8.2.2).
    fn packages(&self) -> Vec<String>;

    /// Media types this package can produce, preferred first. The first is the default
    /// when the SUBSCRIBE has no Accept (RFC 6665 §4.2.1.1, e.g. `application/pidf+xml`).
    /// Empty: the package sends no bodies and Accept is not checked.
    fn body_types(&self, package: &str) -> Vec<String>;

    /// Interval granted when the SUBSCRIBE has no Expires (RFC 6665 §7.2, package defined).
    /// `None` uses [`NotifierConfig::default_expires`].
    fn default_expires(&self, package: &str) -> Option<u32> {
        let _ = package;
        None
    }

    /// Least time between state-update NOTIFYs for this package, overriding
    /// [`NotifierConfig::min_notify_interval`] (e.g. 5 s for `presence.winfo`, RFC 3857
    /// §5.2 / standards.md §11). `None` uses the configured value.
    fn min_notify_interval(&self, package: &str) -> Option<Duration> {
        let _ = package;
        None
    }

    /// Decides a new subscription (or a poll). Must answer at once: waiting for a human is
    /// expressed as [`Authorization::Pending`] (RFC 6665 §4.2.1.3).
    fn authorize(&self, info: &SubscribeInfo<'_>) -> Decision;

    /// The body of the final `terminated;reason=timeout` NOTIFY of an *active* dialog that
    /// the subscriber ended (Expires: 0, case 41) or that expired. Default: the cached
    /// state. The bridge returns a PIDF `closed` document here (RFC 8048 §5.3.3).
    fn final_body(&self, dialog: &NotifierDialogView, cached: Option<&Body>) -> Option<Body> {
        let _ = dialog;
        cached.cloned()
    }
}

/// A module-driven change of Subscription-State (RFC 6665 §4.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// pending → active (standards.md case 35). On an active dialog it is a plain update.
    Activate,
    /// End the subscription with a `terminated` NOTIFY (case 36 uses `Rejected`). The
    /// NOTIFY carries the body given with the change, or none; the dialog is removed.
    Terminate {
        reason: TerminationReason,
        retry_after: Option<u32>,
    },
}

/// The final outcome of a NOTIFY transaction, as the engine saw it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// A final response code (1xx are ignored).
    Response(u16),
    /// Timer F fired or the transport failed (RFC 3261 §17.1.2.2, §17.1.4).
    Timeout,
}

/// Why a notifier dialog ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The subscriber sent an in-dialog `Expires: 0` (standards.md case 41).
    Unsubscribed,
    /// Not refreshed in time (RFC 6665 §4.2.2).
    Expired,
    /// The module terminated it through [`Notifier::notify`].
    Terminated(TerminationReason),
    /// A NOTIFY failed with a code that ends the subscription, or timed out (`None`)
    /// (RFC 6665 §4.2.2, standards.md case 43). No further NOTIFY is sent.
    NotifyFailed { status: Option<u16> },
}

/// News for the module owning a dialog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifierEvent {
    /// A subscription was accepted (the 200 and first NOTIFY are among the actions).
    /// When `view.state` is `pending`, the module is expected to seek authorization
    /// (the bridge sends XMPP `subscribe`, case 34) and later call `notify(Activate)`.
    Created {
        dialog: NotifierDialogId,
        view: NotifierDialogView,
    },
    /// The subscriber refreshed the subscription.
    Refreshed {
        dialog: NotifierDialogId,
        expires_in: u64,
    },
    /// A poll (`Expires: 0` outside a dialog) was answered. `had_state` is false when the
    /// NOTIFY carried no state, so the module may go and fetch it (the bridge sends an
    /// XMPP probe, case 42). No dialog remains.
    Polled {
        watcher: String,
        presentity: String,
        event: EventHeader,
        authorization: Authorization,
        had_state: bool,
    },
    /// The dialog is gone (or going: its final NOTIFY is among these actions). Emitted
    /// once per dialog, whatever ended it.
    Ended {
        dialog: NotifierDialogId,
        view: NotifierDialogView,
        reason: EndReason,
    },
}

/// What the engine must do; see the module docs for the order and who does what.
#[derive(Clone, Debug, PartialEq)]
pub enum NotifierAction {
    /// The final response to the SUBSCRIBE being handled.
    Respond(Response),
    /// Send this in-dialog NOTIFY. `to_uri` is the next hop to resolve (the first Route
    /// when the route set is not empty, else the Request-URI, RFC 3261 §12.2.1.1); the
    /// engine adds the Via by starting a client transaction. `subscriber` is where the
    /// SUBSCRIBE came from, usable when `to_uri` cannot be resolved (e.g. no DNS in the
    /// core) or for symmetric response routing behind NAT.
    SendNotify {
        dialog: NotifierDialogId,
        to_uri: String,
        subscriber: Peer,
        request: Request,
    },
    /// Persist this before performing any later action.
    Store(StoreOp),
    /// For the module that owns the dialog.
    Event(NotifierEvent),
}

/// One dialog as the admin API and the policy see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierDialogView {
    /// The dialog key ([`NotifierDialogId::key`]).
    pub id: String,
    pub owner: String,
    pub watcher: String,
    pub presentity: String,
    /// The Event package (with template, e.g. `presence.winfo`).
    pub event: String,
    /// The whole Event value the subscriber sent, parameters included (`dialog;sla`).
    #[serde(default)]
    pub event_header: String,
    /// `pending`, `active` or `terminated` (final NOTIFY not yet sent).
    pub state: String,
    pub call_id: String,
    /// Seconds until the subscription expires (rounded up).
    pub expires_in: u64,
    /// The negotiated body type.
    pub content_type: Option<String>,
    /// Whether state is cached for this dialog (refresh NOTIFYs carry it).
    pub has_state: bool,
    /// Where NOTIFYs go: the subscriber's Contact URI.
    #[serde(default)]
    pub remote_target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Active,
    /// The final NOTIFY is queued; the dialog is dropped when it is sent.
    Terminating {
        reason: TerminationReason,
        retry_after: Option<u32>,
        body: Option<Body>,
    },
}

#[derive(Clone, Debug)]
struct Dialog {
    id: NotifierDialogId,
    owner: String,
    call_id: String,
    /// The SUBSCRIBE's To with our tag: the From of our NOTIFYs.
    local: NameAddr,
    /// The SUBSCRIBE's From: the To of our NOTIFYs.
    remote: NameAddr,
    /// The subscriber's Contact URI (RFC 3261 §12.1.1), updated by refreshes.
    remote_target: String,
    /// The SUBSCRIBE's Record-Route in order (UAS route set, RFC 3261 §12.1.1).
    route_set: Vec<NameAddr>,
    event: EventHeader,
    presentity: String,
    watcher: String,
    phase: Phase,
    expires_at: Timestamp,
    local_cseq: u32,
    remote_cseq: u32,
    /// Media ranges the subscriber accepts (the package default when it sent no Accept).
    accept: Vec<String>,
    content_type: Option<String>,
    /// The latest full state the module pushed.
    body: Option<Body>,
    subscriber: Peer,
    /// Least time between state-update NOTIFYs (zero: no throttle).
    min_interval: Duration,
    /// Polls are answered on a transient dialog that is never stored.
    durable: bool,
    // Transient sending state (not persisted).
    outstanding: bool,
    needs_notify: bool,
    /// The queued NOTIFY answers a SUBSCRIBE or changes Subscription-State: not throttled.
    urgent: bool,
    last_notify_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    Expiry(NotifierDialogId),
    Throttle(NotifierDialogId),
}

/// The notifier-side subscription set. See the module docs for the contract.
#[derive(Debug)]
pub struct Notifier {
    config: NotifierConfig,
    dialogs: BTreeMap<NotifierDialogId, Dialog>,
    /// (Call-ID, our tag) → dialog, to match in-dialog SUBSCRIBEs.
    by_dialog_key: HashMap<(String, String), NotifierDialogId>,
    /// Presentity → its dialogs, so a state change reaches its watchers without a scan of
    /// every dialog (100 000 dialogs: one lookup instead of 100 000 comparisons).
    by_presentity: HashMap<String, BTreeSet<NotifierDialogId>>,
    /// Watcher → its dialogs, for the per-watcher limit.
    by_watcher: HashMap<String, BTreeSet<NotifierDialogId>>,
    /// Number of durable dialogs ([`Notifier::len`], read by the engine on every input).
    durable_count: usize,
    timers: TimerTable<TimerKey>,
}

/// A malformed SUBSCRIBE: answered 400 with this reason phrase.
struct BadRequest(String);

/// The headers every SUBSCRIBE must have, parsed.
struct Basics {
    call_id: String,
    from: NameAddr,
    from_tag: String,
    to: NameAddr,
    cseq: CSeq,
    expires: Option<u32>,
}

impl Basics {
    fn parse(req: &Request) -> Result<Basics, BadRequest> {
        let call_id = req
            .headers
            .get("Call-ID")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| BadRequest("Missing Call-ID".into()))?
            .to_string();
        let from_raw = req
            .headers
            .get("From")
            .ok_or_else(|| BadRequest("Missing From".into()))?;
        let from = NameAddr::parse("From", from_raw)
            .map_err(|e| BadRequest(format!("Bad From Header ({})", e.detail)))?;
        let from_tag = from
            .tag()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| BadRequest("Missing From tag".into()))?
            .to_string();
        let to_raw = req
            .headers
            .get("To")
            .ok_or_else(|| BadRequest("Missing To".into()))?;
        let to = NameAddr::parse("To", to_raw)
            .map_err(|e| BadRequest(format!("Bad To Header ({})", e.detail)))?;
        let cseq_raw = req
            .headers
            .get("CSeq")
            .ok_or_else(|| BadRequest("Missing CSeq".into()))?;
        let cseq = CSeq::parse(cseq_raw)
            .map_err(|e| BadRequest(format!("Bad CSeq Header ({})", e.detail)))?;
        if cseq.method != Method::Subscribe {
            return Err(BadRequest("CSeq method does not match".into()));
        }
        let expires = match req.headers.get("Expires") {
            None => None,
            Some(v) => Some(
                parse_delta_seconds("Expires", v)
                    .map_err(|e| BadRequest(format!("Bad Expires Header ({})", e.detail)))?,
            ),
        };
        Ok(Basics {
            call_id,
            from,
            from_tag,
            to,
            cseq,
            expires,
        })
    }
}

impl Notifier {
    pub fn new(config: NotifierConfig) -> Self {
        Notifier {
            config,
            dialogs: BTreeMap::new(),
            by_dialog_key: HashMap::new(),
            by_presentity: HashMap::new(),
            by_watcher: HashMap::new(),
            durable_count: 0,
            timers: TimerTable::new(),
        }
    }

    pub fn config(&self) -> &NotifierConfig {
        &self.config
    }

    /// Handles a SUBSCRIBE (RFC 6665 §4.2.1): a new subscription, a poll, a refresh or an
    /// unsubscribe. The actions always contain exactly one [`NotifierAction::Respond`].
    ///
    /// Initial SUBSCRIBE (no To-tag), checked in this order: malformed basics → 400;
    /// missing or unserved Event → 489 with Allow-Events (case 38); an Accept listing no
    /// producible type → 406 (case 37); 0 < Expires < min (and < 3600) → 423 with
    /// Min-Expires (case 39); no Contact → 400; then the policy decides: reject →
    /// 403/603; otherwise 200 (To-tag, Contact, Expires = min(requested or package
    /// default, max), Record-Route copied) and at once a NOTIFY `pending` without body
    /// (case 34) or `active` with the current state. `Expires: 0` is a poll (case 42).
    ///
    /// In-dialog SUBSCRIBE: no such dialog (or a different Event) → 481; out-of-order
    /// CSeq → 500; 0 < Expires < min → 423; `Expires: 0` → 200 and NOTIFY
    /// `terminated;reason=timeout` (case 41); else 200 and a NOTIFY with the full cached
    /// state or no body (case 40).
    pub fn on_subscribe(
        &mut self,
        now: Timestamp,
        ids: &mut IdGenerator,
        from: Peer,
        req: &Request,
        policy: &dyn NotifierPolicy,
    ) -> Vec<NotifierAction> {
        let mut out = Vec::new();
        if req.method != Method::Subscribe {
            tracing::warn!(method = %req.method, "notifier handed a non-SUBSCRIBE request");
            let mut resp = self.reply(req, 405, "Method Not Allowed", ids);
            resp.headers.push("Allow", "SUBSCRIBE");
            out.push(NotifierAction::Respond(resp));
            return out;
        }
        let basics = match Basics::parse(req) {
            Ok(b) => b,
            Err(BadRequest(reason)) => {
                tracing::warn!(%from, %reason, "malformed SUBSCRIBE");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return out;
            }
        };
        match basics
            .to
            .tag()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
        {
            Some(tag) => self.on_in_dialog(now, ids, from, req, &basics, &tag, policy, &mut out),
            None => self.on_initial(now, ids, from, req, &basics, policy, &mut out),
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn on_initial(
        &mut self,
        now: Timestamp,
        ids: &mut IdGenerator,
        from: Peer,
        req: &Request,
        b: &Basics,
        policy: &dyn NotifierPolicy,
        out: &mut Vec<NotifierAction>,
    ) {
        let call_id = b.call_id.as_str();
        let packages = policy.packages();
        let event = match parse_event(req) {
            Ok(Some(ev)) if packages.iter().any(|p| p.eq_ignore_ascii_case(&ev.package)) => ev,
            Ok(other) => {
                tracing::info!(call_id, event = ?other.map(|e| e.package), "SUBSCRIBE for an unserved Event package");
                let mut resp = self.reply(req, 489, "Bad Event", ids);
                resp.headers.push("Allow-Events", packages.join(", "));
                out.push(NotifierAction::Respond(resp));
                return;
            }
            Err(reason) => {
                tracing::warn!(call_id, %reason, "malformed Event header");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return;
            }
        };

        let producible: Vec<String> = policy
            .body_types(&event.package)
            .iter()
            .map(|t| media_type(t))
            .collect();
        let (content_type, accept) = match negotiate(req, &producible) {
            Ok(n) => n,
            Err(Negotiation::Bad(reason)) => {
                tracing::warn!(call_id, %reason, "malformed Accept header");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return;
            }
            Err(Negotiation::NotAcceptable) => {
                tracing::info!(
                    call_id,
                    "SUBSCRIBE accepts no body type the package produces"
                );
                let mut resp = self.reply(req, 406, "Not Acceptable", ids);
                resp.headers.push("Accept", producible.join(", "));
                out.push(NotifierAction::Respond(resp));
                return;
            }
        };

        let requested = b.expires.unwrap_or_else(|| {
            policy
                .default_expires(&event.package)
                .unwrap_or(self.config.default_expires)
        });
        if let Some(resp) = self.too_brief(req, requested, ids) {
            tracing::info!(call_id, requested, "SUBSCRIBE interval too brief");
            out.push(NotifierAction::Respond(resp));
            return;
        }
        let granted = requested.min(self.config.max_expires);

        let contact = match subscriber_contact(req) {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::warn!(call_id, "initial SUBSCRIBE without Contact");
                out.push(NotifierAction::Respond(self.reply(
                    req,
                    400,
                    "Missing Contact",
                    ids,
                )));
                return;
            }
            Err(reason) => {
                tracing::warn!(call_id, %reason, "malformed Contact header");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return;
            }
        };
        let route_set = match record_route(req) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(call_id, %reason, "malformed Record-Route header");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return;
            }
        };

        let is_poll = granted == 0;
        let limit = self.config.max_dialogs_per_watcher;
        if !is_poll && limit > 0 && self.live_dialogs_of(&b.from.uri) >= limit {
            tracing::warn!(call_id, watcher = %b.from.uri, limit, "watcher has too many subscriptions");
            out.push(NotifierAction::Respond(self.reply(
                req,
                403,
                "Too Many Subscriptions",
                ids,
            )));
            return;
        }
        let info = SubscribeInfo {
            watcher: &b.from.uri,
            presentity: &req.uri,
            to_uri: &b.to.uri,
            event: &event,
            content_type: content_type.as_deref(),
            expires: granted,
            is_poll,
            request: req,
            from,
        };
        let decision = policy.authorize(&info);
        let presentity = decision.resource.clone().unwrap_or_else(|| req.uri.clone());
        let phase = match decision.authorization {
            Authorization::Reject(code) => {
                let code = if (400..700).contains(&code) {
                    code
                } else {
                    403
                };
                tracing::info!(call_id, code, watcher = %b.from.uri, presentity = %req.uri, "SUBSCRIBE rejected by policy");
                out.push(NotifierAction::Respond(self.reply(
                    req,
                    code,
                    reason_phrase(code),
                    ids,
                )));
                return;
            }
            Authorization::Pending => Phase::Pending,
            Authorization::Active => Phase::Active,
        };
        // Cached even while pending: pending NOTIFYs never carry it, activation does.
        let body = decision.body.filter(|body| {
            let ok = acceptable(&accept, &body.content_type);
            if !ok {
                tracing::warn!(call_id, content_type = %body.content_type, "policy body not acceptable to the subscriber; dropped");
            }
            ok
        });

        let id = self.fresh_id(ids);
        let local_tag = ids.tag();
        let dialog = Dialog {
            id,
            owner: policy.owner().to_string(),
            call_id: b.call_id.clone(),
            local: b.to.clone().with_tag(&local_tag),
            remote: b.from.clone(),
            remote_target: contact,
            route_set,
            event: event.clone(),
            presentity: presentity.clone(),
            watcher: b.from.uri.clone(),
            phase,
            expires_at: now + Duration::from_secs(u64::from(granted)),
            local_cseq: 0,
            remote_cseq: b.cseq.seq,
            accept,
            content_type,
            body,
            subscriber: from,
            min_interval: policy
                .min_notify_interval(&event.package)
                .unwrap_or(self.config.min_notify_interval),
            durable: !is_poll,
            outstanding: false,
            needs_notify: false,
            urgent: false,
            last_notify_at: None,
        };

        // The 200: To-tag, Contact, Expires, and the Record-Route copied (RFC 3261 §12.1.1).
        let mut resp = reply_tagged(
            req,
            200,
            "OK",
            || local_tag.clone(),
            &self.config.user_agent,
        );
        for rr in req.headers.get_all("Record-Route") {
            resp.headers.push("Record-Route", rr);
        }
        resp.headers
            .push("Contact", format!("<{}>", self.config.contact_uri));
        resp.headers.push("Expires", granted.to_string());

        if is_poll {
            // A poll: a transient dialog carries the one terminated NOTIFY (RFC 6665 §4.4.3).
            let active = dialog.phase == Phase::Active;
            // A pending watcher learns nothing (standards.md §7.8).
            let state = if active { dialog.body.clone() } else { None };
            let had_state = state.is_some();
            let authorization = if active {
                Authorization::Active
            } else {
                Authorization::Pending
            };
            let mut dialog = dialog;
            dialog.phase = Phase::Terminating {
                reason: TerminationReason::Timeout,
                retry_after: None,
                body: state,
            };
            tracing::info!(call_id, watcher = %dialog.watcher, presentity = %dialog.presentity, had_state, "poll answered");
            self.insert(dialog);
            out.push(NotifierAction::Respond(resp));
            self.queue(now, id, true, out);
            out.push(NotifierAction::Event(NotifierEvent::Polled {
                watcher: b.from.uri.clone(),
                presentity: presentity.clone(),
                event,
                authorization,
                had_state,
            }));
            return;
        }

        tracing::info!(call_id, dialog = %id, watcher = %dialog.watcher, presentity = %dialog.presentity, granted, "notifier dialog created");
        self.timers.set(TimerKey::Expiry(id), dialog.expires_at);
        self.insert(dialog);
        out.extend(self.put_op(id).map(NotifierAction::Store));
        out.push(NotifierAction::Respond(resp));
        self.queue(now, id, true, out);
        if let Some(view) = self.view(now, id) {
            out.push(NotifierAction::Event(NotifierEvent::Created {
                dialog: id,
                view,
            }));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_in_dialog(
        &mut self,
        now: Timestamp,
        ids: &mut IdGenerator,
        from: Peer,
        req: &Request,
        b: &Basics,
        to_tag: &str,
        policy: &dyn NotifierPolicy,
        out: &mut Vec<NotifierAction>,
    ) {
        let call_id = b.call_id.as_str();
        let found = self
            .by_dialog_key
            .get(&(b.call_id.clone(), to_tag.to_string()))
            .copied()
            .filter(|id| {
                self.dialogs.get(id).is_some_and(|d| {
                    d.durable
                        && !matches!(d.phase, Phase::Terminating { .. })
                        && d.remote.tag() == Some(b.from_tag.as_str())
                })
            });
        let Some(id) = found else {
            tracing::info!(call_id, to_tag, "SUBSCRIBE for an unknown dialog");
            out.push(NotifierAction::Respond(self.reply(
                req,
                481,
                "Subscription Does Not Exist",
                ids,
            )));
            return;
        };
        // The subscription in a dialog is identified by Event package and id (RFC 6665 §4.1.2.2).
        let same_event = match parse_event(req) {
            Ok(Some(ev)) => self
                .dialogs
                .get(&id)
                .is_some_and(|d| same_subscription(&d.event, &ev)),
            Ok(None) => {
                tracing::info!(call_id, dialog = %id, "in-dialog SUBSCRIBE without Event");
                let mut resp = self.reply(req, 489, "Bad Event", ids);
                resp.headers
                    .push("Allow-Events", policy.packages().join(", "));
                out.push(NotifierAction::Respond(resp));
                return;
            }
            Err(reason) => {
                tracing::warn!(call_id, %reason, "malformed Event header");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return;
            }
        };
        if !same_event {
            tracing::info!(call_id, dialog = %id, "in-dialog SUBSCRIBE for another Event");
            out.push(NotifierAction::Respond(self.reply(
                req,
                481,
                "Subscription Does Not Exist",
                ids,
            )));
            return;
        }
        let Some(d) = self.dialogs.get(&id) else {
            return;
        };
        if b.cseq.seq < d.remote_cseq {
            // RFC 3261 §12.2.2: a lower CSeq is out of order.
            tracing::warn!(call_id, dialog = %id, cseq = b.cseq.seq, "out-of-order in-dialog SUBSCRIBE");
            out.push(NotifierAction::Respond(self.reply(
                req,
                500,
                "Out Of Order",
                ids,
            )));
            return;
        }
        let requested = b.expires.unwrap_or_else(|| {
            policy
                .default_expires(&d.event.package)
                .unwrap_or(self.config.default_expires)
        });
        if let Some(resp) = self.too_brief(req, requested, ids) {
            tracing::info!(call_id, dialog = %id, requested, "refresh interval too brief");
            out.push(NotifierAction::Respond(resp));
            return;
        }
        let new_target = match subscriber_contact(req) {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(call_id, %reason, "malformed Contact header");
                out.push(NotifierAction::Respond(self.reply(req, 400, &reason, ids)));
                return;
            }
        };
        let granted = requested.min(self.config.max_expires);
        let mut resp = self.reply(req, 200, "OK", ids);
        resp.headers
            .push("Contact", format!("<{}>", self.config.contact_uri));
        resp.headers.push("Expires", granted.to_string());

        let final_body = if granted == 0 {
            let active = self
                .dialogs
                .get(&id)
                .is_some_and(|d| d.phase == Phase::Active);
            match self.view(now, id) {
                Some(view) if active => {
                    let cached = self.dialogs.get(&id).and_then(|d| d.body.clone());
                    policy.final_body(&view, cached.as_ref())
                }
                _ => None,
            }
        } else {
            None
        };
        let Some(d) = self.dialogs.get_mut(&id) else {
            return;
        };
        d.remote_cseq = b.cseq.seq;
        d.subscriber = from;
        if let Some(target) = new_target {
            // SUBSCRIBE is a target refresh request (RFC 6665 §4.1.2.1).
            d.remote_target = target;
        }

        if granted == 0 {
            tracing::info!(call_id, dialog = %id, "subscriber unsubscribed");
            out.push(NotifierAction::Respond(resp));
            self.begin_termination(
                now,
                id,
                TerminationReason::Timeout,
                None,
                final_body,
                EndReason::Unsubscribed,
                out,
            );
            self.queue(now, id, true, out);
            return;
        }

        d.expires_at = now + Duration::from_secs(u64::from(granted));
        let expires_at = d.expires_at;
        tracing::debug!(call_id, dialog = %id, granted, "subscription refreshed");
        self.timers.set(TimerKey::Expiry(id), expires_at);
        out.extend(self.put_op(id).map(NotifierAction::Store));
        out.push(NotifierAction::Respond(resp));
        self.queue(now, id, true, out);
        out.push(NotifierAction::Event(NotifierEvent::Refreshed {
            dialog: id,
            expires_in: u64::from(granted),
        }));
    }

    /// Pushes state from the module owning `dialog` (RFC 6665 §4.2.2).
    ///
    /// `body`: `Some` replaces the cached full state (when its type is acceptable to the
    /// subscriber); `None` keeps it. A body equal to the cached one sends nothing.
    /// With `change`:
    /// - `None`: on an active dialog a NOTIFY with the cached state follows, throttled by
    ///   `min_notify_interval` and coalesced (case 44); on a pending dialog the state is
    ///   only cached (pending NOTIFYs carry no body).
    /// - `Activate`: a pending dialog becomes active and a NOTIFY `active;expires=<left>`
    ///   with the cached state (if any) follows at once (case 35).
    /// - `Terminate`: a NOTIFY `terminated;reason=…` (no `expires`) carrying `body` or
    ///   nothing is queued, and the dialog is removed (case 36).
    ///
    /// Unknown or already terminating dialogs are ignored (empty actions).
    pub fn notify(
        &mut self,
        now: Timestamp,
        dialog: NotifierDialogId,
        change: Option<StateChange>,
        body: Option<Body>,
    ) -> Vec<NotifierAction> {
        let mut out = Vec::new();
        let Some(d) = self.dialogs.get_mut(&dialog) else {
            tracing::debug!(%dialog, "notify for an unknown notifier dialog");
            return out;
        };
        if matches!(d.phase, Phase::Terminating { .. }) {
            tracing::debug!(%dialog, "notify for a terminating notifier dialog");
            return out;
        }
        if let Some(StateChange::Terminate {
            reason,
            retry_after,
        }) = change
        {
            let body = body.filter(|b| acceptable(&d.accept, &b.content_type));
            tracing::info!(%dialog, ?reason, "module terminates notifier dialog");
            let end = EndReason::Terminated(reason.clone());
            self.begin_termination(now, dialog, reason, retry_after, body, end, &mut out);
            self.queue(now, dialog, true, &mut out);
            return out;
        }
        let mut changed = false;
        if let Some(body) = body {
            if acceptable(&d.accept, &body.content_type) {
                changed = d.body.as_ref() != Some(&body);
                d.body = Some(body);
            } else {
                tracing::warn!(%dialog, content_type = %body.content_type, "state not acceptable to the subscriber; dropped");
            }
        }
        let activated = change == Some(StateChange::Activate) && d.phase == Phase::Pending;
        if activated {
            d.phase = Phase::Active;
            tracing::info!(%dialog, "notifier dialog activated");
        }
        let is_active = d.phase == Phase::Active;
        if activated {
            // The authorization is durable at once; state alone is written with the
            // NOTIFY that carries it (cached presence may be written behind).
            out.extend(self.put_op(dialog).map(NotifierAction::Store));
        }
        if activated {
            self.queue(now, dialog, true, &mut out);
        } else if is_active && changed {
            self.queue(now, dialog, false, &mut out);
        }
        out
    }

    /// Pushes `body` to every live dialog of `package` for `presentity` (the
    /// Request-URI of their SUBSCRIBE), as [`Notifier::notify`] with no state change.
    pub fn notify_presentity(
        &mut self,
        now: Timestamp,
        package: &str,
        presentity: &str,
        body: Body,
    ) -> Vec<NotifierAction> {
        let mut out = Vec::new();
        for id in self.dialogs_for(package, presentity) {
            out.extend(self.notify(now, id, None, Some(body.clone())));
        }
        out
    }

    /// Reports the final outcome of a NOTIFY sent for `dialog` (RFC 6665 §4.2.2): 404, 405,
    /// 410, 416, 480–485, 489, 501, 604 or a timeout remove the subscription without a
    /// further NOTIFY (case 43); other final codes keep it, and a queued NOTIFY (the
    /// latest state) may now go out. 1xx are ignored.
    pub fn on_notify_outcome(
        &mut self,
        now: Timestamp,
        dialog: NotifierDialogId,
        outcome: NotifyOutcome,
    ) -> Vec<NotifierAction> {
        let mut out = Vec::new();
        if let NotifyOutcome::Response(code) = outcome {
            if code < 200 {
                return out;
            }
        }
        let Some(d) = self.dialogs.get_mut(&dialog) else {
            return out;
        };
        d.outstanding = false;
        let fatal = match outcome {
            NotifyOutcome::Timeout => true,
            NotifyOutcome::Response(code) => ends_subscription(code),
        };
        if fatal {
            let status = match outcome {
                NotifyOutcome::Response(code) => Some(code),
                NotifyOutcome::Timeout => None,
            };
            tracing::info!(%dialog, ?status, "NOTIFY failed; notifier dialog removed");
            let was_terminating = matches!(d.phase, Phase::Terminating { .. });
            let durable = d.durable;
            let view = self.view(now, dialog);
            self.remove(dialog);
            if durable && !was_terminating {
                out.push(NotifierAction::Store(StoreOp::Delete {
                    table: StoreTable::NotifierDialogs,
                    key: dialog.key(),
                }));
            }
            if let (Some(view), true) = (view, durable && !was_terminating) {
                out.push(NotifierAction::Event(NotifierEvent::Ended {
                    dialog,
                    view,
                    reason: EndReason::NotifyFailed { status },
                }));
            }
            return out;
        }
        if let NotifyOutcome::Response(code) = outcome {
            if !(200..300).contains(&code) {
                tracing::debug!(%dialog, code, "NOTIFY refused; subscription kept");
            }
        }
        self.flush(now, dialog, &mut out);
        out
    }

    /// Takes the CSeq for re-sending the outstanding NOTIFY of `dialog` with credentials
    /// after a 401/407 (RFC 3261 §22.2: a new request in the dialog, so the next local
    /// CSeq). The NOTIFY stays outstanding; its outcome arrives as usual. The store op,
    /// when given, keeps the restart margin for the CSeq (see [`CSEQ_STRIDE`]). `None`
    /// when the dialog is gone (its final NOTIFY was sent): the caller then counts on
    /// from the request it re-sends, as no later NOTIFY follows.
    pub fn take_resend_cseq(&mut self, dialog: NotifierDialogId) -> Option<(u32, Option<StoreOp>)> {
        let d = self.dialogs.get_mut(&dialog)?;
        d.local_cseq = d.local_cseq.wrapping_add(1).max(1);
        let cseq = d.local_cseq;
        let store = match d.durable && cseq % CSEQ_STRIDE == 0 {
            true => self.put_op(dialog),
            false => None,
        };
        Some((cseq, store))
    }

    /// Fires due timers: an expired subscription gets NOTIFY
    /// `terminated;reason=timeout` and is removed (RFC 6665 §4.2.2); a throttled dialog
    /// sends its latest state. `policy` supplies the final body (see
    /// [`NotifierPolicy::final_body`]); it must handle every owner's dialogs.
    pub fn handle_timeout(
        &mut self,
        now: Timestamp,
        policy: &dyn NotifierPolicy,
    ) -> Vec<NotifierAction> {
        let mut out = Vec::new();
        while let Some(key) = self.timers.pop_expired(now) {
            match key {
                TimerKey::Expiry(id) => {
                    let Some(d) = self.dialogs.get(&id) else {
                        continue;
                    };
                    if matches!(d.phase, Phase::Terminating { .. }) {
                        continue;
                    }
                    let active = d.phase == Phase::Active;
                    let cached = d.body.clone();
                    tracing::info!(dialog = %id, call_id = %d.call_id, "notifier subscription expired");
                    let body = match self.view(now, id) {
                        Some(view) if active => policy.final_body(&view, cached.as_ref()),
                        _ => None,
                    };
                    self.begin_termination(
                        now,
                        id,
                        TerminationReason::Timeout,
                        None,
                        body,
                        EndReason::Expired,
                        &mut out,
                    );
                    self.queue(now, id, true, &mut out);
                }
                TimerKey::Throttle(id) => self.flush(now, id, &mut out),
            }
        }
        out
    }

    /// The earliest time [`Notifier::handle_timeout`] has work.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    /// Reloads dialogs persisted as `StoreTable::NotifierDialogs` rows (other tables are
    /// skipped), so NOTIFYs continue on the same dialogs with the CSeq continuing
    /// (product.md, Persistence). Dialogs that expired meanwhile are ended by the next
    /// [`Notifier::handle_timeout`]. Returns how many dialogs were restored; unreadable
    /// rows are logged and skipped.
    pub fn restore(&mut self, rows: &[StoredRow]) -> usize {
        let mut restored = 0;
        for row in rows {
            if row.table != StoreTable::NotifierDialogs {
                continue;
            }
            let Some(id) = NotifierDialogId::parse(&row.key) else {
                tracing::warn!(key = %row.key, "notifier row with a bad key skipped");
                continue;
            };
            let record: DialogRecord = match serde_json::from_value(row.data.clone()) {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(key = %row.key, %error, "unreadable notifier row skipped");
                    continue;
                }
            };
            match record.into_dialog(id, self.config.min_notify_interval) {
                Some(dialog) => {
                    self.timers.set(TimerKey::Expiry(id), dialog.expires_at);
                    self.insert(dialog);
                    restored += 1;
                }
                None => tracing::warn!(key = %row.key, "notifier row with bad fields skipped"),
            }
        }
        tracing::info!(restored, "notifier dialogs restored");
        restored
    }

    /// Live dialogs of `package` for `presentity`, in id order (terminating ones excluded).
    pub fn dialogs_for(&self, package: &str, presentity: &str) -> Vec<NotifierDialogId> {
        let Some(ids) = self.by_presentity.get(presentity) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| self.dialogs.get(id))
            .filter(|d| {
                d.durable
                    && !matches!(d.phase, Phase::Terminating { .. })
                    && d.event.package.eq_ignore_ascii_case(package)
                    && d.presentity == presentity
            })
            .map(|d| d.id)
            .collect()
    }

    /// Live dialogs of `package` from `watcher` (From URI) to `presentity`, in id order:
    /// what an XMPP `subscribed`/`unsubscribed` between one pair acts on.
    pub fn dialogs_between(
        &self,
        package: &str,
        watcher: &str,
        presentity: &str,
    ) -> Vec<NotifierDialogId> {
        self.dialogs_for(package, presentity)
            .into_iter()
            .filter(|id| self.dialogs.get(id).is_some_and(|d| d.watcher == watcher))
            .collect()
    }

    /// One dialog's view, if it exists.
    pub fn view(&self, now: Timestamp, dialog: NotifierDialogId) -> Option<NotifierDialogView> {
        let d = self.dialogs.get(&dialog)?;
        Some(NotifierDialogView {
            id: d.id.key(),
            owner: d.owner.clone(),
            watcher: d.watcher.clone(),
            presentity: d.presentity.clone(),
            event: d.event.package.clone(),
            event_header: d.event.to_string(),
            state: match d.phase {
                Phase::Pending => "pending",
                Phase::Active => "active",
                Phase::Terminating { .. } => "terminated",
            }
            .to_string(),
            call_id: d.call_id.clone(),
            expires_in: ceil_secs(now, d.expires_at),
            content_type: d.content_type.clone(),
            remote_target: d.remote_target.clone(),
            has_state: d.body.is_some(),
        })
    }

    /// Every stored dialog (polls excluded), in id order, for the admin API.
    pub fn views(&self, now: Timestamp) -> Vec<NotifierDialogView> {
        self.dialogs
            .values()
            .filter(|d| d.durable)
            .filter_map(|d| self.view(now, d.id))
            .collect()
    }

    /// Number of stored dialogs (polls excluded).
    pub fn len(&self) -> usize {
        self.durable_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, dialog: NotifierDialogId) -> bool {
        self.dialogs.contains_key(&dialog)
    }

    // ----- internals -------------------------------------------------------------------

    fn reply(&self, req: &Request, status: u16, reason: &str, ids: &mut IdGenerator) -> Response {
        reply_tagged(req, status, reason, || ids.tag(), &self.config.user_agent)
    }

    fn live_dialogs_of(&self, watcher: &str) -> usize {
        let Some(ids) = self.by_watcher.get(watcher) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| self.dialogs.get(id))
            .filter(|d| {
                d.durable && !matches!(d.phase, Phase::Terminating { .. }) && d.watcher == watcher
            })
            .count()
    }

    fn fresh_id(&self, ids: &mut IdGenerator) -> NotifierDialogId {
        loop {
            let id = NotifierDialogId(ids.next_u64());
            if !self.dialogs.contains_key(&id) {
                return id;
            }
        }
    }

    fn insert(&mut self, dialog: Dialog) {
        if let Some(tag) = dialog.local.tag() {
            self.by_dialog_key
                .insert((dialog.call_id.clone(), tag.to_string()), dialog.id);
        }
        self.by_presentity
            .entry(dialog.presentity.clone())
            .or_default()
            .insert(dialog.id);
        self.by_watcher
            .entry(dialog.watcher.clone())
            .or_default()
            .insert(dialog.id);
        if dialog.durable {
            self.durable_count += 1;
        }
        if let Some(old) = self.dialogs.insert(dialog.id, dialog) {
            // Re-inserting an id replaces the record; count it once.
            if old.durable {
                self.durable_count -= 1;
            }
        }
    }

    fn remove(&mut self, id: NotifierDialogId) -> Option<Dialog> {
        let d = self.dialogs.remove(&id)?;
        if let Some(tag) = d.local.tag() {
            self.by_dialog_key
                .remove(&(d.call_id.clone(), tag.to_string()));
        }
        unindex(&mut self.by_presentity, &d.presentity, id);
        unindex(&mut self.by_watcher, &d.watcher, id);
        if d.durable {
            self.durable_count -= 1;
        }
        self.timers.cancel(&TimerKey::Expiry(id));
        self.timers.cancel(&TimerKey::Throttle(id));
        Some(d)
    }

    /// 423 when 0 < requested < min and requested < 3600 (RFC 6665 §4.2.1.1).
    fn too_brief(&self, req: &Request, requested: u32, ids: &mut IdGenerator) -> Option<Response> {
        if requested > 0 && requested < self.config.min_expires && requested < 3600 {
            let mut resp = self.reply(req, 423, "Interval Too Brief", ids);
            resp.headers
                .push("Min-Expires", self.config.min_expires.to_string());
            Some(resp)
        } else {
            None
        }
    }

    /// Moves a dialog to its final state: the store row goes at once (the intent to end
    /// is durable), the module hears `Ended`, and the final NOTIFY is left to `queue`.
    #[allow(clippy::too_many_arguments)]
    fn begin_termination(
        &mut self,
        now: Timestamp,
        id: NotifierDialogId,
        reason: TerminationReason,
        retry_after: Option<u32>,
        body: Option<Body>,
        end: EndReason,
        out: &mut Vec<NotifierAction>,
    ) {
        let Some(d) = self.dialogs.get_mut(&id) else {
            return;
        };
        d.phase = Phase::Terminating {
            reason,
            retry_after,
            body,
        };
        let durable = d.durable;
        self.timers.cancel(&TimerKey::Expiry(id));
        self.timers.cancel(&TimerKey::Throttle(id));
        if durable {
            out.push(NotifierAction::Store(StoreOp::Delete {
                table: StoreTable::NotifierDialogs,
                key: id.key(),
            }));
            if let Some(view) = self.view(now, id) {
                out.push(NotifierAction::Event(NotifierEvent::Ended {
                    dialog: id,
                    view,
                    reason: end,
                }));
            }
        }
    }

    /// Marks that the subscriber must learn the current state, then sends if it can.
    fn queue(
        &mut self,
        now: Timestamp,
        id: NotifierDialogId,
        urgent: bool,
        out: &mut Vec<NotifierAction>,
    ) {
        if let Some(d) = self.dialogs.get_mut(&id) {
            d.needs_notify = true;
            d.urgent |= urgent;
        }
        self.flush(now, id, out);
    }

    /// Sends the queued NOTIFY unless one is outstanding or the throttle holds it back.
    fn flush(&mut self, now: Timestamp, id: NotifierDialogId, out: &mut Vec<NotifierAction>) {
        let Some(d) = self.dialogs.get_mut(&id) else {
            return;
        };
        let interval = d.min_interval;
        if !d.needs_notify || d.outstanding {
            return;
        }
        if !d.urgent && !interval.is_zero() {
            if let Some(last) = d.last_notify_at {
                let allowed = last + interval;
                if now < allowed {
                    self.timers.set(TimerKey::Throttle(id), allowed);
                    return;
                }
            }
        }
        d.needs_notify = false;
        d.urgent = false;
        d.outstanding = true;
        d.last_notify_at = Some(now);
        d.local_cseq = d.local_cseq.wrapping_add(1).max(1);
        self.timers.cancel(&TimerKey::Throttle(id));
        let Some(d) = self.dialogs.get(&id) else {
            return;
        };
        let (to_uri, request) = build_notify(&self.config, d, now);
        let subscriber = d.subscriber;
        let terminating = matches!(d.phase, Phase::Terminating { .. });
        let durable = d.durable;
        tracing::debug!(dialog = %id, call_id = %d.call_id, cseq = d.local_cseq, state = ?request.headers.get("Subscription-State"), "NOTIFY");
        if terminating {
            // The final NOTIFY ends the dialog (its row and `Ended` went out when the
            // termination began); its outcome no longer matters.
            self.remove(id);
            out.push(NotifierAction::SendNotify {
                dialog: id,
                to_uri,
                subscriber,
                request,
            });
        } else {
            // The CSeq must keep increasing across a restart (RFC 3261 §12.2.1.1): written
            // once per CSEQ_STRIDE, restored with that margin.
            if durable && d.local_cseq % CSEQ_STRIDE == 0 {
                out.extend(self.put_op(id).map(NotifierAction::Store));
            }
            out.push(NotifierAction::SendNotify {
                dialog: id,
                to_uri,
                subscriber,
                request,
            });
        }
    }

    fn put_op(&self, id: NotifierDialogId) -> Option<StoreOp> {
        let d = self.dialogs.get(&id)?;
        let data = match serde_json::to_value(DialogRecord::from_dialog(d)) {
            Ok(v) => v,
            Err(error) => {
                tracing::error!(dialog = %id, %error, "notifier dialog record not serialisable");
                return None;
            }
        };
        Some(StoreOp::Put {
            table: StoreTable::NotifierDialogs,
            key: id.key(),
            owner: d.owner.clone(),
            subject: d.presentity.clone(),
            expires_at: Some(d.expires_at),
            data,
        })
    }
}

/// Builds the in-dialog NOTIFY (RFC 3261 §12.2.1.1, RFC 6665 §4.2.2); returns the next-hop
/// URI and the request (without Via).
fn build_notify(config: &NotifierConfig, d: &Dialog, now: Timestamp) -> (String, Request) {
    let (ruri, routes): (String, Vec<String>) = match d.route_set.first() {
        None => (d.remote_target.clone(), Vec::new()),
        Some(first) if uri_has_param(&first.uri, "lr") => (
            d.remote_target.clone(),
            d.route_set.iter().map(|r| r.to_string()).collect(),
        ),
        Some(first) => {
            // Strict routing: the first route becomes the Request-URI and the remote
            // target goes last in Route.
            let mut routes: Vec<String> = d.route_set[1..].iter().map(|r| r.to_string()).collect();
            routes.push(format!("<{}>", d.remote_target));
            (strip_uri_params_for_ruri(&first.uri), routes)
        }
    };
    let to_uri = match d.route_set.first() {
        Some(first) => first.uri.clone(),
        None => d.remote_target.clone(),
    };
    let mut req = Request::new(Method::Notify, ruri);
    for r in routes {
        req.headers.push("Route", r);
    }
    req.headers.push("Max-Forwards", MAX_FORWARDS);
    req.headers.push("From", d.local.to_string());
    req.headers.push("To", d.remote.to_string());
    req.headers.push("Call-ID", d.call_id.clone());
    req.headers.push(
        "CSeq",
        CSeq {
            seq: d.local_cseq,
            method: Method::Notify,
        }
        .to_string(),
    );
    req.headers
        .push("Contact", format!("<{}>", config.contact_uri));
    req.headers.push("Event", d.event.to_string());
    let left = ceil_secs(now, d.expires_at).min(u64::from(u32::MAX)) as u32;
    let (state, body) = match &d.phase {
        Phase::Pending => (
            SubState::Pending {
                expires: Some(left),
            },
            None,
        ),
        Phase::Active => (
            SubState::Active {
                expires: Some(left),
            },
            d.body.clone(),
        ),
        Phase::Terminating {
            reason,
            retry_after,
            body,
        } => (
            SubState::Terminated {
                reason: Some(reason.clone()),
                retry_after: *retry_after,
            },
            body.clone(),
        ),
    };
    req.headers.push("Subscription-State", state.to_string());
    req.headers.push("User-Agent", config.user_agent.clone());
    if let Some(body) = body {
        req.headers.push("Content-Type", body.content_type.clone());
        if let Some(lang) = &body.language {
            req.headers.push("Content-Language", lang.clone());
        }
        req.body = body.bytes.to_vec();
    }
    (to_uri, req)
}

/// Seconds from `now` until `at`, rounded up, so `expires=0` is never sent for a live
/// subscription.
fn ceil_secs(now: Timestamp, at: Timestamp) -> u64 {
    at.as_millis()
        .saturating_sub(now.as_millis())
        .div_ceil(1000)
}

/// RFC 6665 §4.2.2: NOTIFY answers that end the subscription.
fn ends_subscription(code: u16) -> bool {
    matches!(code, 404 | 405 | 410 | 416 | 480..=485 | 489 | 501 | 604)
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        603 => "Decline",
        _ => "Rejected",
    }
}

/// The single Event header: `Ok(None)` when absent; more than one is malformed
/// (RFC 6665 §8.2.1: exactly one).
fn parse_event(req: &Request) -> Result<Option<EventHeader>, String> {
    let values = req.headers.get_all("Event");
    match values.as_slice() {
        [] => Ok(None),
        [one] => EventHeader::parse(one)
            .map(Some)
            .map_err(|e| format!("Bad Event Header ({})", e.detail)),
        _ => Err("Bad Event Header (more than one)".into()),
    }
}

/// Same package and same `id` parameter (RFC 6665 §8.2.1).
fn same_subscription(a: &EventHeader, b: &EventHeader) -> bool {
    a.package.eq_ignore_ascii_case(&b.package) && a.params.value("id") == b.params.value("id")
}

enum Negotiation {
    Bad(String),
    NotAcceptable,
}

/// Picks the NOTIFY body type (RFC 6665 §4.2.1.1): without Accept, the package default;
/// with Accept, the first producible type any listed range covers, else 406. Returns the
/// type and the ranges to check later bodies against.
fn negotiate(
    req: &Request,
    producible: &[String],
) -> Result<(Option<String>, Vec<String>), Negotiation> {
    let rows = req.headers.get_all("Accept");
    if rows.is_empty() {
        return Ok(match producible.first() {
            Some(default) => (Some(default.clone()), vec![default.clone()]),
            None => (None, vec!["*/*".to_string()]),
        });
    }
    let mut ranges = Vec::new();
    for row in rows {
        let parsed = parse_accept(row)
            .map_err(|e| Negotiation::Bad(format!("Bad Accept Header ({})", e.detail)))?;
        ranges.extend(parsed);
    }
    if producible.is_empty() {
        return Ok((None, ranges));
    }
    // An empty Accept means no body type is acceptable (RFC 3261 §20.1).
    let chosen = producible
        .iter()
        .find(|t| ranges.iter().any(|r| range_covers(r, t)))
        .cloned()
        .ok_or(Negotiation::NotAcceptable)?;
    Ok((Some(chosen), ranges))
}

fn range_covers(range: &str, media: &str) -> bool {
    let range = range.trim().to_ascii_lowercase();
    if range == "*/*" || range == media {
        return true;
    }
    match range.strip_suffix("/*") {
        Some(top) => media.split('/').next() == Some(top),
        None => false,
    }
}

fn acceptable(accept: &[String], content_type: &str) -> bool {
    let media = media_type(content_type);
    accept.iter().any(|r| range_covers(r, &media))
}

/// The first Contact URI of the request (`*` is not a valid target).
fn subscriber_contact(req: &Request) -> Result<Option<String>, String> {
    let Some(raw) = req.headers.get("Contact") else {
        return Ok(None);
    };
    if raw.trim() == "*" {
        return Err("Bad Contact Header (*)".into());
    }
    let list = NameAddr::parse_list("Contact", raw)
        .map_err(|e| format!("Bad Contact Header ({})", e.detail))?;
    Ok(list.into_iter().next().map(|c| c.uri))
}

/// The Record-Route entries in order: the UAS route set (RFC 3261 §12.1.1).
fn record_route(req: &Request) -> Result<Vec<NameAddr>, String> {
    let mut out = Vec::new();
    for row in req.headers.get_all("Record-Route") {
        let list = NameAddr::parse_list("Record-Route", row)
            .map_err(|e| format!("Bad Record-Route Header ({})", e.detail))?;
        out.extend(list);
    }
    Ok(out)
}

/// Whether a URI (without angle brackets) has the URI parameter `name` (`;lr`).
fn uri_has_param(uri: &str, name: &str) -> bool {
    let without_headers = uri.split('?').next().unwrap_or("");
    without_headers.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(name)
    })
}

/// A route URI usable as a Request-URI: parameters not allowed there are `method` and
/// header components (RFC 3261 §12.2.1.1, Table 1); we keep the rest.
fn strip_uri_params_for_ruri(uri: &str) -> String {
    let without_headers = uri.split('?').next().unwrap_or("");
    let mut parts = without_headers.split(';');
    let mut out = parts.next().unwrap_or("").to_string();
    for p in parts {
        let name = p.split('=').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("method") {
            out.push(';');
            out.push_str(p);
        }
    }
    out
}

/// Our answer to a SUBSCRIBE: [`response_to`] (RFC 3261 §8.2.6) plus a To-tag when the request had none
/// (RFC 3261 §8.2.6.2; `tag` is drawn only then) and a Server header.
fn reply_tagged(
    req: &Request,
    status: u16,
    reason: &str,
    tag: impl FnOnce() -> String,
    server: &str,
) -> Response {
    let mut resp = response_to(req, status, reason);
    if let Some(to) = req.headers.get("To") {
        // An unparsable To cannot be tagged safely; it is echoed as received.
        let untagged = NameAddr::parse("To", to).is_ok_and(|t| t.tag().is_none());
        if untagged {
            resp.headers
                .set("To", format!("{};tag={}", to.trim(), tag()));
        }
    }
    resp.headers.push("Server", server);
    resp
}

// ----- persistence -------------------------------------------------------------------

/// The JSON record of one notifier dialog (the `data` column of `notifier_dialogs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DialogRecord {
    version: u32,
    owner: String,
    call_id: String,
    local: StoredNameAddr,
    remote: StoredNameAddr,
    remote_target: String,
    route_set: Vec<StoredNameAddr>,
    event_package: String,
    event_params: Vec<(String, Option<String>)>,
    presentity: String,
    watcher: String,
    /// `pending` or `active`.
    state: String,
    expires_at_ms: u64,
    local_cseq: u32,
    remote_cseq: u32,
    accept: Vec<String>,
    content_type: Option<String>,
    body_type: Option<String>,
    /// UTF-8 text when the body is text (operators can read it), else hex.
    body_text: Option<String>,
    body_hex: Option<String>,
    subscriber_transport: String,
    subscriber_addr: String,
    /// Absent in rows written before it existed: the configured interval applies.
    #[serde(default)]
    min_interval_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredNameAddr {
    display: Option<String>,
    uri: String,
    params: Vec<(String, Option<String>)>,
}

impl From<&NameAddr> for StoredNameAddr {
    fn from(n: &NameAddr) -> Self {
        StoredNameAddr {
            display: n.display.clone(),
            uri: n.uri.clone(),
            params: n.params.0.clone(),
        }
    }
}

impl From<StoredNameAddr> for NameAddr {
    fn from(s: StoredNameAddr) -> Self {
        NameAddr {
            display: s.display,
            uri: s.uri,
            params: Params(s.params),
        }
    }
}

impl DialogRecord {
    fn from_dialog(d: &Dialog) -> Self {
        let (body_type, body_text, body_hex) = match &d.body {
            None => (None, None, None),
            Some(b) => match std::str::from_utf8(&b.bytes) {
                Ok(text) => (Some(b.content_type.clone()), Some(text.to_string()), None),
                Err(_) => (
                    Some(b.content_type.clone()),
                    None,
                    Some(hex::encode(&b.bytes)),
                ),
            },
        };
        DialogRecord {
            version: RECORD_VERSION,
            owner: d.owner.clone(),
            call_id: d.call_id.clone(),
            local: (&d.local).into(),
            remote: (&d.remote).into(),
            remote_target: d.remote_target.clone(),
            route_set: d.route_set.iter().map(Into::into).collect(),
            event_package: d.event.package.clone(),
            event_params: d.event.params.0.clone(),
            presentity: d.presentity.clone(),
            watcher: d.watcher.clone(),
            state: match d.phase {
                Phase::Active => "active",
                _ => "pending",
            }
            .to_string(),
            expires_at_ms: d.expires_at.as_millis(),
            local_cseq: d.local_cseq,
            remote_cseq: d.remote_cseq,
            accept: d.accept.clone(),
            content_type: d.content_type.clone(),
            body_type,
            body_text,
            body_hex,
            subscriber_transport: d.subscriber.transport.as_str().to_string(),
            subscriber_addr: d.subscriber.addr.to_string(),
            min_interval_ms: Some(d.min_interval.as_millis().min(u128::from(u64::MAX)) as u64),
        }
    }

    fn into_dialog(self, id: NotifierDialogId, default_interval: Duration) -> Option<Dialog> {
        if self.version != RECORD_VERSION {
            return None;
        }
        let phase = match self.state.as_str() {
            "active" => Phase::Active,
            "pending" => Phase::Pending,
            _ => return None,
        };
        let transport = match self.subscriber_transport.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            _ => return None,
        };
        let addr: SocketAddr = self.subscriber_addr.parse().ok()?;
        let body = match (self.body_type, self.body_text, self.body_hex) {
            (Some(ct), Some(text), _) => Some(Body::new(ct, text.into_bytes())),
            (Some(ct), None, Some(h)) => Some(Body::new(ct, hex::decode(h).ok()?)),
            _ => None,
        };
        let local: NameAddr = self.local.into();
        local.tag()?;
        Some(Dialog {
            id,
            owner: self.owner,
            call_id: self.call_id,
            local,
            remote: self.remote.into(),
            remote_target: self.remote_target,
            route_set: self.route_set.into_iter().map(Into::into).collect(),
            event: EventHeader {
                package: self.event_package,
                params: Params(self.event_params),
            },
            presentity: self.presentity,
            watcher: self.watcher,
            phase,
            expires_at: Timestamp::from_millis(self.expires_at_ms),
            // Write-behind margin: the last CSeq sent is below stored + CSEQ_STRIDE.
            local_cseq: self.local_cseq.saturating_add(CSEQ_STRIDE),
            remote_cseq: self.remote_cseq,
            accept: self.accept,
            content_type: self.content_type,
            body,
            subscriber: Peer { transport, addr },
            min_interval: self
                .min_interval_ms
                .map(Duration::from_millis)
                .unwrap_or(default_interval),
            durable: true,
            outstanding: false,
            needs_notify: false,
            urgent: false,
            last_notify_at: None,
        })
    }
}

/// Removes `id` from the set under `key`, dropping the set when it empties.
fn unindex(
    index: &mut HashMap<String, BTreeSet<NotifierDialogId>>,
    key: &str,
    id: NotifierDialogId,
) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialog_id_key_round_trips() {
        let id = NotifierDialogId(0xdead_beef);
        assert_eq!(NotifierDialogId::parse(&id.key()), Some(id));
    }

    #[test]
    fn lr_is_found_among_uri_params() {
        assert!(uri_has_param("sip:p.example;transport=udp;lr", "lr"));
        assert!(!uri_has_param("sip:p.example;transport=udp", "lr"));
    }

    #[test]
    fn range_with_wildcard_subtype_covers_its_type() {
        assert!(range_covers("application/*", "application/pidf+xml"));
        assert!(!range_covers("text/*", "application/pidf+xml"));
    }

    #[test]
    fn notify_failure_codes_follow_rfc6665() {
        for code in [404, 405, 410, 416, 480, 481, 485, 489, 501, 604] {
            assert!(ends_subscription(code), "{code}");
        }
        for code in [200, 408, 486, 500, 503, 603] {
            assert!(!ends_subscription(code), "{code}");
        }
    }

    #[test]
    fn remaining_seconds_round_up() {
        assert_eq!(ceil_secs(Timestamp(0), Timestamp(1)), 1);
        assert_eq!(ceil_secs(Timestamp(0), Timestamp(3_600_000)), 3600);
        assert_eq!(ceil_secs(Timestamp(10), Timestamp(5)), 0);
    }
}
