//! The presence state service: where presentity state lives in the embedded SIP presence
//! agent. Per presentity and event it keeps the publications (entity-tag, expiry, body)
//! and composes the document watchers get; it is the Event State Compositor of RFC 3903.
//!
//! Pure (architecture habit 1, 5): time ([`Timestamp`]) and entity-tags ([`IdGenerator`])
//! are inputs; durability is output as [`StoreOp`]s the caller performs before answering.
//! It depends only on `core::presence` (body validation), `core::sip::headers`
//! (`EventHeader`), `core::ids`, `core::time` and `core::persist`.
//!
//! Contract for the caller (the presence agent module):
//! * `PUBLISH` → [`PresenceState::publish`]; answer 200 with `SIP-ETag` and `Expires` from
//!   [`Accepted`], or the [`Refusal`]'s code with its `Min-Expires` / `Retry-After`. Perform
//!   the returned store ops first. If `changed`, notify the watchers of that presentity and
//!   event with [`PresenceState::document`].
//! * Sleep until [`PresenceState::next_deadline`], then call
//!   [`PresenceState::handle_timeout`]; notify each [`Changed`].
//! * At start, hand every `StoreTable::PresentityPublications` row to
//!   [`PresenceState::restore`], then call `handle_timeout(now)` to drop what expired while
//!   down.
//!
//! Composition policy: [`compose`] module documentation and
//! `docs/presence-agent-composition.md`.

pub mod compose;
mod event;
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::ids::IdGenerator;
use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::presence::media_type;
use crate::core::sip::headers::EventHeader;
use crate::core::time::Timestamp;

pub use compose::{compose_bodies, stamp_dialog_info_version};
use compose::{read_body, DocKind};
pub use event::EventKey;
use tree::Elem;

/// The `owner` of the rows this service writes (`StoreOp::Put::owner`); `restore` only
/// takes rows of this owner.
pub const STORE_OWNER: &str = "presence_agent";

/// Limits of the compositor (RFC 3903 §6 leaves all of them to local policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceStateConfig {
    /// A non-zero `Expires` below this is answered 423 with `Min-Expires` (RFC 3903 §6
    /// step 4).
    pub min_expires: u32,
    /// A longer `Expires` is shortened to this (RFC 3903 §6 step 4: the ESC may shorten).
    pub max_expires: u32,
    /// Used when the PUBLISH has no `Expires` (RFC 3903 sets no package default); capped
    /// at `max_expires`.
    pub default_expires: u32,
    /// Most live publications of one presentity, all events together; one more is
    /// answered 503 with `Retry-After` (RFC 3903 §6 leaves overload to the ESC).
    pub max_publications_per_presentity: usize,
    /// Largest body accepted; larger is 413.
    pub max_body_bytes: usize,
}

impl Default for PresenceStateConfig {
    fn default() -> Self {
        PresenceStateConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_publications_per_presentity: 16,
            max_body_bytes: 65536,
        }
    }
}

/// The origin of publications derived from registrations (the `usrloc` module): their
/// tuples give way to a device's own (see `compose`, Derived tuples).
pub const DERIVED_ORIGIN: &str = "usrloc";

/// One PUBLISH as the compositor needs it (RFC 3903 §4). The caller has already answered
/// 404 for an unknown Request-URI (step 1) and parsed the headers.
#[derive(Clone, Copy, Debug)]
pub struct PublishInput<'a> {
    /// The presentity, a normalised AOR (`sip:user@domain`).
    pub presentity: &'a str,
    /// The `Event` header.
    pub event: &'a EventHeader,
    /// Every `SIP-IfMatch` value (RFC 3903 §11.3.2), one entry per tag.
    pub if_match: &'a [String],
    /// The `Expires` header, if any.
    pub expires: Option<u32>,
    /// The `Content-Type` header value, parameters allowed.
    pub content_type: Option<&'a str>,
    /// The body; empty (or only white space) means none.
    pub body: &'a [u8],
    /// The value of a configured sender header (pua_bla's `Sender`), if present: lets
    /// [`PresenceState::document`] leave a device's own publications out.
    pub sender: Option<&'a str>,
    /// Who published: `"sip"` for a PUBLISH from the network, or a module name; shown in
    /// [`PublicationView`] only.
    pub origin: &'a str,
}

/// A successful PUBLISH (RFC 3903 §6 step 8: 200 OK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The `SIP-ETag` to answer: new on every success, refreshes included (§6 step 8).
    pub etag: String,
    /// The `Expires` to answer (the granted interval, 0 for a removal).
    pub expires: u32,
    /// Whether some watcher's view of the composed document changed: the full document,
    /// or the document without the publications of some sender (see
    /// [`PresenceState::document`]). The caller notifies watchers only when true.
    pub changed: bool,
}

/// A refused PUBLISH; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status code: 400, 412, 413, 415, 423, 489 or 503.
    pub code: u16,
    /// A reason phrase (no CR/LF).
    pub reason: String,
    /// For 423: the `Min-Expires` to send (RFC 3903 §6 step 4, RFC 3261 §20.23).
    pub min_expires: Option<u32>,
    /// For 503: the `Retry-After` to send, in seconds: until this presentity's first
    /// publication expires (at least 1).
    pub retry_after: Option<u32>,
}

/// A composed document that changed by itself (publications expired).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Changed {
    pub presentity: String,
    pub event: EventKey,
}

/// One publication, for the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicationView {
    pub presentity: String,
    pub event: String,
    pub etag: String,
    /// Whole seconds left.
    pub expires_in: u64,
    pub content_type: String,
    pub origin: String,
    pub sender: Option<String>,
}

/// The persisted form of one publication (`StoreTable::PresentityPublications`, key =
/// entity-tag). `body_seq` orders publications by when their body was last set, which is
/// what "newest" means in composition, so it must survive a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PublicationRecord {
    presentity: String,
    event: String,
    etag: String,
    content_type: String,
    body: String,
    /// Granted interval, seconds.
    expires: u32,
    /// Absolute expiry, ms since the epoch.
    expires_at: u64,
    body_seq: u64,
    origin: String,
    sender: Option<String>,
}

#[derive(Clone, Debug)]
struct Publication {
    content_type: String,
    body: String,
    doc: Elem,
    granted: u32,
    expires_at: Timestamp,
    body_seq: u64,
    origin: String,
    sender: Option<String>,
}

/// The publications of one presentity and event, by entity-tag.
type Slot = BTreeMap<String, Publication>;

/// The Event State Compositor (RFC 3903 §6) for `presence`, `dialog` and `dialog;sla`.
#[derive(Clone, Debug)]
pub struct PresenceState {
    cfg: PresenceStateConfig,
    state: BTreeMap<String, BTreeMap<EventKey, Slot>>,
    /// Entity-tag → where the publication lives.
    etags: BTreeMap<String, (String, EventKey)>,
    /// (expiry, entity-tag) of every publication.
    deadlines: BTreeSet<(Timestamp, String)>,
    /// Next body sequence number (see [`PublicationRecord`]).
    seq: u64,
}

fn refusal(code: u16, reason: impl Into<String>) -> Refusal {
    let reason: String = reason
        .into()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(160)
        .collect();
    Refusal {
        code,
        reason,
        min_expires: None,
        retry_after: None,
    }
}

fn is_blank(body: &[u8]) -> bool {
    body.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// What a successful PUBLISH does to the slot.
enum Action {
    /// Initial PUBLISH: a new publication.
    Create { text: String, doc: Elem },
    /// If-Match with a body: replace the document (and re-tag).
    Modify {
        old: String,
        text: String,
        doc: Elem,
    },
    /// If-Match without body: keep the document (and re-tag).
    Refresh { old: String },
    /// If-Match with Expires 0.
    Remove { old: String },
    /// No If-Match and Expires 0: nothing to keep; answered 200 with nothing stored.
    Nothing,
}

impl PresenceState {
    /// An empty compositor.
    pub fn new(cfg: PresenceStateConfig) -> Self {
        PresenceState {
            cfg,
            state: BTreeMap::new(),
            etags: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            seq: 1,
        }
    }

    /// Whether this service keeps state for `event`: `presence` (RFC 3856), `dialog`
    /// (RFC 4235) and `dialog;sla` (draft-anil-sipping-bla-03 §7). Others are 489
    /// (RFC 3903 §6 step 2).
    pub fn supports(event: &EventHeader) -> bool {
        DocKind::of(&EventKey::from_header(event)).is_some()
    }

    /// The only body type a supported event takes: `application/pidf+xml` (RFC 3903 §4,
    /// RFC 3863) or `application/dialog-info+xml` (RFC 4235 §4).
    pub fn body_type(event: &EventHeader) -> Option<&'static str> {
        DocKind::of(&EventKey::from_header(event)).map(DocKind::media_type)
    }

    /// Processes one PUBLISH (RFC 3903 §6), atomically: a refusal changes nothing and
    /// returns no store ops. Checks, in order:
    /// 1. event not supported → 489;
    /// 2. more than one `SIP-If-Match` → 400;
    /// 3. an `SIP-If-Match` that names no live publication of this presentity and event
    ///    (unknown, another presentity's, or expired) → 412;
    /// 4. `Expires`: absent → default (capped); `0 < Expires < min` → 423 with
    ///    `Min-Expires`; above max → capped;
    /// 5. a body whose type is not the event's (or has no type) → 415;
    /// 6. neither body nor `SIP-If-Match` → 400;
    /// 7. a body over `max_body_bytes` → 413 (before parsing it);
    /// 8. a body that does not parse as the event's document → 400;
    /// 9. a new publication beyond `max_publications_per_presentity` → 503 with
    ///    `Retry-After`.
    ///
    /// Then: `Expires: 0` with `SIP-If-Match` removes the publication (a body is
    /// validated and ignored); without `SIP-If-Match` nothing is stored. A refresh keeps
    /// the document, a modify replaces it and makes the publication the newest. Every
    /// success gets a new entity-tag: the old row is deleted and the new one put.
    /// Publications of the same presentity and event that have expired but not yet been
    /// collected by `handle_timeout` are dropped (deleted) on the way.
    pub fn publish(
        &mut self,
        now: Timestamp,
        ids: &mut IdGenerator,
        input: PublishInput<'_>,
    ) -> (Result<Accepted, Refusal>, Vec<StoreOp>) {
        let (kind, key, action, expires) = match self.check(now, &input) {
            Ok(v) => v,
            Err(r) => return (Err(r), Vec::new()),
        };
        let presentity = input.presentity;
        let mut senders = self.senders(presentity, &key);
        if let Some(s) = input.sender {
            senders.insert(s.to_string());
        }
        let before = self.views(kind, presentity, &key, &senders);
        let mut ops = Vec::new();

        // Expired leftovers of this slot go first (never the matched one: it is live).
        let expired: Vec<String> = self
            .slot(presentity, &key)
            .map(|s| {
                s.iter()
                    .filter(|(_, p)| p.expires_at <= now)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default();
        for tag in expired {
            self.take(presentity, &key, &tag);
            ops.push(delete(&tag));
        }

        let expires_at = now + Duration::from_secs(u64::from(expires));
        let sender = input.sender.map(str::to_string);
        let origin = input.origin.to_string();
        let content_type = kind.media_type().to_string();
        let new_pub = |text: String, doc: Elem, body_seq: u64| Publication {
            content_type: content_type.clone(),
            body: text,
            doc,
            granted: expires,
            expires_at,
            body_seq,
            origin: origin.clone(),
            sender: sender.clone(),
        };
        let etag = self.fresh_etag(ids);
        match action {
            Action::Nothing => {}
            Action::Remove { old } => {
                self.take(presentity, &key, &old);
                ops.push(delete(&old));
            }
            Action::Create { text, doc } => {
                let seq = self.next_seq();
                let p = new_pub(text, doc, seq);
                ops.push(self.insert(presentity, &key, &etag, p));
            }
            Action::Modify { old, text, doc } => {
                self.take(presentity, &key, &old);
                ops.push(delete(&old));
                let seq = self.next_seq();
                let p = new_pub(text, doc, seq);
                ops.push(self.insert(presentity, &key, &etag, p));
            }
            Action::Refresh { old } => {
                if let Some(prev) = self.take(presentity, &key, &old) {
                    ops.push(delete(&old));
                    let p = new_pub(prev.body, prev.doc, prev.body_seq);
                    ops.push(self.insert(presentity, &key, &etag, p));
                }
            }
        }
        let after = self.views(kind, presentity, &key, &senders);
        let accepted = Accepted {
            etag,
            expires,
            changed: before != after,
        };
        (Ok(accepted), ops)
    }

    /// Steps 1–9 of [`PresenceState::publish`], without changing anything.
    fn check(
        &self,
        now: Timestamp,
        input: &PublishInput<'_>,
    ) -> Result<(DocKind, EventKey, Action, u32), Refusal> {
        let cfg = &self.cfg;
        let key = EventKey::from_header(input.event);
        let kind = DocKind::of(&key).ok_or_else(|| refusal(489, "Bad Event"))?;
        if input.if_match.len() > 1 {
            return Err(refusal(400, "Bad Request: more than one SIP-If-Match"));
        }
        let matched = match input.if_match.first() {
            None => None,
            Some(tag) => {
                let tag = tag.trim();
                match self.slot(input.presentity, &key).and_then(|s| s.get(tag)) {
                    Some(p) if p.expires_at > now => Some(tag.to_string()),
                    _ => return Err(refusal(412, "Conditional Request Failed")),
                }
            }
        };
        let expires = match input.expires {
            None => cfg.default_expires.min(cfg.max_expires),
            Some(0) => 0,
            Some(e) if e < cfg.min_expires => {
                let mut r = refusal(423, "Interval Too Brief");
                r.min_expires = Some(cfg.min_expires);
                return Err(r);
            }
            Some(e) => e.min(cfg.max_expires),
        };
        let has_body = !is_blank(input.body);
        if has_body {
            let ok = input
                .content_type
                .map(media_type)
                .is_some_and(|m| m.eq_ignore_ascii_case(kind.media_type()));
            if !ok {
                return Err(refusal(415, "Unsupported Media Type"));
            }
        }
        if !has_body && matched.is_none() {
            return Err(refusal(400, "Bad Request: neither a body nor SIP-If-Match"));
        }
        let parsed = if has_body {
            if input.body.len() > cfg.max_body_bytes {
                return Err(refusal(413, "Request Entity Too Large"));
            }
            let doc = read_body(kind, input.body)
                .map_err(|e| refusal(400, format!("Bad Request: {e}")))?;
            // Validated as UTF-8 by the parser; lossy only as a second line of defence.
            let text = String::from_utf8_lossy(input.body).into_owned();
            Some((text, doc))
        } else {
            None
        };
        let action = match (expires, matched, parsed) {
            (0, Some(old), _) => Action::Remove { old },
            (0, None, _) => Action::Nothing,
            (_, Some(old), Some((text, doc))) => Action::Modify { old, text, doc },
            (_, Some(old), None) => Action::Refresh { old },
            (_, None, Some((text, doc))) => {
                self.check_capacity(now, input.presentity)?;
                Action::Create { text, doc }
            }
            (_, None, None) => unreachable_refusal()?,
        };
        Ok((kind, key, action, expires))
    }

    /// 503 when the presentity already has the most live publications allowed.
    fn check_capacity(&self, now: Timestamp, presentity: &str) -> Result<(), Refusal> {
        let Some(events) = self.state.get(presentity) else {
            return Ok(());
        };
        let live = events
            .values()
            .flat_map(|s| s.values())
            .filter(|p| p.expires_at > now);
        let (count, first) = live.fold((0usize, None::<Timestamp>), |(n, first), p| {
            (
                n + 1,
                Some(first.map_or(p.expires_at, |f| f.min(p.expires_at))),
            )
        });
        if count < self.cfg.max_publications_per_presentity {
            return Ok(());
        }
        let wait = first.map_or(1, |f| now.secs_until(f).max(1));
        let mut r = refusal(503, "Service Unavailable: too many publications");
        r.retry_after = Some(u32::try_from(wait).unwrap_or(u32::MAX));
        Err(r)
    }

    /// The composed document (policy: [`compose`]) for watchers of `presentity` and
    /// `event`, starting with the XML declaration.
    ///
    /// `version` is written into dialog-info documents (RFC 4235 §4.1: the version counts
    /// per subscription, so the caller keeps it); PIDF has none. `exclude_sender` leaves
    /// out the publications carrying that sender value (a BLA phone is not told its own
    /// state). With no publication left: an empty full dialog-info for dialog events,
    /// `None` for presence (and for unsupported events).
    pub fn document(
        &self,
        presentity: &str,
        event: &EventKey,
        version: u32,
        exclude_sender: Option<&str>,
    ) -> Option<Vec<u8>> {
        let kind = DocKind::of(event)?;
        self.compose_view(kind, presentity, event, version, exclude_sender)
            .map(String::into_bytes)
    }

    fn compose_view(
        &self,
        kind: DocKind,
        presentity: &str,
        event: &EventKey,
        version: u32,
        exclude_sender: Option<&str>,
    ) -> Option<String> {
        let mut pubs: Vec<&Publication> = self
            .slot(presentity, event)
            .map(|s| {
                s.values()
                    .filter(|p| exclude_sender.is_none() || p.sender.as_deref() != exclude_sender)
                    .collect()
            })
            .unwrap_or_default();
        pubs.sort_by_key(|p| std::cmp::Reverse(p.body_seq));
        let derived = |p: &Publication| p.origin == DERIVED_ORIGIN;
        if kind == DocKind::Pidf
            && pubs.iter().any(|p| derived(p))
            && pubs.iter().any(|p| !derived(p))
        {
            let own: Vec<&Elem> = pubs
                .iter()
                .filter(|p| !derived(p))
                .map(|p| &p.doc)
                .collect();
            let trimmed: Vec<Option<Elem>> = pubs
                .iter()
                .map(|p| derived(p).then(|| compose::drop_derived_tuples(&p.doc, &own)))
                .collect();
            let docs: Vec<&Elem> = pubs
                .iter()
                .zip(&trimmed)
                .map(|(p, t)| t.as_ref().unwrap_or(&p.doc))
                .collect();
            return compose::compose(kind, presentity, version, &docs);
        }
        let docs: Vec<&Elem> = pubs.iter().map(|p| &p.doc).collect();
        compose::compose(kind, presentity, version, &docs)
    }

    /// Every view a watcher may have of one slot: the full one, then one per sender.
    fn views(
        &self,
        kind: DocKind,
        presentity: &str,
        event: &EventKey,
        senders: &BTreeSet<String>,
    ) -> Vec<Option<String>> {
        std::iter::once(None)
            .chain(senders.iter().map(|s| Some(s.as_str())))
            .map(|s| self.compose_view(kind, presentity, event, 0, s))
            .collect()
    }

    /// The sender values of the publications of one slot (see [`PublishInput::sender`]).
    pub fn senders(&self, presentity: &str, event: &EventKey) -> BTreeSet<String> {
        self.slot(presentity, event)
            .map(|s| s.values().filter_map(|p| p.sender.clone()).collect())
            .unwrap_or_default()
    }

    /// The presentities that have at least one publication for `event`, in order.
    pub fn presentities(&self, event: &EventKey) -> Vec<&str> {
        self.state
            .iter()
            .filter(|(_, events)| events.get(event).is_some_and(|s| !s.is_empty()))
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// Every publication, by presentity, event and entity-tag, for the admin API.
    pub fn publication_views(&self, now: Timestamp) -> Vec<PublicationView> {
        let mut out = Vec::with_capacity(self.etags.len());
        for (presentity, events) in &self.state {
            for (event, slot) in events {
                for (etag, p) in slot {
                    out.push(PublicationView {
                        presentity: presentity.clone(),
                        event: event.to_string(),
                        etag: etag.clone(),
                        expires_in: now.secs_until(p.expires_at),
                        content_type: p.content_type.clone(),
                        origin: p.origin.clone(),
                        sender: p.sender.clone(),
                    });
                }
            }
        }
        out
    }

    /// When the next publication expires, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Drops every publication whose expiry is at or before `now` (RFC 3903 §4: state
    /// not refreshed expires). Returns the presentity/event pairs whose composed document
    /// changed for some view (as [`Accepted::changed`]), in order, and the store deletes.
    pub fn handle_timeout(&mut self, now: Timestamp) -> (Vec<Changed>, Vec<StoreOp>) {
        let due: Vec<String> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, e)| e.clone())
            .collect();
        if due.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut by_slot: BTreeMap<(String, EventKey), Vec<String>> = BTreeMap::new();
        for etag in due {
            match self.etags.get(&etag) {
                Some(loc) => by_slot.entry(loc.clone()).or_default().push(etag),
                None => {
                    // Cannot happen (indexes are kept together); heal rather than loop.
                    self.deadlines.retain(|(_, e)| *e != etag);
                }
            }
        }
        let mut changed = Vec::new();
        let mut ops = Vec::new();
        for ((presentity, event), tags) in by_slot {
            let Some(kind) = DocKind::of(&event) else {
                continue;
            };
            let senders = self.senders(&presentity, &event);
            let before = self.views(kind, &presentity, &event, &senders);
            for tag in tags {
                self.take(&presentity, &event, &tag);
                ops.push(delete(&tag));
            }
            if before != self.views(kind, &presentity, &event, &senders) {
                changed.push(Changed { presentity, event });
            }
        }
        (changed, ops)
    }

    /// Rebuilds publications from stored rows (`StoreTable::PresentityPublications`,
    /// owner [`STORE_OWNER`]; other rows are ignored), so entity-tags stay valid across a
    /// restart with their expiry and their order. Rows that do not decode, name an
    /// unsupported event or carry a body that no longer validates are skipped. Expired
    /// rows are kept until the next [`PresenceState::handle_timeout`]. A row whose
    /// entity-tag is already present replaces it. Returns how many rows were taken.
    pub fn restore(&mut self, rows: &[StoredRow]) -> usize {
        let mut n = 0;
        for row in rows {
            if row.table != StoreTable::PresentityPublications || row.owner != STORE_OWNER {
                continue;
            }
            let Ok(rec) = serde_json::from_value::<PublicationRecord>(row.data.clone()) else {
                tracing::warn!(key = %row.key, "skipping undecodable presentity publication row");
                continue;
            };
            let Some(event) = EventKey::parse(&rec.event) else {
                continue;
            };
            let Some(kind) = DocKind::of(&event) else {
                continue;
            };
            let Ok(doc) = read_body(kind, rec.body.as_bytes()) else {
                tracing::warn!(etag = %rec.etag, "skipping stored publication whose body no longer validates");
                continue;
            };
            if let Some((p, e)) = self.etags.get(&rec.etag).cloned() {
                self.take(&p, &e, &rec.etag);
            }
            self.seq = self.seq.max(rec.body_seq.saturating_add(1));
            let p = Publication {
                content_type: kind.media_type().to_string(),
                body: rec.body,
                doc,
                granted: rec.expires,
                expires_at: Timestamp::from_millis(rec.expires_at),
                body_seq: rec.body_seq,
                origin: rec.origin,
                sender: rec.sender,
            };
            self.insert(&rec.presentity, &event, &rec.etag, p);
            n += 1;
        }
        n
    }

    /// How many publications are kept (expired ones not yet collected included).
    pub fn len(&self) -> usize {
        self.etags.len()
    }

    /// Whether no publication is kept.
    pub fn is_empty(&self) -> bool {
        self.etags.is_empty()
    }

    fn slot(&self, presentity: &str, event: &EventKey) -> Option<&Slot> {
        self.state.get(presentity)?.get(event)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// A new entity-tag no live publication carries (RFC 3903 §6 step 8).
    fn fresh_etag(&self, ids: &mut IdGenerator) -> String {
        loop {
            let tag = ids.etag();
            if !self.etags.contains_key(&tag) {
                return tag;
            }
        }
    }

    /// Inserts a publication into the slot and indexes; gives the `Put` for it.
    fn insert(
        &mut self,
        presentity: &str,
        event: &EventKey,
        etag: &str,
        p: Publication,
    ) -> StoreOp {
        let op = StoreOp::Put {
            table: StoreTable::PresentityPublications,
            key: etag.to_string(),
            owner: STORE_OWNER.to_string(),
            subject: presentity.to_string(),
            expires_at: Some(p.expires_at),
            data: record(presentity, event, etag, &p),
        };
        self.deadlines.insert((p.expires_at, etag.to_string()));
        self.etags
            .insert(etag.to_string(), (presentity.to_string(), event.clone()));
        self.state
            .entry(presentity.to_string())
            .or_default()
            .entry(event.clone())
            .or_default()
            .insert(etag.to_string(), p);
        op
    }

    /// Removes a publication from the slot and indexes, pruning empty maps.
    fn take(&mut self, presentity: &str, event: &EventKey, etag: &str) -> Option<Publication> {
        let events = self.state.get_mut(presentity)?;
        let slot = events.get_mut(event)?;
        let p = slot.remove(etag)?;
        if slot.is_empty() {
            events.remove(event);
        }
        if events.is_empty() {
            self.state.remove(presentity);
        }
        self.etags.remove(etag);
        self.deadlines.remove(&(p.expires_at, etag.to_string()));
        Some(p)
    }
}

/// Step 6 makes the (no body, no If-Match) case a 400 before the action is chosen; kept
/// as a refusal rather than a panic all the same.
fn unreachable_refusal() -> Result<Action, Refusal> {
    Err(refusal(400, "Bad Request: neither a body nor SIP-If-Match"))
}

fn delete(etag: &str) -> StoreOp {
    StoreOp::Delete {
        table: StoreTable::PresentityPublications,
        key: etag.to_string(),
    }
}

fn record(presentity: &str, event: &EventKey, etag: &str, p: &Publication) -> serde_json::Value {
    let rec = PublicationRecord {
        presentity: presentity.to_string(),
        event: event.to_string(),
        etag: etag.to_string(),
        content_type: p.content_type.clone(),
        body: p.body.clone(),
        expires: p.granted,
        expires_at: p.expires_at.as_millis(),
        body_seq: p.body_seq,
        origin: p.origin.clone(),
        sender: p.sender.clone(),
    };
    // A struct of strings and integers always serialises.
    serde_json::to_value(rec).unwrap_or(serde_json::Value::Null)
}
