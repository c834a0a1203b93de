//! RFC 6665 subscriber: one [`Subscription`] per call of `PuaService::subscribe`, kept
//! alive (refreshed, re-created) until its owner unsubscribes or the notifier ends it for
//! good.
//!
//! Contract (standards.md §6, §16 cases 15–33 in their generic form):
//! - the initial SUBSCRIBE carries Event, Accept (per package), Expires, a From tag, a To
//!   without tag, a new Call-ID, `Max-Forwards: 70`, Contact and CSeq 1 (case 15);
//! - Timer N (64·T1) runs on every SUBSCRIBE; without a NOTIFY the subscription failed and
//!   is retried on a new dialog with back-off (RFC 6665 §4.1.2.4, case 23);
//! - the dialog is created by the first NOTIFY, also when it beats the 2xx (case 32): route
//!   set from its Record-Route (in order, RFC 3261 §12.1.1), remote target from its Contact;
//!   for `presence` a NOTIFY from another fork gets 481 (RFC 3856 §6.9, case 29), other
//!   packages keep several dialogs;
//! - refreshes go in dialog at a random point of the refresh window of the granted interval,
//!   the NOTIFY's `expires` being authoritative; 423 → retry with Min-Expires (case 21);
//!   481 and the §4.1.2.2 codes → new dialog (case 22); other errors keep the dialog until
//!   its expiry;
//! - `terminated` reasons (§4.1.3): deactivated/timeout → new dialog at once (cases 25,
//!   27), probation/giveup → not before retry-after (case 26), rejected/noresource/
//!   invariant → final (case 24); 403/489/603 to an initial SUBSCRIBE → final (case 20);
//! - unsubscribe is an in-dialog SUBSCRIBE with `Expires: 0` (case 28);
//! - every change is written to the store before the answer that depends on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::module_id::ModuleId;
use crate::core::persist::{StoreOp, StoreTable};
use crate::core::presence::{apply_content_language, parse_body, Body};
use crate::core::pua::{PuaEvent, PuaTimer, SubscribeRequest, SubscriptionEnd, SubscriptionId};
use crate::core::services::{Services, TimerKey, TxOwner};
use crate::core::time::Timestamp;
use crate::core::views::SubscriptionView;

use crate::core::sip::headers::{
    parse_delta_seconds, parse_retry_after, CSeq, EventHeader, NameAddr, SubState,
    TerminationReason,
};
use crate::core::sip::message::{Method, Request, Response};
use crate::core::sip::transaction::{ClientTxId, ServerTxId};

/// The body type to ask for in `Accept`, per event package.
pub fn accept_for(event: &str) -> Option<&'static str> {
    let package = event
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match package.as_str() {
        "presence" => Some(crate::core::presence::PIDF),
        "presence.winfo" => Some(crate::core::presence::WATCHERINFO),
        "dialog" => Some(crate::core::presence::DIALOG_INFO),
        "reg" => Some(crate::core::presence::REGINFO),
        _ => None,
    }
}

/// Where a subscription stands (RFC 6665 §4.1.2 subscriber states).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No SUBSCRIBE outstanding and no dialog; a (re)try is scheduled.
    Init,
    /// A SUBSCRIBE went out; waiting for the first NOTIFY.
    NotifyWait,
    Pending,
    Active,
    Terminated,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::NotifyWait => "notify_wait",
            Phase::Pending => "pending",
            Phase::Active => "active",
            Phase::Terminated => "terminated",
        }
    }
}

/// The persisted form of a subscription (store table `subscriptions`, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub id: u64,
    pub owner: String,
    pub presentity: String,
    pub watcher: String,
    pub contact: String,
    pub event: String,
    /// The interval the owner asked for; `None` = the default, refreshed until unsubscribed.
    pub desired: Option<u32>,
    /// When the owner wants the subscription to end (ms since the epoch).
    pub desired_until: Option<u64>,
    /// `desired` is the interval of each SUBSCRIBE, refreshed until unsubscribed.
    #[serde(default)]
    pub refresh_until_unsubscribed: bool,
    pub call_id: String,
    pub from_tag: String,
    /// The notifier's tag, set by the first NOTIFY (the dialog exists once it is set).
    pub to_tag: Option<String>,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    pub route_set: Vec<String>,
    pub remote_target: Option<String>,
    pub expires_at: Option<u64>,
    pub refresh_at: Option<u64>,
    pub phase: Phase,
    #[serde(default)]
    pub min_expires: u32,
    #[serde(default)]
    pub unsubscribing: bool,
    pub last_state: Option<String>,
    pub last_content_type: Option<String>,
    pub last_body: Option<String>,
    /// See `SubscribeRequest::target`.
    #[serde(default)]
    pub target: Option<String>,
    /// See `SubscribeRequest::next_hop`.
    #[serde(default)]
    pub next_hop: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ReqKind {
    Initial,
    Refresh,
    Unsubscribe,
}

#[derive(Clone, Debug)]
struct InFlight {
    tx: ClientTxId,
    kind: ReqKind,
    expires: u32,
}

/// Another dialog created by a forked SUBSCRIBE (winfo and dialog packages only).
#[derive(Clone, Debug)]
struct ExtraDialog {
    to_tag: String,
    remote_cseq: u32,
}

#[derive(Clone, Debug)]
pub struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) owner: ModuleId,
    rec: SubscriptionRecord,
    in_flight: Option<InFlight>,
    /// Terminations without an active NOTIFY in between (drives the back-off).
    failures: u32,
    extra_dialogs: Vec<ExtraDialog>,
    /// The owner was told the subscription ended (unsubscribe).
    end_reported: bool,
    /// 423 answers in a row (bounded retries).
    retries_423: u8,
    /// `expires_at` as last written to the store (write-behind of in-dialog NOTIFYs).
    stored_expires_at: Option<u64>,
}

/// How far a NOTIFY may move the subscription's expiry before its record is written again.
/// A NOTIFY's `expires=` counts down in whole seconds, so the same expiry reads ±1 s.
const EXPIRY_SLACK_MS: u64 = 2_000;

/// What a restart needs from the record and a NOTIFY may change: dialog identity, route
/// and phase. The last body, state line and remote CSeq are written behind (the notifier
/// sends the full state again on the in-dialog refresh after a restart; a stale remote
/// CSeq only accepts more).
type DurableKey = (Phase, Option<String>, Option<String>, Vec<String>);

/// Lower bound (fraction of the granted interval) of a new dialog's first refresh; see
/// `Subscription::schedule_refresh`.
pub const FIRST_REFRESH_FLOOR: f64 = 0.1;

/// Most forked dialogs kept per subscription (winfo, dialog).
const MAX_EXTRA_DIALOGS: usize = 16;

/// Response codes to a refresh that end the dialog (RFC 6665 §4.1.2.2).
fn ends_dialog(status: u16) -> bool {
    matches!(status, 404 | 405 | 410 | 416 | 480..=485 | 489 | 501 | 604)
}

fn package_of(event: &str) -> String {
    event
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Subscription {
    pub(crate) fn new(id: SubscriptionId, req: SubscribeRequest, svc: &mut Services) -> Self {
        let rec = SubscriptionRecord {
            id: id.0,
            owner: req.owner.as_str().to_string(),
            contact: req
                .contact
                .clone()
                .unwrap_or_else(|| svc.config.contact_uri.clone()),
            presentity: req.presentity,
            watcher: req.watcher,
            event: req.event,
            desired: req.expires,
            desired_until: None,
            refresh_until_unsubscribed: req.refresh_until_unsubscribed,
            target: req.target,
            next_hop: req.next_hop,
            call_id: String::new(),
            from_tag: String::new(),
            to_tag: None,
            local_cseq: 0,
            remote_cseq: None,
            route_set: Vec::new(),
            remote_target: None,
            expires_at: None,
            refresh_at: None,
            phase: Phase::Init,
            min_expires: 0,
            unsubscribing: false,
            last_state: None,
            last_content_type: None,
            last_body: None,
        };
        Subscription {
            id,
            owner: req.owner,
            rec,
            in_flight: None,
            failures: 0,
            extra_dialogs: Vec::new(),
            end_reported: false,
            retries_423: 0,
            stored_expires_at: None,
        }
    }

    pub(crate) fn from_record(owner: ModuleId, rec: SubscriptionRecord) -> Self {
        Subscription {
            id: SubscriptionId(rec.id),
            owner,
            stored_expires_at: rec.expires_at,
            rec,
            in_flight: None,
            failures: 0,
            extra_dialogs: Vec::new(),
            end_reported: false,
            retries_423: 0,
        }
    }

    pub fn record(&self) -> &SubscriptionRecord {
        &self.rec
    }

    pub fn phase(&self) -> Phase {
        self.rec.phase
    }

    pub(crate) fn matches(&self, presentity: &str, watcher: &str, event: &str) -> bool {
        self.rec.presentity == presentity
            && self.rec.watcher == watcher
            && self.rec.event.eq_ignore_ascii_case(event)
    }

    /// The Call-ID of the current (or last) dialog; empty before the first SUBSCRIBE.
    pub(crate) fn call_id(&self) -> &str {
        &self.rec.call_id
    }

    pub(crate) fn matches_notify(&self, call_id: &str, to_tag: Option<&str>) -> bool {
        // Between a failure and the retry (phase Init) the old dialog is dead: a late
        // NOTIFY on it gets 481 (RFC 6665 §4.1.2.4, after Timer N).
        self.rec.phase != Phase::Init
            && !self.rec.call_id.is_empty()
            && self.rec.call_id == call_id
            && to_tag == Some(self.rec.from_tag.as_str())
    }

    pub(crate) fn view(&self, now: Timestamp) -> SubscriptionView {
        SubscriptionView {
            id: self.id.to_string(),
            presentity: self.rec.presentity.clone(),
            watcher: self.rec.watcher.clone(),
            event: self.rec.event.clone(),
            state: self.rec.phase.as_str().to_string(),
            call_id: (!self.rec.call_id.is_empty()).then(|| self.rec.call_id.clone()),
            expires_in: self.rec.expires_at.map(|e| now.secs_until(Timestamp(e))),
            last_notify_state: self.rec.last_state.clone(),
            last_content_type: self.rec.last_content_type.clone(),
            last_body: self.rec.last_body.clone(),
            owner: self.owner.as_str().to_string(),
        }
    }

    fn timer(&self) -> TimerKey {
        TimerKey::Pua(PuaTimer::Subscription(self.id))
    }

    fn timer_n(&self) -> TimerKey {
        TimerKey::Pua(PuaTimer::TimerN(self.id))
    }

    fn durable_key(&self) -> DurableKey {
        (
            self.rec.phase,
            self.rec.to_tag.clone(),
            self.rec.remote_target.clone(),
            self.rec.route_set.clone(),
        )
    }

    /// Whether a NOTIFY that left the durable key as `before` needs its record written.
    fn notify_needs_write(&self, before: &DurableKey) -> bool {
        if self.durable_key() != *before {
            return true;
        }
        match (self.stored_expires_at, self.rec.expires_at) {
            (Some(a), Some(b)) => a.abs_diff(b) > EXPIRY_SLACK_MS,
            (a, b) => a != b,
        }
    }

    fn persist(&mut self, svc: &mut Services) {
        self.stored_expires_at = self.rec.expires_at;
        svc.put_record(
            StoreTable::Subscriptions,
            self.id.to_string(),
            self.owner.as_str(),
            &self.rec.presentity,
            self.rec.desired_until.map(Timestamp),
            &self.rec,
        );
    }

    fn forget(&self, svc: &mut Services) {
        svc.cancel_timer(self.timer());
        svc.cancel_timer(self.timer_n());
        svc.store(StoreOp::Delete {
            table: StoreTable::Subscriptions,
            key: self.id.to_string(),
        });
    }

    fn wanted(&self, now: Timestamp) -> bool {
        !self.rec.unsubscribing && self.rec.desired_until.is_none_or(|u| now < Timestamp(u))
    }

    fn wanted_expires(&self, svc: &Services, now: Timestamp) -> u32 {
        if self.rec.desired == Some(0) {
            return 0;
        }
        let base = match (self.rec.desired_until, self.rec.desired) {
            (Some(u), _) => now.secs_until(Timestamp(u)).clamp(1, u32::MAX as u64) as u32,
            (None, Some(d)) => d,
            (None, None) => svc.config.default_expires,
        };
        base.max(self.rec.min_expires)
    }

    fn timer_n_duration(svc: &Services) -> Duration {
        svc.config.tx.t1 * 64
    }

    fn backoff(&self, svc: &mut Services) -> Duration {
        let cap = svc.config.max_backoff.as_millis() as u64;
        let full = 2000u64
            .saturating_mul(1u64 << self.failures.min(20))
            .min(cap);
        Duration::from_millis(svc.ids.fraction_of(full, 0.5, 1.0).max(1))
    }

    /// First SUBSCRIBE of a new subscription. Returns whether the record stays.
    pub(crate) fn start(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        if let Some(d) = self
            .rec
            .desired
            .filter(|d| *d == 0 || !self.rec.refresh_until_unsubscribed)
        {
            // `Some(0)` is a fetch (RFC 6665 §4.4.3): wanted until now, so the final
            // NOTIFY ends it instead of prompting a re-subscription.
            self.rec.desired_until = Some((now + Duration::from_secs(d as u64)).as_millis());
        }
        self.send_initial(svc, now, events)
    }

    /// After a restart: refresh the stored dialog in place at its normal time (at once if
    /// due), CSeq continuing; without a live dialog, subscribe anew.
    pub(crate) fn resume(&mut self, svc: &mut Services, now: Timestamp, slot: &mut Timestamp) {
        let live =
            self.rec.to_tag.is_some() && self.rec.expires_at.is_some_and(|e| now < Timestamp(e));
        if !live {
            self.rec.phase = Phase::Init;
        }
        // Every subscription is resumed at once, a live one with an in-dialog refresh (its
        // last state may not have been written, and the notifier sends the full state
        // again), a dead one on a new dialog; paced at `restore_pace` so a restart does not
        // storm (product.md, Persistence). A live one whose own refresh comes before its
        // slot keeps that time and leaves the slot to the next: with many subscriptions
        // the paced queue is long, and waiting in it would let the dialog expire.
        let paced = (*slot).max(now);
        let own = self
            .rec
            .refresh_at
            .map(Timestamp)
            .filter(|t| live && *t < paced);
        let at = match own {
            Some(t) => t.max(now),
            None => {
                *slot = paced + svc.config.restore_pace;
                paced
            }
        };
        svc.set_timer(self.timer(), at);
    }

    fn new_dialog(&mut self, svc: &mut Services) {
        self.rec.call_id = svc.ids.call_id(&svc.config.local_host);
        self.rec.from_tag = svc.ids.tag();
        self.rec.to_tag = None;
        self.rec.local_cseq = 0;
        self.rec.remote_cseq = None;
        self.rec.route_set.clear();
        self.rec.remote_target = None;
        self.rec.expires_at = None;
        self.extra_dialogs.clear();
    }

    fn base_request(
        &mut self,
        svc: &Services,
        uri: String,
        to_tag: Option<&str>,
        expires: u32,
    ) -> Request {
        self.rec.local_cseq += 1;
        let mut req = Request::new(Method::Subscribe, uri);
        let h = &mut req.headers;
        for r in &self.rec.route_set {
            h.push("Route", r.clone());
        }
        h.push("Max-Forwards", "70");
        h.push(
            "From",
            format!("<{}>;tag={}", self.rec.watcher, self.rec.from_tag),
        );
        match to_tag {
            Some(t) => h.push("To", format!("<{}>;tag={}", self.rec.presentity, t)),
            None => h.push("To", format!("<{}>", self.rec.presentity)),
        }
        h.push("Call-ID", self.rec.call_id.clone());
        h.push("CSeq", format!("{} SUBSCRIBE", self.rec.local_cseq));
        h.push("Contact", format!("<{}>", self.rec.contact));
        h.push("Event", self.rec.event.clone());
        h.push("Expires", expires.to_string());
        if let Some(a) = accept_for(&self.rec.event) {
            h.push("Accept", a);
        }
        h.push("User-Agent", svc.config.user_agent.clone());
        req
    }

    /// Sends an initial SUBSCRIBE on a new dialog. Returns whether the record stays.
    fn send_initial(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        self.new_dialog(svc);
        self.send_initial_same_dialog(svc, now, events)
    }

    /// An initial SUBSCRIBE keeping the Call-ID and From-tag (a retry after 423).
    fn send_initial_same_dialog(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        let expires = self.wanted_expires(svc, now);
        let uri = self
            .rec
            .target
            .clone()
            .unwrap_or_else(|| self.rec.presentity.clone());
        let req = self.base_request(svc, uri, None, expires);
        self.rec.phase = Phase::NotifyWait;
        self.send(svc, now, req, ReqKind::Initial, expires, events)
    }

    fn send_in_dialog(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        kind: ReqKind,
        expires: u32,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        let to_tag = self.rec.to_tag.clone();
        let target = self
            .rec
            .remote_target
            .clone()
            .or_else(|| self.rec.target.clone())
            .unwrap_or_else(|| self.rec.presentity.clone());
        let req = self.base_request(svc, target, to_tag.as_deref(), expires);
        self.send(svc, now, req, kind, expires, events)
    }

    fn send(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        req: Request,
        kind: ReqKind,
        expires: u32,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        self.persist(svc);
        let route_set = self.rec.route_set.clone();
        let hop = self.rec.next_hop.as_deref();
        match svc.send_request_via(now, TxOwner::Subscription(self.id), &route_set, hop, req) {
            Ok(tx) => {
                tracing::debug!(id = %self.id, ?kind, expires, call_id = %self.rec.call_id, "SUBSCRIBE sent");
                self.in_flight = Some(InFlight { tx, kind, expires });
                svc.cancel_timer(self.timer());
                // Timer N runs on every SUBSCRIBE (RFC 6665 §4.1.2.4).
                svc.set_timer(self.timer_n(), now + Self::timer_n_duration(svc));
                true
            }
            Err(e) => {
                tracing::warn!(id = %self.id, error = %e, "SUBSCRIBE not sent; subscription dropped");
                events.push(PuaEvent::SubscribeResult {
                    id: self.id,
                    code: 500,
                    reason: "Send Failure".into(),
                });
                events.push(PuaEvent::SubscriptionEnded {
                    id: self.id,
                    end: SubscriptionEnd::Response {
                        code: 500,
                        reason: "Send Failure".into(),
                    },
                    retry_at: None,
                });
                self.forget(svc);
                false
            }
        }
    }

    /// The owner ends the subscription. Returns whether the record stays.
    pub(crate) fn unsubscribe(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        if self.rec.unsubscribing {
            return true;
        }
        self.rec.unsubscribing = true;
        if self.rec.to_tag.is_some() && !matches!(self.rec.phase, Phase::Terminated | Phase::Init) {
            // Case 28: same dialog, CSeq+1, Expires: 0.
            return self.send_in_dialog(svc, now, ReqKind::Unsubscribe, 0, events);
        }
        // No dialog yet: nothing to end on the wire; a late NOTIFY gets 481, which ends the
        // notifier's side (RFC 6665 §4.1.3).
        self.end_reported = true;
        events.push(PuaEvent::SubscriptionEnded {
            id: self.id,
            end: SubscriptionEnd::Unsubscribed,
            retry_at: None,
        });
        self.forget(svc);
        false
    }

    pub(crate) fn on_resent(&mut self, old: ClientTxId, new: ClientTxId, cseq: u32) {
        if let Some(f) = self.in_flight.as_mut().filter(|f| f.tx == old) {
            f.tx = new;
            self.rec.local_cseq = self.rec.local_cseq.max(cseq);
        }
    }

    /// Schedules the next refresh from a granted interval of `secs` (refresh window).
    ///
    /// The first refresh of a new dialog is drawn in [`FIRST_REFRESH_FLOOR`]–`hi` of the
    /// interval instead of `lo`–`hi`: subscriptions made in a burst (a roster arriving, a
    /// restart) would otherwise refresh in the same burst every interval. Drawn over most
    /// of the interval once, their refreshes stay spread ever after (measured in
    /// BENCHMARKS.md: busiest second ≤ 2× the mean). It costs one early refresh per dialog.
    fn schedule_refresh(&mut self, svc: &mut Services, now: Timestamp, secs: u32) {
        let (lo, hi) = svc.config.refresh_window;
        let lo = if self.rec.local_cseq <= 1 {
            FIRST_REFRESH_FLOOR.min(lo)
        } else {
            lo
        };
        let at = now + Duration::from_millis(svc.ids.fraction_of(secs as u64 * 1000, lo, hi));
        let at = match self.rec.desired_until {
            // The owner's wish ends before: no refresh, let the subscription run out.
            Some(u) if u <= (now + Duration::from_secs(secs as u64)).as_millis() => {
                now + Duration::from_secs(secs as u64)
            }
            _ => at,
        };
        self.rec.refresh_at = Some(at.as_millis());
        svc.set_timer(self.timer(), at);
    }

    /// Gives up the dialog and tries again on a new one at `at`.
    fn retry_later(
        &mut self,
        svc: &mut Services,
        at: Timestamp,
        end: SubscriptionEnd,
        events: &mut Vec<PuaEvent>,
    ) {
        self.in_flight = None;
        svc.cancel_timer(self.timer_n());
        self.rec.phase = Phase::Init;
        self.rec.to_tag = None;
        self.rec.refresh_at = Some(at.as_millis());
        self.persist(svc);
        svc.set_timer(self.timer(), at);
        events.push(PuaEvent::SubscriptionEnded {
            id: self.id,
            end,
            retry_at: Some(at),
        });
    }

    fn end_for_good(
        &mut self,
        svc: &mut Services,
        end: SubscriptionEnd,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        events.push(PuaEvent::SubscriptionEnded {
            id: self.id,
            end,
            retry_at: None,
        });
        self.forget(svc);
        false
    }

    /// The final response to our outstanding SUBSCRIBE (`None`: timeout, as 408).
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
        let header = |name: &str| resp.and_then(|r| r.headers.get(name));
        let min_expires =
            header("Min-Expires").and_then(|v| parse_delta_seconds("Min-Expires", v).ok());
        if status == 423 && flight.kind != ReqKind::Unsubscribe && self.retries_423 < 2 {
            // Retried even when Min-Expires is not above what we asked (a confused server
            // gets the longer of the two), but only twice in a row, so it cannot loop.
            if let Some(min) = min_expires {
                self.retries_423 += 1;
                self.rec.min_expires = min;
                return match flight.kind {
                    ReqKind::Initial => self.send_initial_same_dialog(svc, now, events),
                    // Case 21: a new in-dialog SUBSCRIBE with Expires ≥ Min-Expires.
                    _ => self.send_in_dialog(
                        svc,
                        now,
                        ReqKind::Refresh,
                        min.max(self.wanted_expires(svc, now)),
                        events,
                    ),
                };
            }
        }
        self.retries_423 = 0;
        events.push(PuaEvent::SubscribeResult {
            id: self.id,
            code: status,
            reason: reason.clone(),
        });
        let retry_after = header("Retry-After").and_then(|v| parse_retry_after(v).ok());
        let success = (200..300).contains(&status);
        match flight.kind {
            ReqKind::Unsubscribe => {
                if !self.end_reported {
                    self.end_reported = true;
                    events.push(PuaEvent::SubscriptionEnded {
                        id: self.id,
                        end: SubscriptionEnd::Unsubscribed,
                        retry_at: None,
                    });
                }
                if success {
                    // Keep matching until the final NOTIFY (terminated) arrives; Timer N
                    // (still armed) bounds the wait.
                    self.rec.phase = Phase::Terminated;
                    self.persist(svc);
                    true
                } else {
                    self.forget(svc);
                    false
                }
            }
            ReqKind::Initial | ReqKind::Refresh if success => {
                // A 202 is a 200 (RFC 6665 §8.3.1). The NOTIFY's expires stays authoritative.
                let granted = header("Expires")
                    .and_then(|v| parse_delta_seconds("Expires", v).ok())
                    .unwrap_or(flight.expires);
                let notified_first = flight.kind == ReqKind::Initial && self.rec.to_tag.is_some();
                if notified_first {
                    // The NOTIFY that beat this 2xx already set expiry and refresh (case 32).
                    if let Some(at) = self.rec.refresh_at {
                        svc.set_timer(self.timer(), Timestamp(at));
                    }
                } else {
                    self.rec.expires_at =
                        Some((now + Duration::from_secs(granted as u64)).as_millis());
                    if granted > 0 {
                        self.schedule_refresh(svc, now, granted);
                    }
                }
                self.persist(svc);
                true
            }
            ReqKind::Initial => {
                if matches!(status, 403 | 489 | 603) {
                    // Case 20: the notifier refuses for good.
                    return self.end_for_good(
                        svc,
                        SubscriptionEnd::Response {
                            code: status,
                            reason,
                        },
                        events,
                    );
                }
                let delay = retry_after
                    .map(|s| Duration::from_secs(s as u64))
                    .unwrap_or_else(|| self.backoff(svc));
                self.failures = self.failures.saturating_add(1);
                self.retry_later(
                    svc,
                    now + delay,
                    SubscriptionEnd::Response {
                        code: status,
                        reason,
                    },
                    events,
                );
                true
            }
            ReqKind::Refresh => {
                if status == 481 || ends_dialog(status) {
                    // Case 22: the dialog is gone; subscribe anew on a new dialog at once.
                    events.push(PuaEvent::SubscriptionEnded {
                        id: self.id,
                        end: SubscriptionEnd::Response {
                            code: status,
                            reason,
                        },
                        retry_at: Some(now),
                    });
                    svc.cancel_timer(self.timer_n());
                    return self.send_initial(svc, now, events);
                }
                // Other errors: the subscription stays valid until its known expiry
                // (RFC 6665 §4.1.2.2); try the refresh again before then.
                svc.cancel_timer(self.timer_n());
                let delay = retry_after
                    .map(|s| Duration::from_secs(s as u64))
                    .unwrap_or_else(|| self.backoff(svc));
                self.failures = self.failures.saturating_add(1);
                let mut at = now + delay;
                if let Some(e) = self.rec.expires_at {
                    at = at.min(Timestamp(e));
                }
                self.rec.refresh_at = Some(at.as_millis());
                self.persist(svc);
                svc.set_timer(self.timer(), at);
                true
            }
        }
    }

    /// Timer N fired: no NOTIFY since the last SUBSCRIBE (RFC 6665 §4.1.2.4, case 23).
    pub(crate) fn on_timer_n(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        if self.rec.unsubscribing {
            // The final NOTIFY never came; the subscription is over anyway.
            if !self.end_reported {
                events.push(PuaEvent::SubscriptionEnded {
                    id: self.id,
                    end: SubscriptionEnd::Unsubscribed,
                    retry_at: None,
                });
            }
            self.forget(svc);
            return false;
        }
        tracing::info!(id = %self.id, call_id = %self.rec.call_id, "Timer N fired without NOTIFY");
        self.failures = self.failures.saturating_add(1);
        let at = now + self.backoff(svc);
        self.retry_later(svc, at, SubscriptionEnd::NoNotify, events);
        true
    }

    /// The subscription's timer: refresh, retry, or the end of its wanted life.
    pub(crate) fn on_timer(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        if self.in_flight.is_some() {
            return true;
        }
        if self.rec.unsubscribing {
            self.forget(svc);
            return false;
        }
        if !self.wanted(now) {
            return self.end_for_good(svc, SubscriptionEnd::Expired, events);
        }
        let live = self.rec.to_tag.is_some()
            && matches!(self.rec.phase, Phase::Active | Phase::Pending)
            && self.rec.expires_at.is_some_and(|e| now < Timestamp(e));
        if live {
            let expires = self.wanted_expires(svc, now);
            self.send_in_dialog(svc, now, ReqKind::Refresh, expires, events)
        } else {
            self.send_initial(svc, now, events)
        }
    }

    /// A NOTIFY matched to this subscription by Call-ID and To-tag. Answers it on `stx`.
    /// Returns whether the record stays.
    pub(crate) fn on_notify(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        stx: ServerTxId,
        req: &Request,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        let durable_before = self.durable_key();
        let ours = package_of(&self.rec.event);
        let event_ok = req
            .headers
            .get("Event")
            .and_then(|v| EventHeader::parse(v).ok())
            .is_some_and(|e| e.package.eq_ignore_ascii_case(&ours));
        if !event_ok {
            // Case 31: an Event that is not this dialog's.
            tracing::info!(id = %self.id, event = ?req.headers.get("Event"), "NOTIFY with a foreign Event");
            svc.reply(now, stx, req, 489, "Bad Event", |r| {
                r.headers.push("Allow-Events", ours.clone())
            });
            return true;
        }
        let state = match req.headers.get("Subscription-State").map(SubState::parse) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::info!(id = %self.id, error = %e, "NOTIFY with a bad Subscription-State");
                svc.reply(now, stx, req, 400, "Bad Subscription-State", |_| {});
                return true;
            }
            None => {
                svc.reply(now, stx, req, 400, "Missing Subscription-State", |_| {});
                return true;
            }
        };
        let Some(from_tag) = req
            .headers
            .get("From")
            .and_then(|v| NameAddr::parse("From", v).ok())
            .and_then(|n| n.tag().map(str::to_string))
        else {
            svc.reply(now, stx, req, 400, "Missing From Tag", |_| {});
            return true;
        };
        let cseq = req
            .headers
            .get("CSeq")
            .and_then(|v| CSeq::parse(v).ok())
            .map(|c| c.seq)
            .unwrap_or(0);
        let content_type = req.headers.get("Content-Type");
        let body = match parse_body(content_type, &req.body) {
            Ok(mut b) => {
                if let Some(lang) = req.headers.get("Content-Language") {
                    apply_content_language(&mut b, lang);
                }
                b
            }
            Err(e) => {
                tracing::info!(id = %self.id, error = %e, "NOTIFY with an unusable body");
                svc.reply(now, stx, req, 400, "Bad Body", |_| {});
                return true;
            }
        };
        match &self.rec.to_tag {
            Some(t) if *t != from_tag => {
                if ours == "presence" {
                    // Case 29: presence allows one dialog per SUBSCRIBE (RFC 3856 §6.9).
                    svc.reply(now, stx, req, 481, "Subscription Does Not Exist", |_| {});
                    return true;
                }
                return self
                    .on_forked_notify(svc, now, stx, req, from_tag, cseq, state, body, events);
            }
            Some(_) => {
                if self.rec.remote_cseq.is_some_and(|rc| cseq <= rc) {
                    // RFC 3261 §12.2.2: an old CSeq in a dialog.
                    svc.reply(now, stx, req, 500, "Out Of Order", |_| {});
                    return true;
                }
                if let Some(c) = req
                    .headers
                    .get("Contact")
                    .and_then(|v| NameAddr::parse("Contact", v).ok())
                {
                    self.rec.remote_target = Some(c.uri);
                }
            }
            None => {
                // The first NOTIFY creates the dialog (RFC 6665 §4.1.2.4), also before the 2xx.
                self.rec.to_tag = Some(from_tag.clone());
                self.rec.route_set = req
                    .headers
                    .get_all("Record-Route")
                    .into_iter()
                    .flat_map(|v| NameAddr::parse_list("Record-Route", v).unwrap_or_default())
                    .map(|n| n.to_string())
                    .collect();
                self.rec.remote_target = req
                    .headers
                    .get("Contact")
                    .and_then(|v| NameAddr::parse("Contact", v).ok())
                    .map(|n| n.uri);
            }
        }
        self.rec.remote_cseq = Some(cseq);
        svc.cancel_timer(self.timer_n());
        self.rec.last_state = Some(state.to_string());
        if !matches!(body, Body::Empty) {
            // An empty NOTIFY keeps the previous document (RFC 3856 §6.8).
            self.rec.last_content_type = content_type.map(str::to_string);
            self.rec.last_body = Some(String::from_utf8_lossy(&req.body).into_owned());
        }
        match &state {
            SubState::Active { expires } | SubState::Pending { expires } => {
                self.rec.phase = if matches!(state, SubState::Active { .. }) {
                    Phase::Active
                } else {
                    Phase::Pending
                };
                if matches!(state, SubState::Active { .. }) {
                    self.failures = 0;
                }
                if self.rec.unsubscribing {
                    self.rec.phase = Phase::Terminated;
                }
                if let Some(e) = expires {
                    // The NOTIFY's expires is authoritative (RFC 6665 §4.1.2.4).
                    self.rec.expires_at = Some((now + Duration::from_secs(*e as u64)).as_millis());
                    if !self.rec.unsubscribing && *e > 0 {
                        self.schedule_refresh(svc, now, *e);
                    }
                }
                // Write-behind: a NOTIFY that only brings new state is not written.
                if self.notify_needs_write(&durable_before) {
                    self.persist(svc);
                }
                svc.reply(now, stx, req, 200, "OK", |_| {});
                events.push(PuaEvent::Notify {
                    id: self.id,
                    state: state.clone(),
                    body,
                });
                true
            }
            SubState::Terminated {
                reason,
                retry_after,
            } => {
                self.rec.phase = Phase::Terminated;
                self.persist(svc);
                svc.reply(now, stx, req, 200, "OK", |_| {});
                events.push(PuaEvent::Notify {
                    id: self.id,
                    state: state.clone(),
                    body,
                });
                if self.rec.unsubscribing {
                    if !self.end_reported {
                        events.push(PuaEvent::SubscriptionEnded {
                            id: self.id,
                            end: SubscriptionEnd::Unsubscribed,
                            retry_at: None,
                        });
                    }
                    self.forget(svc);
                    return false;
                }
                let end = SubscriptionEnd::Notified(state.clone());
                if !self.wanted(now) {
                    return self.end_for_good(svc, end, events);
                }
                let consecutive = self.failures;
                self.failures = self.failures.saturating_add(1);
                let delay = match reason {
                    Some(
                        TerminationReason::Rejected
                        | TerminationReason::Noresource
                        | TerminationReason::Invariant,
                    ) => {
                        // Case 24: the notifier says not to come back.
                        return self.end_for_good(svc, end, events);
                    }
                    // Cases 25, 27: re-subscribe at once (back off only if it keeps happening).
                    Some(TerminationReason::Deactivated | TerminationReason::Timeout)
                        if consecutive == 0 =>
                    {
                        Duration::ZERO
                    }
                    // Case 26: not before retry-after.
                    _ => match retry_after {
                        Some(s) => Duration::from_secs(*s as u64),
                        None => self.backoff(svc),
                    },
                };
                self.in_flight = None;
                if delay.is_zero() {
                    events.push(PuaEvent::SubscriptionEnded {
                        id: self.id,
                        end,
                        retry_at: Some(now),
                    });
                    svc.cancel_timer(self.timer_n());
                    return self.send_initial(svc, now, events);
                }
                self.retry_later(svc, now + delay, end, events);
                true
            }
        }
    }

    /// A NOTIFY from another fork of our SUBSCRIBE (winfo, dialog: RFC 6665 §4.1.2.4
    /// keeps each dialog). Such dialogs are answered and delivered, not refreshed.
    #[allow(clippy::too_many_arguments)]
    fn on_forked_notify(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        stx: ServerTxId,
        req: &Request,
        from_tag: String,
        cseq: u32,
        state: SubState,
        body: Body,
        events: &mut Vec<PuaEvent>,
    ) -> bool {
        let full = self.extra_dialogs.len() >= MAX_EXTRA_DIALOGS;
        match self.extra_dialogs.iter_mut().find(|d| d.to_tag == from_tag) {
            Some(d) if cseq <= d.remote_cseq => {
                svc.reply(now, stx, req, 500, "Out Of Order", |_| {});
                return true;
            }
            Some(d) => d.remote_cseq = cseq,
            None if full => {
                // Bounded input (product.md, Security): more forks than this are refused.
                svc.reply(now, stx, req, 481, "Subscription Does Not Exist", |_| {});
                return true;
            }
            None => self.extra_dialogs.push(ExtraDialog {
                to_tag: from_tag.clone(),
                remote_cseq: cseq,
            }),
        }
        if matches!(state, SubState::Terminated { .. }) {
            self.extra_dialogs.retain(|d| d.to_tag != from_tag);
        }
        svc.reply(now, stx, req, 200, "OK", |_| {});
        events.push(PuaEvent::Notify {
            id: self.id,
            state,
            body,
        });
        true
    }
}
