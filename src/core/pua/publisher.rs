//! RFC 3903 event publication client (the EPA side), one [`Publication`] per
//! (owner, presentity, event).
//!
//! Contract (standards.md §10, §16 cases 62–67):
//! - the initial PUBLISH carries the body and no `SIP-If-Match`;
//! - every 2xx replaces the stored `SIP-ETag` and the granted expiry; a refresh goes out at
//!   a random point in the configured window (80–90 %) of the granted interval, without a
//!   body and with `SIP-If-Match` (§4.2.2);
//! - 412 discards the entity-tag and sends a new initial PUBLISH with the kept body; the
//!   failed request is never repeated (§4.5, §6);
//! - 423 retries with `Min-Expires`; a `Retry-After` is honoured; other failures back off
//!   exponentially with jitter, capped by `max_backoff`, while the publication is wanted;
//! - removal is `Expires: 0` with `SIP-If-Match` and no body (§4.5);
//! - only one PUBLISH is outstanding per publication; changes made meanwhile wait and only
//!   the latest state goes out (§4.1, case 67);
//! - every change is written to the store before the output that depends on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::module_id::ModuleId;
use crate::core::persist::{StoreOp, StoreTable};
use crate::core::pua::{PuaEvent, PuaTimer, PublicationId, PublishRequest};
use crate::core::services::{Services, TimerKey, TxOwner};
use crate::core::time::Timestamp;
use crate::core::views::PublicationView;

use crate::core::sip::headers::{parse_delta_seconds, parse_retry_after};
use crate::core::sip::message::{Method, Request, Response};
use crate::core::sip::transaction::ClientTxId;

/// A caller's change to a publication (see `pua::PublishRequest`).
#[derive(Clone, Debug, PartialEq)]
pub struct PubChange {
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
    pub expires: Option<u32>,
    pub extra_headers: Vec<(String, String)>,
}

/// The persisted form of a publication (store table `publications`, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicationRecord {
    pub id: u64,
    pub owner: String,
    pub presentity: String,
    pub event: String,
    pub content_type: Option<String>,
    pub body: Option<String>,
    #[serde(default)]
    pub extra_headers: Vec<(String, String)>,
    /// The interval the owner asked for; `None` = no time limit.
    pub desired: Option<u32>,
    /// When the owner wants the publication to end (ms since the epoch); `None` = never.
    pub desired_until: Option<u64>,
    pub etag: Option<String>,
    /// End of the granted interval (ms since the epoch).
    pub expires_at: Option<u64>,
    pub granted: Option<u32>,
    /// When the next refresh is due (ms since the epoch).
    pub refresh_at: Option<u64>,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    /// The largest `Min-Expires` the ESC asked for (423).
    #[serde(default)]
    pub min_expires: u32,
    /// A removal was asked for and is not done yet.
    #[serde(default)]
    pub removing: bool,
    /// See `PublishRequest::instance`.
    #[serde(default)]
    pub instance: Option<String>,
}

/// What a PUBLISH does (RFC 3903 §4, table in standards.md §10).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PubOp {
    Initial,
    Refresh,
    Modify,
    Remove,
}

#[derive(Clone, Debug)]
struct InFlight {
    tx: ClientTxId,
    op: PubOp,
    expires: u32,
    op_seq: u64,
}

/// One publication and its RFC 3903 state.
#[derive(Clone, Debug)]
pub struct Publication {
    pub(crate) id: PublicationId,
    pub(crate) owner: ModuleId,
    rec: PublicationRecord,
    in_flight: Option<InFlight>,
    /// The wanted state changed since the last PUBLISH went out.
    dirty: bool,
    /// The caller asked for a PUBLISH (a change or a refresh) not sent yet.
    kick: bool,
    failures: u32,
    /// Latest caller operation (for matching results to admin commands).
    op_seq: u64,
    /// 423 answers in a row (bounded retries).
    retries_423: u8,
}

impl Publication {
    pub(crate) fn new(
        id: PublicationId,
        req: &PublishRequest,
        svc: &mut Services,
        now: Timestamp,
    ) -> Self {
        let rec = PublicationRecord {
            id: id.0,
            owner: req.owner.as_str().to_string(),
            presentity: req.presentity.clone(),
            event: req.event.clone(),
            content_type: req.content_type.clone(),
            body: req
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            extra_headers: {
                let mut h = req.extra_headers.clone();
                if let Some(sender) = &req.sender {
                    h.push((svc.site.sender_header.clone(), sender.clone()));
                }
                h
            },
            desired: req.expires,
            desired_until: req
                .expires
                .map(|e| (now + Duration::from_secs(e as u64)).as_millis()),
            etag: None,
            expires_at: None,
            granted: None,
            refresh_at: None,
            call_id: svc.ids.call_id(&svc.config.local_host),
            from_tag: svc.ids.tag(),
            cseq: 0,
            min_expires: 0,
            removing: false,
            instance: req.instance.clone(),
        };
        Publication {
            id,
            owner: req.owner,
            rec,
            in_flight: None,
            dirty: true,
            kick: false,
            failures: 0,
            op_seq: 1,
            retries_423: 0,
        }
    }

    pub(crate) fn from_record(owner: ModuleId, rec: PublicationRecord) -> Self {
        Publication {
            id: PublicationId(rec.id),
            owner,
            rec,
            in_flight: None,
            dirty: false,
            kick: false,
            failures: 0,
            op_seq: 0,
            retries_423: 0,
        }
    }

    pub(crate) fn matches(
        &self,
        owner: ModuleId,
        presentity: &str,
        event: &str,
        instance: Option<&str>,
    ) -> bool {
        self.owner == owner
            && self.rec.presentity == presentity
            && self.rec.event.eq_ignore_ascii_case(event)
            && self.rec.instance.as_deref() == instance
    }

    pub fn etag(&self) -> Option<&str> {
        self.rec.etag.as_deref()
    }

    /// What [`Self::matches`] compares, for the PUA's index.
    pub(crate) fn key(&self) -> super::PubKey {
        super::PubKey::new(
            self.owner.as_str(),
            &self.rec.presentity,
            &self.rec.event,
            self.rec.instance.as_deref(),
        )
    }

    pub fn presentity(&self) -> &str {
        &self.rec.presentity
    }

    pub fn event(&self) -> &str {
        &self.rec.event
    }

    pub(crate) fn op_seq(&self) -> u64 {
        self.op_seq
    }

    pub fn record(&self) -> &PublicationRecord {
        &self.rec
    }

    pub(crate) fn view(&self, now: Timestamp) -> PublicationView {
        PublicationView {
            id: self.id.to_string(),
            presentity: self.rec.presentity.clone(),
            event: self.rec.event.clone(),
            etag: self.rec.etag.clone(),
            expires_in: self.rec.expires_at.map(|e| now.secs_until(Timestamp(e))),
            content_type: self.rec.content_type.clone(),
            body: self.rec.body.clone(),
            owner: self.owner.as_str().to_string(),
        }
    }

    fn timer(&self) -> TimerKey {
        TimerKey::Pua(PuaTimer::Publication(self.id))
    }

    fn persist(&self, svc: &mut Services) {
        svc.put_record(
            StoreTable::Publications,
            self.id.to_string(),
            self.owner.as_str(),
            &self.rec.presentity,
            self.rec.desired_until.map(Timestamp),
            &self.rec,
        );
    }

    fn forget(&self, svc: &mut Services) {
        svc.cancel_timer(self.timer());
        svc.store(StoreOp::Delete {
            table: StoreTable::Publications,
            key: self.id.to_string(),
        });
    }

    /// Whether the stored entity-tag can still be used (the granted interval is running).
    fn etag_valid(&self, now: Timestamp) -> bool {
        self.rec.etag.is_some() && self.rec.expires_at.is_some_and(|e| now < Timestamp(e))
    }

    /// The Expires to ask for: the owner's remaining wish or the default, at least any
    /// `Min-Expires` the ESC asked for.
    fn wanted_expires(&self, svc: &Services, now: Timestamp) -> u32 {
        let base = match self.rec.desired_until {
            Some(u) => now.secs_until(Timestamp(u)).clamp(1, u32::MAX as u64) as u32,
            None => svc.config.default_expires,
        };
        base.max(self.rec.min_expires)
    }

    fn result(
        &self,
        code: u16,
        reason: &str,
        expires: Option<u32>,
        alive: bool,
        op_seq: u64,
    ) -> PuaEvent {
        PuaEvent::PublishResult {
            id: self.id,
            op_seq,
            code,
            reason: reason.to_string(),
            etag: self.rec.etag.clone(),
            expires,
            alive,
        }
    }

    /// First transmission of a new publication. Returns whether the record stays.
    pub(crate) fn start(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        self.persist(svc);
        self.send_next(svc, now, events)
    }

    /// After a restart: refresh in place with the stored entity-tag at its normal time
    /// (at once if due); a lapsed one is published anew.
    pub(crate) fn resume(&mut self, svc: &mut Services, now: Timestamp, slot: &mut Timestamp) {
        let at = if self.rec.removing || !self.etag_valid(now) {
            self.dirty = true;
            now
        } else {
            self.rec.refresh_at.map(Timestamp).unwrap_or(now).max(now)
        };
        // Whatever is due at once is paced (product.md: a restart must not storm).
        let at = if at <= now {
            let at = (*slot).max(now);
            *slot = at + svc.config.restore_pace;
            at
        } else {
            at
        };
        svc.set_timer(self.timer(), at);
    }

    /// A caller's change. Returns whether the record stays.
    pub(crate) fn change(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        change: PubChange,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        self.op_seq += 1;
        let has_body = change.body.is_some();
        if change.expires == Some(0) {
            self.rec.removing = true;
        } else {
            self.rec.removing = false;
            self.rec.desired = change.expires;
            self.rec.desired_until = change
                .expires
                .map(|e| (now + Duration::from_secs(e as u64)).as_millis());
            if let Some(body) = change.body {
                self.rec.body = Some(String::from_utf8_lossy(&body).into_owned());
                if change.content_type.is_some() {
                    self.rec.content_type = change.content_type;
                }
            }
            if !change.extra_headers.is_empty() {
                self.rec.extra_headers = change.extra_headers;
            }
        }
        // A new body makes the next PUBLISH a modify; without one the caller asked for a
        // refresh. Either goes out now, or after the outstanding one (case 67).
        if self.rec.removing || has_body {
            self.dirty = true;
        }
        self.kick = true;
        self.persist(svc);
        if self.in_flight.is_some() {
            // Case 67: wait for the outstanding PUBLISH; only the latest state goes out.
            return true;
        }
        self.send_next(svc, now, events)
    }

    /// Sends what the wanted state requires. Returns whether the record stays.
    fn send_next(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        if self.in_flight.is_some() {
            return true;
        }
        let op = if self.rec.removing {
            if !self.etag_valid(now) {
                // Nothing is published (or it lapsed): removal is local.
                events.push(self.result(200, "Removed", Some(0), false, self.op_seq));
                self.forget(svc);
                return false;
            }
            PubOp::Remove
        } else if self.etag_valid(now) {
            if self.dirty {
                PubOp::Modify
            } else {
                PubOp::Refresh
            }
        } else {
            PubOp::Initial
        };
        if op == PubOp::Initial && self.rec.body.is_none() {
            tracing::warn!(id = %self.id, "publication has no body to publish anew; dropped");
            events.push(self.result(412, "No Body To Republish", None, false, self.op_seq));
            self.forget(svc);
            return false;
        }
        if op == PubOp::Modify && self.rec.body.is_none() {
            return self.send(svc, now, PubOp::Refresh, events);
        }
        self.send(svc, now, op, events)
    }

    fn send(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        op: PubOp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        let expires = if op == PubOp::Remove {
            0
        } else {
            self.wanted_expires(svc, now)
        };
        self.rec.cseq += 1;
        let mut req = Request::new(Method::Publish, self.rec.presentity.clone());
        let h = &mut req.headers;
        h.push("Max-Forwards", "70");
        h.push(
            "From",
            format!("<{}>;tag={}", self.rec.presentity, self.rec.from_tag),
        );
        h.push("To", format!("<{}>", self.rec.presentity));
        h.push("Call-ID", self.rec.call_id.clone());
        h.push("CSeq", format!("{} PUBLISH", self.rec.cseq));
        h.push("Event", self.rec.event.clone());
        h.push("Expires", expires.to_string());
        if op != PubOp::Initial {
            if let Some(etag) = &self.rec.etag {
                h.push("SIP-If-Match", etag.clone());
            }
        }
        h.push("User-Agent", svc.config.user_agent.clone());
        for (n, v) in &self.rec.extra_headers {
            h.push(n, v.clone());
        }
        if matches!(op, PubOp::Initial | PubOp::Modify) {
            if let Some(body) = &self.rec.body {
                if let Some(ct) = &self.rec.content_type {
                    req.headers.push("Content-Type", ct.clone());
                }
                req.body = body.clone().into_bytes();
            }
        }
        self.dirty = false;
        self.kick = false;
        self.persist(svc);
        match svc.send_request(now, TxOwner::Publication(self.id), &[], req) {
            Ok(tx) => {
                tracing::debug!(id = %self.id, ?op, expires, "PUBLISH sent");
                self.in_flight = Some(InFlight {
                    tx,
                    op,
                    expires,
                    op_seq: self.op_seq,
                });
                svc.cancel_timer(self.timer());
                true
            }
            Err(e) => {
                // Unroutable is permanent for this URI: report it like pua_mi (500).
                tracing::warn!(id = %self.id, error = %e, "PUBLISH not sent; publication dropped");
                events.push(self.result(500, "Send Failure", None, false, self.op_seq));
                self.forget(svc);
                false
            }
        }
    }

    pub(crate) fn on_resent(&mut self, old: ClientTxId, new: ClientTxId, cseq: u32) {
        if let Some(f) = self.in_flight.as_mut().filter(|f| f.tx == old) {
            f.tx = new;
            self.rec.cseq = self.rec.cseq.max(cseq);
        }
    }

    /// The final response to our outstanding PUBLISH (`None`: timeout, treated as 408).
    /// Returns whether the record stays.
    pub(crate) fn on_response(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        tx: ClientTxId,
        resp: Option<&Response>,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        let Some(flight) = self.in_flight.take_if(|f| f.tx == tx) else {
            return true;
        };
        let (status, reason) = match resp {
            Some(r) => (r.status, r.reason.clone()),
            None => (408, "Request Timeout".to_string()),
        };
        if (200..300).contains(&status) {
            return self.on_success(svc, now, &flight, resp, events);
        }
        tracing::info!(id = %self.id, status, op = ?flight.op, "PUBLISH failed");
        if flight.op == PubOp::Remove {
            events.push(self.result(status, &reason, None, false, flight.op_seq));
            self.forget(svc);
            return false;
        }
        let header = |name: &str| resp.and_then(|r| r.headers.get(name));
        if status == 412 {
            // RFC 3903 §4.5: the ESC lost our entity; publish the full state anew.
            self.rec.etag = None;
            self.rec.expires_at = None;
            self.dirty = true;
            return self.send_next(svc, now, events);
        }
        if status == 423 && self.retries_423 < 2 {
            if let Some(min) =
                header("Min-Expires").and_then(|v| parse_delta_seconds("Min-Expires", v).ok())
            {
                {
                    // Bounded: a server repeating 423 cannot make us loop.
                    self.retries_423 += 1;
                    self.rec.min_expires = min;
                    // Same operation again with the longer interval (case 65).
                    self.dirty = matches!(flight.op, PubOp::Initial | PubOp::Modify);
                    if flight.op == PubOp::Initial {
                        self.rec.etag = None;
                    }
                    return self.send(svc, now, flight.op, events);
                }
            }
        }
        self.retries_423 = 0;
        // Other failures: report, then retry while the publication is wanted.
        events.push(self.result(status, &reason, None, true, flight.op_seq));
        if matches!(flight.op, PubOp::Initial | PubOp::Modify) {
            self.dirty = true;
        }
        let delay = match header("Retry-After").and_then(|v| parse_retry_after(v).ok()) {
            Some(secs) => Duration::from_secs(secs as u64),
            None => self.backoff(svc),
        };
        self.failures = self.failures.saturating_add(1);
        let at = now + delay;
        self.rec.refresh_at = Some(at.as_millis());
        self.persist(svc);
        svc.set_timer(self.timer(), at);
        true
    }

    /// Exponential back-off with jitter: 2 s · 2^failures, capped, drawn in 50–100 %.
    fn backoff(&self, svc: &mut Services) -> Duration {
        let cap = svc.config.max_backoff.as_millis() as u64;
        let full = 2000u64
            .saturating_mul(1u64 << self.failures.min(20))
            .min(cap);
        Duration::from_millis(svc.ids.fraction_of(full, 0.5, 1.0).max(1))
    }

    fn on_success(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        flight: &InFlight,
        resp: Option<&Response>,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        self.failures = 0;
        self.retries_423 = 0;
        if flight.op == PubOp::Remove {
            if !self.rec.removing {
                // Revived while the removal was outstanding: publish anew.
                self.rec.etag = None;
                self.rec.expires_at = None;
                self.dirty = true;
                events.push(self.result(200, "OK", Some(0), true, flight.op_seq));
                return self.send_next(svc, now, events);
            }
            events.push(self.result(200, "OK", Some(0), false, flight.op_seq));
            self.forget(svc);
            return false;
        }
        let resp_etag = resp
            .and_then(|r| r.headers.get("SIP-ETag"))
            .map(|v| v.trim().to_string());
        let granted = resp
            .and_then(|r| r.headers.get("Expires"))
            .and_then(|v| parse_delta_seconds("Expires", v).ok())
            .unwrap_or(flight.expires);
        // An ESC granting 0 s would make us refresh in a tight loop; never below 60 s of
        // spacing (its next answer decides).
        let granted = if granted == 0 {
            tracing::warn!(id = %self.id, "2xx to PUBLISH granting 0 s");
            60
        } else {
            granted
        };
        match resp_etag {
            Some(e) if !e.is_empty() => self.rec.etag = Some(e),
            _ => tracing::warn!(id = %self.id, "2xx to PUBLISH without SIP-ETag"),
        }
        let expires_at = now + Duration::from_secs(granted as u64);
        self.rec.expires_at = Some(expires_at.as_millis());
        self.rec.granted = Some(granted);
        let (lo, hi) = svc.config.refresh_window;
        let refresh_at =
            now + Duration::from_millis(svc.ids.fraction_of(granted as u64 * 1000, lo, hi));
        let lapses = self
            .rec
            .desired_until
            .is_some_and(|u| u <= expires_at.as_millis());
        let next = if lapses { expires_at } else { refresh_at };
        self.rec.refresh_at = Some(next.as_millis());
        self.persist(svc);
        events.push(self.result(
            200,
            resp.map(|r| r.reason.as_str()).unwrap_or("OK"),
            Some(granted),
            true,
            flight.op_seq,
        ));
        if self.dirty || self.kick || self.rec.removing {
            return self.send_next(svc, now, events);
        }
        svc.set_timer(self.timer(), next);
        true
    }

    /// The publication's timer: refresh, retry, or the end of its wanted life.
    pub(crate) fn on_timer(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        if self.in_flight.is_some() {
            return true;
        }
        if self.rec.desired_until.is_some_and(|u| now >= Timestamp(u)) {
            tracing::info!(id = %self.id, "publication reached its wanted end");
            self.forget(svc);
            return false;
        }
        self.send_next(svc, now, events)
    }
}
