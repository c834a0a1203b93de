//! The presence user agent service: outgoing publications (RFC 3903) and client
//! subscriptions (RFC 6665) that every module uses through its context
//! (`modules::ModuleCtx`), never directly from the wire.
//!
//! Contract:
//! - [`PuaService::publish`] creates or changes a publication keyed by (owner, presentity,
//!   event); only one PUBLISH per publication is outstanding and changes arriving meanwhile
//!   are coalesced to the latest (standards.md §10, §16 case 67).
//! - [`PuaService::subscribe`] starts a subscription; [`PuaService::unsubscribe`] ends it with
//!   an in-dialog `Expires: 0` (RFC 6665 §4.1.2.3).
//! - Results come back to the owning module as [`PuaEvent`]s, drained by the engine after
//!   every input ([`PuaService::take_events`]).
//! - Every change of a record is written as a `StoreOp` before the output that depends on it.

use std::collections::{BTreeMap, HashMap, VecDeque};

mod local;
pub mod publisher;
pub mod subscriber;

use super::module_id::ModuleId;
use super::persist::{StoreTable, StoredRow};
use super::services::{Services, TxOwner};
use super::sip::headers::SubState;
use super::sip::message::{Request, Response};
use super::sip::transaction::{ClientTxId, ServerTxId};
use super::time::Timestamp;
use super::views::{PublicationView, SubscriptionView};
use crate::core::presence::Body;
use publisher::{PubChange, Publication, PublicationRecord};
use subscriber::{Subscription, SubscriptionRecord};

pub use super::handles::{PuaTimer, PublicationId, SubscriptionId};

/// What a module asks to publish (pua `publ_info_t`, anchors.md §1.3).
#[derive(Clone, Debug, PartialEq)]
pub struct PublishRequest {
    pub owner: ModuleId,
    /// The presentity URI: Request-URI, To and From of the PUBLISH.
    pub presentity: String,
    /// The Event header value (`presence`, `dialog;sla`).
    pub event: String,
    pub content_type: Option<String>,
    /// `None` keeps the current document (a refresh), `Some` replaces it (a modify).
    pub body: Option<Vec<u8>>,
    /// `None`: no time limit, refreshed until removed; `Some(0)`: remove;
    /// `Some(n)`: the publication should live `n` seconds.
    pub expires: Option<u32>,
    /// An operator-given entity-tag: it must match the publication's current one.
    pub etag: Option<String>,
    pub extra_headers: Vec<(String, String)>,
    /// Tells apart several publications of one owner for one presentity and event (bla:
    /// one per phone of a line); `None` for the owner's only one.
    pub instance: Option<String>,
    /// Who the state is about, for the presence agent's sender exclusion (pua_bla's
    /// `Sender`): the configured sender header of a PUBLISH, the sender of a local one.
    pub sender: Option<String>,
}

/// Local refusals of [`PuaService::publish`], with the pua_mi-compatible codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// `418 Wrong ETag`: an entity-tag was given but no publication carries it.
    #[error("no publication carries entity-tag {0}")]
    UnknownEtag(String),
    /// A new publication needs a body (RFC 3903 §4.2: the initial PUBLISH carries state).
    #[error("a new publication needs a body")]
    NoBody,
    /// Removal (`expires 0`) of a publication that does not exist.
    #[error("no such publication")]
    NoRecord,
}

impl PublishError {
    /// The SIP-style code pua_mi answers with (anchors.md §1.4).
    pub fn code(&self) -> u16 {
        match self {
            PublishError::UnknownEtag(_) => 418,
            PublishError::NoBody => 400,
            PublishError::NoRecord => 404,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::UnknownEtag(_) => "Wrong ETag",
            PublishError::NoBody => "Body Required",
            PublishError::NoRecord => "No Such Publication",
        }
    }
}

/// What a module asks to subscribe to (pua `subs_info_t`).
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeRequest {
    pub owner: ModuleId,
    /// The resource: Request-URI and To of the SUBSCRIBE.
    pub presentity: String,
    /// The subscriber: From of the SUBSCRIBE.
    pub watcher: String,
    /// Contact of our dialog; `None` uses the engine's contact URI.
    pub contact: Option<String>,
    /// The Event header value (`presence`, `presence.winfo`, `dialog`, `dialog;sla`).
    pub event: String,
    /// `None`: the configured default, refreshed until unsubscribed; `Some(n)`: ask for
    /// `n` seconds and keep the subscription for that long (unless `refresh_until_unsubscribed`).
    pub expires: Option<u32>,
    /// The Request-URI of a new dialog when it is not the presentity (bla: the phone's
    /// contact, while To is the line).
    pub target: Option<String>,
    /// The first hop of every request of this subscription while it has no route set,
    /// instead of the outbound proxy (a URI whose host and port are used: a phone's
    /// registered source, an external registrar).
    pub next_hop: Option<String>,
    /// With `expires: Some(n)`: ask for `n` seconds on every SUBSCRIBE and refresh until
    /// unsubscribed, instead of letting the subscription end after `n` seconds. The
    /// management API uses it: an operator's subscription is held and refreshed.
    pub refresh_until_unsubscribed: bool,
}

/// Why a subscription ended or was replaced.
#[derive(Clone, Debug, PartialEq)]
pub enum SubscriptionEnd {
    /// A final response to a SUBSCRIBE (`code`), or a local failure (408 for Timer F/N).
    Response { code: u16, reason: String },
    /// A NOTIFY `Subscription-State: terminated` (RFC 6665 §4.1.3).
    Notified(SubState),
    /// Timer N fired without a NOTIFY (RFC 6665 §4.1.2.4).
    NoNotify,
    /// The owner unsubscribed and the notifier accepted.
    Unsubscribed,
    /// The granted interval ran out.
    Expired,
}

/// Events the PUA hands back to the module that owns a publication or subscription.
#[derive(Clone, Debug, PartialEq)]
pub enum PuaEvent {
    /// A PUBLISH operation settled: a 2xx, or a failure not recovered internally (412 and
    /// 423 are recovered before this event). `op_seq` is the latest caller operation the
    /// answered request carried (see [`PuaService::publication_op_seq`]).
    PublishResult {
        id: PublicationId,
        op_seq: u64,
        code: u16,
        reason: String,
        etag: Option<String>,
        expires: Option<u32>,
        /// Whether the publication still exists (it is retried or refreshed).
        alive: bool,
    },
    /// The final response to a SUBSCRIBE (initial, refresh or unsubscribe), after 423 and
    /// digest retries.
    SubscribeResult {
        id: SubscriptionId,
        code: u16,
        reason: String,
    },
    /// A NOTIFY was accepted (answered 200) on the subscription.
    Notify {
        id: SubscriptionId,
        state: SubState,
        body: Body,
    },
    /// The subscription's dialog ended. With `retry_at` the PUA re-subscribes on a new
    /// dialog at that time; without it the subscription is gone.
    SubscriptionEnded {
        id: SubscriptionId,
        end: SubscriptionEnd,
        retry_at: Option<Timestamp>,
    },
}

/// The identity of a publication among its owner's: owner, presentity, event (ASCII
/// lowercase) and instance. One publication per key, for the remote and for the local
/// ones alike; the index saves a scan of every publication on each publish.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PubKey(String, String, String, Option<String>);

impl PubKey {
    pub(crate) fn new(owner: &str, presentity: &str, event: &str, instance: Option<&str>) -> Self {
        PubKey(
            owner.to_string(),
            presentity.to_string(),
            event.to_ascii_lowercase(),
            instance.map(str::to_string),
        )
    }
}

/// Publications and client subscriptions of every module.
#[derive(Debug, Default)]
pub struct PuaService {
    pub(crate) publications: BTreeMap<PublicationId, Publication>,
    /// [`PubKey`] → remote publication (kept in step by `insert_publication` /
    /// `remove_publication`).
    pub_index: HashMap<PubKey, PublicationId>,
    /// [`PubKey`] → local publication.
    local_index: HashMap<PubKey, PublicationId>,
    pub(crate) subscriptions: BTreeMap<SubscriptionId, Subscription>,
    /// Call-ID → subscription, so an incoming NOTIFY finds its subscription in one lookup
    /// instead of a scan of every subscription. Kept in step by [`Self::reindex`] after
    /// every call that may start a new dialog or drop the subscription.
    by_call_id: HashMap<String, SubscriptionId>,
    next_id: u64,
    events: VecDeque<(ModuleId, PuaEvent)>,
    /// Publications of modules into the local presence state service (no SIP hop).
    local_publications: BTreeMap<PublicationId, local::LocalPublication>,
}

/// Where an incoming NOTIFY went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Answered (200 or an error) by the PUA.
    Answered,
}

impl PuaService {
    pub fn new() -> Self {
        Self::default()
    }

    fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Drains the events for modules, oldest first.
    pub fn take_events(&mut self) -> Vec<(ModuleId, PuaEvent)> {
        self.events.drain(..).collect()
    }

    pub(crate) fn emit(&mut self, owner: ModuleId, ev: PuaEvent) {
        self.events.push_back((owner, ev));
    }

    // ----- publications (RFC 3903) -----

    /// Creates, modifies, refreshes or removes the publication of `(owner, presentity,
    /// event)`. See [`PublishRequest`] for the meaning of the fields.
    pub fn publish(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        req: PublishRequest,
    ) -> Result<PublicationId, PublishError> {
        if svc.site.serves(&req.presentity) && local::publishable(&req.event) {
            return self.publish_local(svc, now, req);
        }
        let existing = self
            .pub_index
            .get(&PubKey::new(
                req.owner.as_str(),
                &req.presentity,
                &req.event,
                req.instance.as_deref(),
            ))
            .copied();
        if let Some(etag) = &req.etag {
            // pua_mi: an entity-tag that no record carries is a local 418 (anchors.md §1.4).
            let ok = existing
                .and_then(|id| self.publications.get(&id))
                .is_some_and(|p| p.etag() == Some(etag.as_str()));
            if !ok {
                return Err(PublishError::UnknownEtag(etag.clone()));
            }
        }
        let change = PubChange {
            content_type: req.content_type.clone(),
            body: req.body.clone(),
            expires: req.expires,
            extra_headers: req.extra_headers.clone(),
        };
        match existing {
            Some(id) => {
                let Some(p) = self.publications.get_mut(&id) else {
                    return Err(PublishError::NoRecord);
                };
                let mut events = Vec::new();
                let keep = p.change(svc, now, change, &mut events);
                let owner = p.owner;
                if !keep {
                    self.remove_publication(id);
                }
                for ev in events {
                    self.emit(owner, ev);
                }
                Ok(id)
            }
            None => {
                if req.expires == Some(0) {
                    return Err(PublishError::NoRecord);
                }
                if req.body.is_none() {
                    return Err(PublishError::NoBody);
                }
                let id = PublicationId(self.alloc_id());
                let mut p = Publication::new(id, &req, svc, now);
                let mut events = Vec::new();
                let keep = p.start(svc, now, &mut events);
                if keep {
                    self.insert_publication(id, p);
                }
                for ev in events {
                    self.emit(req.owner, ev);
                }
                Ok(id)
            }
        }
    }

    /// The sequence number of the latest caller operation on a publication; a
    /// [`PuaEvent::PublishResult`] with `op_seq` at or above it settles that operation.
    pub fn publication_op_seq(&self, id: PublicationId) -> Option<u64> {
        self.publications
            .get(&id)
            .map(|p| p.op_seq())
            .or_else(|| self.local_publications.get(&id).map(|p| p.op_seq))
    }

    fn insert_publication(&mut self, id: PublicationId, p: Publication) {
        self.pub_index.insert(p.key(), id);
        self.publications.insert(id, p);
    }

    fn remove_publication(&mut self, id: PublicationId) {
        if let Some(p) = self.publications.remove(&id) {
            self.pub_index.remove(&p.key());
        }
    }

    pub(super) fn insert_local(&mut self, id: PublicationId, rec: local::LocalPublication) {
        self.local_index.insert(rec.key(), id);
        self.local_publications.insert(id, rec);
    }

    pub(super) fn remove_local(&mut self, id: PublicationId) {
        if let Some(rec) = self.local_publications.remove(&id) {
            self.local_index.remove(&rec.key());
        }
    }

    pub(super) fn find_local(&self, key: &PubKey) -> Option<PublicationId> {
        self.local_index.get(key).copied()
    }

    pub fn find_publication(
        &self,
        owner: ModuleId,
        presentity: &str,
        event: &str,
    ) -> Option<PublicationId> {
        self.publications
            .iter()
            .find(|(_, p)| p.matches(owner, presentity, event, None))
            .map(|(id, _)| *id)
    }

    /// Whether any publication of `presentity`/`event` carries `etag`.
    pub fn etag_known(&self, presentity: &str, event: &str, etag: &str) -> bool {
        self.publications
            .values()
            .any(|p| p.presentity() == presentity && p.event() == event && p.etag() == Some(etag))
            || self.local_publications.values().any(|p| {
                p.presentity == crate::core::local_site::aor(presentity)
                    && p.event == event
                    && p.etag == etag
            })
    }

    pub fn publication_views(&self, now: Timestamp) -> Vec<PublicationView> {
        let mut v: Vec<PublicationView> = self.publications.values().map(|p| p.view(now)).collect();
        v.extend(
            self.local_publications
                .iter()
                .map(|(id, p)| p.view(*id, now)),
        );
        v
    }

    // ----- subscriptions (RFC 6665) -----

    /// Starts a subscription: an initial SUBSCRIBE goes out at once, or, for a
    /// `presence` subscription to a presentity of a locally served domain, the watcher is
    /// attached to the local presence state service directly (no SIP hop; see
    /// [`Self::subscribe_local`]).
    pub fn subscribe(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        req: SubscribeRequest,
    ) -> SubscriptionId {
        if req.event.trim().eq_ignore_ascii_case("presence") && svc.site.serves(&req.presentity) {
            return self.subscribe_local(svc, req);
        }
        let id = SubscriptionId(self.alloc_id());
        let mut s = Subscription::new(id, req, svc);
        let mut events = Vec::new();
        let keep = s.start(svc, now, &mut events);
        let owner = s.owner;
        if keep {
            self.subscriptions.insert(id, s);
            self.reindex(id, None);
        }
        for ev in events {
            self.emit(owner, ev);
        }
        id
    }

    /// Brings the Call-ID index in step with subscription `id` after a call that may have
    /// changed its dialog (`old` is its Call-ID before the call) or removed it.
    fn reindex(&mut self, id: SubscriptionId, old: Option<String>) {
        let now = self
            .subscriptions
            .get(&id)
            .map(|s| s.call_id().to_string())
            .filter(|c| !c.is_empty());
        if let Some(old) = old.filter(|o| now.as_ref() != Some(o)) {
            if self.by_call_id.get(&old) == Some(&id) {
                self.by_call_id.remove(&old);
            }
        }
        if let Some(now) = now {
            self.by_call_id.insert(now, id);
        }
    }

    fn call_id_of(&self, id: SubscriptionId) -> Option<String> {
        self.subscriptions.get(&id).map(|s| s.call_id().to_string())
    }

    /// Ends a subscription: an in-dialog `SUBSCRIBE Expires: 0` when a dialog exists
    /// (standards.md §16 case 28), else it is dropped locally. Returns whether it existed.
    pub fn unsubscribe(&mut self, svc: &mut Services, now: Timestamp, id: SubscriptionId) -> bool {
        if self.unsubscribe_local(svc, id) {
            return true;
        }
        self.drive_subscription(id, |s, events| s.unsubscribe(svc, now, events))
    }

    /// Refreshes subscription `id` at once (RFC 6665 §4.1.2.2): an in-dialog SUBSCRIBE,
    /// which makes the notifier send full state, or a new dialog when it has none. Used
    /// when a NOTIFY showed a version gap (RFC 4235 §4.1). Nothing happens while a
    /// SUBSCRIBE of it is in flight. Returns whether the subscription exists.
    pub fn refresh(&mut self, svc: &mut Services, now: Timestamp, id: SubscriptionId) -> bool {
        self.drive_subscription(id, |s, events| s.on_timer(svc, now, events))
    }

    /// Runs `step` on subscription `id` (which returns whether the record stays), then
    /// drops it if not, re-indexes its Call-ID and emits its events to the owner. Returns
    /// whether the subscription existed.
    fn drive_subscription(
        &mut self,
        id: SubscriptionId,
        step: impl FnOnce(&mut Subscription, &mut Vec<PuaEvent>) -> bool,
    ) -> bool {
        let old = self.call_id_of(id);
        let Some(s) = self.subscriptions.get_mut(&id) else {
            return false;
        };
        let mut events = Vec::new();
        let keep = step(s, &mut events);
        let owner = s.owner;
        if !keep {
            self.subscriptions.remove(&id);
        }
        self.reindex(id, old);
        for ev in events {
            self.emit(owner, ev);
        }
        true
    }

    pub fn find_subscription(
        &self,
        owner: ModuleId,
        presentity: &str,
        watcher: &str,
        event: &str,
    ) -> Option<SubscriptionId> {
        self.subscriptions
            .iter()
            .find(|(_, s)| s.owner == owner && s.matches(presentity, watcher, event))
            .map(|(id, _)| *id)
    }

    pub fn subscription(&self, id: SubscriptionId) -> Option<&Subscription> {
        self.subscriptions.get(&id)
    }

    pub fn subscription_views(&self, now: Timestamp) -> Vec<SubscriptionView> {
        self.subscriptions.values().map(|s| s.view(now)).collect()
    }

    pub fn publication_count(&self) -> usize {
        self.publications.len() + self.local_publications.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    // ----- engine entry points -----

    /// A final response (or `None` for a timeout / transport failure, treated as 408) to a
    /// request the PUA sent.
    pub fn on_response(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        owner: TxOwner,
        tx: ClientTxId,
        response: Option<&Response>,
    ) {
        let mut events = Vec::new();
        match owner {
            TxOwner::Publication(id) => {
                let Some(p) = self.publications.get_mut(&id) else {
                    return;
                };
                let keep = p.on_response(svc, now, tx, response, &mut events);
                let o = p.owner;
                if !keep {
                    self.remove_publication(id);
                }
                events.into_iter().for_each(|e| self.emit(o, e));
            }
            TxOwner::Subscription(id) => {
                let old = self.call_id_of(id);
                let Some(s) = self.subscriptions.get_mut(&id) else {
                    return;
                };
                let keep = s.on_response(svc, now, tx, response, &mut events);
                let o = s.owner;
                if !keep {
                    self.subscriptions.remove(&id);
                }
                self.reindex(id, old);
                events.into_iter().for_each(|e| self.emit(o, e));
            }
            TxOwner::Notifier(_) | TxOwner::Module(..) => {}
        }
    }

    /// A request was re-sent with credentials on a new transaction (RFC 3261 §22.2): the
    /// owner follows the new transaction and CSeq.
    pub fn on_resent(&mut self, owner: TxOwner, old: ClientTxId, new: ClientTxId, cseq: u32) {
        match owner {
            TxOwner::Publication(id) => {
                if let Some(p) = self.publications.get_mut(&id) {
                    p.on_resent(old, new, cseq);
                }
            }
            TxOwner::Subscription(id) => {
                if let Some(s) = self.subscriptions.get_mut(&id) {
                    s.on_resent(old, new, cseq);
                }
            }
            TxOwner::Notifier(_) | TxOwner::Module(..) => {}
        }
    }

    pub fn on_timer(&mut self, svc: &mut Services, now: Timestamp, timer: PuaTimer) {
        let mut events = Vec::new();
        match timer {
            PuaTimer::Publication(id) if self.local_publications.contains_key(&id) => {
                self.refresh_local(svc, now, id);
            }
            PuaTimer::Publication(id) => {
                let Some(p) = self.publications.get_mut(&id) else {
                    return;
                };
                let keep = p.on_timer(svc, now, &mut events);
                let o = p.owner;
                if !keep {
                    self.remove_publication(id);
                }
                events.into_iter().for_each(|e| self.emit(o, e));
            }
            PuaTimer::Subscription(id) | PuaTimer::TimerN(id) => {
                let old = self.call_id_of(id);
                let Some(s) = self.subscriptions.get_mut(&id) else {
                    return;
                };
                let keep = if matches!(timer, PuaTimer::TimerN(_)) {
                    s.on_timer_n(svc, now, &mut events)
                } else {
                    s.on_timer(svc, now, &mut events)
                };
                let o = s.owner;
                if !keep {
                    self.subscriptions.remove(&id);
                }
                self.reindex(id, old);
                events.into_iter().for_each(|e| self.emit(o, e));
            }
        }
    }

    /// Whether a NOTIFY belongs to one of our subscriptions (Call-ID and To-tag = our
    /// From-tag, RFC 6665 §4.4.1).
    pub fn owns_notify(&self, call_id: &str, to_tag: Option<&str>) -> Option<SubscriptionId> {
        let id = *self.by_call_id.get(call_id)?;
        self.subscriptions
            .get(&id)
            .filter(|s| s.matches_notify(call_id, to_tag))
            .map(|_| id)
    }

    /// Handles a NOTIFY that [`Self::owns_notify`] matched; answers it on `stx`.
    pub fn on_notify(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        id: SubscriptionId,
        stx: ServerTxId,
        req: &Request,
    ) -> NotifyOutcome {
        let mut events = Vec::new();
        let old = self.call_id_of(id);
        let Some(s) = self.subscriptions.get_mut(&id) else {
            svc.reply(now, stx, req, 481, "Subscription Does Not Exist", |_| {});
            return NotifyOutcome::Answered;
        };
        let keep = s.on_notify(svc, now, stx, req, &mut events);
        let o = s.owner;
        if !keep {
            self.subscriptions.remove(&id);
        }
        self.reindex(id, old);
        events.into_iter().for_each(|e| self.emit(o, e));
        NotifyOutcome::Answered
    }

    /// Rows from the store at start: rebuilds records and schedules their refreshes in
    /// place (restored publications keep their ETag, subscriptions their dialog).
    pub fn restore(&mut self, svc: &mut Services, now: Timestamp, rows: &[StoredRow]) {
        let mut slot = now;
        for row in rows {
            match row.table {
                StoreTable::Publications if row.data.get("local").is_some() => {
                    self.restore_local_publication(svc, now, row)
                }
                StoreTable::Publications => {
                    match serde_json::from_value::<PublicationRecord>(row.data.clone()) {
                        Ok(rec) => {
                            let Some(owner) = ModuleId::parse(&rec.owner) else {
                                tracing::warn!(key = %row.key, owner = %rec.owner, "restored publication of an unknown module, dropped");
                                continue;
                            };
                            let id = PublicationId(rec.id);
                            self.next_id = self.next_id.max(rec.id);
                            let mut p = Publication::from_record(owner, rec);
                            p.resume(svc, now, &mut slot);
                            self.insert_publication(id, p);
                        }
                        Err(e) => {
                            tracing::warn!(key = %row.key, error = %e, "unreadable publication row, ignored")
                        }
                    }
                }
                StoreTable::Subscriptions if row.data.get("local").is_some() => {
                    self.restore_local(svc, row)
                }
                StoreTable::Subscriptions => {
                    match serde_json::from_value::<SubscriptionRecord>(row.data.clone()) {
                        Ok(rec) => {
                            let Some(owner) = ModuleId::parse(&rec.owner) else {
                                tracing::warn!(key = %row.key, owner = %rec.owner, "restored subscription of an unknown module, dropped");
                                continue;
                            };
                            let id = SubscriptionId(rec.id);
                            self.next_id = self.next_id.max(rec.id);
                            let mut s = Subscription::from_record(owner, rec);
                            s.resume(svc, now, &mut slot);
                            self.subscriptions.insert(id, s);
                            self.reindex(id, None);
                        }
                        Err(e) => {
                            tracing::warn!(key = %row.key, error = %e, "unreadable subscription row, ignored")
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
