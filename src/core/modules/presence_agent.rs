//! The `presence_agent` module: the SIP presence server of the locally served domains
//! (product.md, "Embedded presence agent"), with Kamailio's `presence` + `presence_xml` +
//! `presence_dialoginfo` as the behaviour reference (anchors.md).
//!
//! Policy only, on shared services:
//! - PUBLISH (RFC 3903 §6) goes to the presence state service (`LocalSite::presence`),
//!   which decides 200/412/423/489/415/400/413/503 and composes the documents;
//! - SUBSCRIBE for `presence`, `presence.winfo`, `dialog` and `dialog;sla` is served by the
//!   shared notifier (RFC 6665) with this module as its policy: full state in every NOTIFY;
//! - watchers are authorized by `LocalSite::rules` (allow / deny / pending, a default per
//!   domain relation); pending watchers are listed in the presentity's `presence.winfo`
//!   (RFC 3857/3858), and rules set through the management API activate or end them.
//!   XCAP (RFC 4825) is out of scope.
//!
//! `dialog-info` `version` counts per subscription (RFC 4235 §4.1): this module keeps the
//! counter per notifier dialog, written behind every [`VERSION_STRIDE`] documents and
//! restored that far ahead, so it only increases across a restart.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::admin::{AdminCommand, AdminReply, RuleView, WatcherView};
use super::{Module, ModuleCtx, ModuleId};
use crate::core::handles::AdminRequestId;
use crate::core::local_site::{aor, ByPresentity, LocalSite, OfPresentity};
use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::presence::pidf::build_pidf;
use crate::core::presence::watcherinfo::{
    build_watcherinfo, Watcher, WatcherEvent, WatcherInfo, WatcherList, WatcherStatus,
};
use crate::core::presence::{DocState, PresenceDoc, DIALOG_INFO, PIDF, WATCHERINFO};
use crate::core::presence_state::{stamp_dialog_info_version, EventKey, PublishInput};
use crate::core::registrar::uri_equivalent;
use crate::core::routing::{DomainMatch, Route};
use crate::core::sip::headers::{EventHeader, NameAddr, TerminationReason};
use crate::core::sip::message::{Method, Peer, Request};
use crate::core::sip::notifier::{
    Body as NotifierBody, Decision, NotifierDialogId, NotifierEvent, StateChange, SubscribeInfo,
};
use crate::core::sip::transaction::ServerTxId;
use crate::core::watcher_rules::RuleAction;

/// Packages served to watchers.
pub const SUBSCRIBE_EVENTS: [&str; 4] = ["presence", "presence.winfo", "dialog", "dialog;sla"];
/// Packages accepted in PUBLISH (the ones with composed state).
pub const PUBLISH_EVENTS: [&str; 3] = ["presence", "dialog", "dialog;sla"];

/// The per-dialog document version is stored once per this many documents.
pub const VERSION_STRIDE: u32 = 16;

/// Timer tokens.
const TIMER_EXPIRY: u64 = 1;

/// One SIP watcher dialog this module serves, mirrored from the notifier's events so the
/// policy can answer without the notifier (winfo documents, limits).
#[derive(Clone, Debug, PartialEq, Eq)]
struct WatcherDialog {
    presentity: String,
    watcher: String,
    /// The Event value as the subscriber sent it (`presence`, `dialog;sla`).
    event: String,
    /// The state it watches (`EventKey` of `event`: `dialog;call-id=…` watches `dialog`).
    key: String,
    status: WatcherStatus,
    /// The subscriber's Contact URI (its remote target): a BLA phone's identity for the
    /// sender exclusion (see [`sla_exclusion`]).
    contact: String,
}

/// The sender whose `dialog;sla` publications a watcher is not sent (anchors.md §6.3,
/// pua_bla's `Sender`): the one naming the watcher's Contact (URI equivalence, RFC 3261
/// §19.1.4; Kamailio compares the bytes), else the one naming the watcher's AOR when that
/// is not the line itself (phones subscribing under their own AOR).
fn sla_exclusion(
    site: &LocalSite,
    presentity: &str,
    key: &EventKey,
    watcher: &str,
    contact: &str,
) -> Option<String> {
    let senders = site.presence.senders(presentity, key);
    senders
        .iter()
        .find(|s| !contact.is_empty() && uri_equivalent(s, contact))
        .or_else(|| {
            senders
                .iter()
                .find(|s| aor(s) == watcher && watcher != presentity)
        })
        .cloned()
}

impl OfPresentity for WatcherDialog {
    fn presentity(&self) -> &str {
        &self.presentity
    }
}

/// The state key of an Event value (see `EventKey`), empty when it does not parse.
fn state_key(event: &str) -> String {
    EventHeader::parse(event)
        .map(|h| EventKey::from_header(&h).as_str().to_string())
        .unwrap_or_default()
}

impl WatcherDialog {
    /// The package of the Event value (without parameters).
    fn package(&self) -> &str {
        self.event.split(';').next().unwrap_or("").trim()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct VersionRecord {
    dialog: String,
    version: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct PresenceAgentModule {
    domains: Vec<String>,
    /// The watcher dialogs this module serves, by presentity.
    dialogs: ByPresentity<NotifierDialogId, WatcherDialog>,
    /// Next `version` to write per dialog (dialog-info and watcherinfo documents).
    versions: HashMap<NotifierDialogId, u32>,
    /// A digest of the last document each dialog was sent (its version left at 0), so a
    /// change that leaves one watcher's view as it was sends that watcher nothing (a BLA
    /// phone's own publication, RFC 6665 §4.2.2: NOTIFY on a change of *its* state).
    last_sent: HashMap<NotifierDialogId, u64>,
}

impl PresenceAgentModule {
    pub fn new(domains: Vec<String>) -> Self {
        PresenceAgentModule {
            domains,
            dialogs: ByPresentity::default(),
            versions: HashMap::new(),
            last_sent: HashMap::new(),
        }
    }

    fn domain_match(&self) -> DomainMatch {
        DomainMatch::Only(self.domains.clone())
    }

    /// The body type of the documents of `event` (RFC 3856, 3858, 4235).
    fn body_type(package: &str) -> Option<&'static str> {
        match package {
            "presence" => Some(PIDF),
            "presence.winfo" => Some(WATCHERINFO),
            "dialog" => Some(DIALOG_INFO),
            _ => None,
        }
    }

    /// The next version of `dialog`, written behind every [`VERSION_STRIDE`].
    fn next_version(&mut self, ctx: &mut ModuleCtx<'_>, dialog: NotifierDialogId) -> u32 {
        let v = self.versions.entry(dialog).or_insert(1);
        let current = *v;
        *v = v.saturating_add(1);
        if current.is_multiple_of(VERSION_STRIDE) {
            ctx.store(StoreOp::Put {
                table: StoreTable::Presence,
                key: version_key(dialog),
                owner: ModuleId::PresenceAgent.as_str().into(),
                subject: dialog.key(),
                expires_at: None,
                data: serde_json::to_value(VersionRecord {
                    dialog: dialog.key(),
                    version: current,
                })
                .unwrap_or(serde_json::Value::Null),
            });
        }
        current
    }

    /// The watcherinfo document of `presentity` (RFC 3858), full state.
    fn winfo_document(&self, site: &LocalSite, presentity: &str, version: u32) -> Vec<u8> {
        // RFC 3858 §4.2: one <watcher> per subscription, its last status change as event.
        let entry = |id: String, uri: &str, status: WatcherStatus| Watcher {
            id,
            status,
            event: match status {
                WatcherStatus::Active => WatcherEvent::Approved,
                WatcherStatus::Terminated => WatcherEvent::Rejected,
                _ => WatcherEvent::Subscribe,
            },
            uri: uri.to_string(),
            display_name: None,
            expiration: None,
            duration_subscribed: None,
            lang: None,
        };
        let mut watchers: Vec<Watcher> = self
            .dialogs
            .of(presentity)
            .filter(|(_, d)| d.package() == "presence")
            .map(|(id, d)| entry(id.key(), &d.watcher, d.status))
            .collect();
        watchers.extend(
            site.local_watchers(presentity)
                .into_iter()
                .map(|w| entry(w.id, &w.watcher, w.status)),
        );
        build_watcherinfo(&WatcherInfo {
            version,
            state: DocState::Full,
            lists: vec![WatcherList {
                resource: presentity.to_string(),
                package: "presence".into(),
                watchers,
            }],
        })
        .into_bytes()
    }

    /// The document a watcher of `event` on `presentity` sees, `None` when there is no
    /// state yet (presence without publications: a NOTIFY without body, RFC 3856 §6.8).
    fn document_for(
        &self,
        site: &LocalSite,
        presentity: &str,
        event: &str,
        watcher: &str,
        contact: &str,
        version: u32,
    ) -> Option<NotifierBody> {
        let header = EventHeader::parse(event).ok()?;
        if header.package == "presence.winfo" {
            return Some(NotifierBody::new(
                WATCHERINFO,
                self.winfo_document(site, presentity, version),
            ));
        }
        let key = EventKey::from_header(&header);
        // A BLA phone is not told its own state (anchors.md §6.3; pua_bla's Sender).
        let exclude = (key.as_str() == "dialog;sla")
            .then(|| sla_exclusion(site, presentity, &key, watcher, contact))
            .flatten();
        let ct = Self::body_type(&header.package)?;
        match site
            .presence
            .document(presentity, &key, version, exclude.as_deref())
        {
            Some(b) => Some(NotifierBody::new(ct, b)),
            // No publication (any more): a document without tuples says so (RFC 3863
            // §4.1: the presentity offers no service), rather than a NOTIFY without body,
            // which would leave the watcher at the last state (RFC 3856 §6.8).
            None if header.package == "presence" => Some(NotifierBody::new(
                PIDF,
                build_pidf(&PresenceDoc {
                    entity: presentity.to_string(),
                    ..PresenceDoc::default()
                })
                .into_bytes(),
            )),
            None => None,
        }
    }

    /// Pushes the current state to every active dialog of `presentity` for `event_key`.
    fn fan_out(&mut self, ctx: &mut ModuleCtx<'_>, presentity: &str, event_key: &str) {
        let targets: Vec<(NotifierDialogId, WatcherDialog)> = self
            .dialogs
            .of(presentity)
            .filter(|(_, d)| d.status == WatcherStatus::Active && d.key == event_key)
            .map(|(id, d)| (id, d.clone()))
            .collect();
        // One composition per view (the whole state, or the state without one BLA
        // sender's publications), not one per watcher; dialog-info gets each dialog's own
        // version stamped into the shared document.
        let mut views: HashMap<Option<String>, (Option<NotifierBody>, u64)> = HashMap::new();
        for (id, d) in targets {
            let exclude = (d.key == "dialog;sla")
                .then(|| {
                    sla_exclusion(
                        &ctx.svc.site,
                        presentity,
                        &EventKey::dialog_sla(),
                        &d.watcher,
                        &d.contact,
                    )
                })
                .flatten();
            let (base, digest) = views
                .entry(exclude)
                .or_insert_with(|| {
                    let b = self.document_for(
                        &ctx.svc.site,
                        presentity,
                        &d.event,
                        &d.watcher,
                        &d.contact,
                        0,
                    );
                    let digest = body_digest(b.as_ref());
                    (b, digest)
                })
                .clone();
            if self.last_sent.get(&id) == Some(&digest) {
                continue;
            }
            self.last_sent.insert(id, digest);
            let version = self.next_version(ctx, id);
            let Some(mut body) = base else {
                continue;
            };
            if body.content_type == DIALOG_INFO {
                match stamp_dialog_info_version(&body.bytes, version) {
                    Some(stamped) => body.bytes = stamped.into(),
                    None => {
                        tracing::warn!(%id, "composed dialog-info without a version; recomposed");
                        match self.document_for(
                            &ctx.svc.site,
                            presentity,
                            &d.event,
                            &d.watcher,
                            &d.contact,
                            version,
                        ) {
                            Some(b) => body = b,
                            None => continue,
                        }
                    }
                }
            }
            ctx.notify(id, None, Some(body));
        }
        if event_key == "presence" {
            // XMPP users attached directly (no SIP hop) get the same document.
            ctx.local_presence_changed(presentity);
        }
    }

    /// Pushes a new watcherinfo document to the owner's winfo dialogs of `presentity`.
    fn fan_out_winfo(&mut self, ctx: &mut ModuleCtx<'_>, presentity: &str) {
        let targets: Vec<NotifierDialogId> = self
            .dialogs
            .of(presentity)
            .filter(|(_, d)| d.package() == "presence.winfo" && d.status == WatcherStatus::Active)
            .map(|(id, _)| id)
            .collect();
        for id in targets {
            let version = self.next_version(ctx, id);
            let doc = self.winfo_document(&ctx.svc.site, presentity, version);
            ctx.notify(id, None, Some(NotifierBody::new(WATCHERINFO, doc)));
        }
    }

    fn arm(&self, ctx: &mut ModuleCtx<'_>) {
        match ctx.svc.site.presence.next_deadline() {
            Some(at) => ctx.set_timer(TIMER_EXPIRY, at),
            None => ctx.cancel_timer(TIMER_EXPIRY),
        }
    }

    /// PUBLISH (RFC 3903 §6): the state service decides; the answer carries SIP-ETag and
    /// Expires on 2xx, Min-Expires on 423, Retry-After on 503.
    fn on_publish(&mut self, ctx: &mut ModuleCtx<'_>, stx: ServerTxId, req: &Request) {
        let presentity = aor(&req.uri);
        let Some(event) = req
            .headers
            .get("Event")
            .and_then(|v| EventHeader::parse(v).ok())
        else {
            ctx.reply(stx, req, 489, "Bad Event", |r| {
                r.headers.push("Allow-Events", PUBLISH_EVENTS.join(", "))
            });
            return;
        };
        let if_match: Vec<String> = req
            .headers
            .get_all("SIP-If-Match")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let expires = match req.headers.get("Expires").map(|v| v.trim().parse::<u32>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                ctx.reply(stx, req, 400, "Bad Expires", |_| {});
                return;
            }
        };
        let sender_header = ctx.svc.site.sender_header.clone();
        // `Sender: "Phone 1" <sip:phone1@example.org>` or a bare URI (pua_bla writes the
        // latter); matched with the watchers by `sla_exclusion`.
        let sender =
            req.headers.get(&sender_header).map(
                |v| match crate::core::sip::headers::NameAddr::parse("Sender", v) {
                    Ok(n) => n.uri,
                    Err(_) => v.trim().to_string(),
                },
            );
        let now = ctx.now;
        let input = PublishInput {
            presentity: &presentity,
            event: &event,
            if_match: &if_match,
            expires,
            content_type: req.headers.get("Content-Type"),
            body: &req.body,
            sender: sender.as_deref(),
            origin: "sip",
        };
        let site = &mut ctx.svc.site;
        let (result, ops) = site.presence.publish(now, &mut ctx.svc.ids, input);
        for op in ops {
            ctx.store(op);
        }
        match result {
            Ok(accepted) => {
                tracing::info!(presentity = %presentity, event = %event.package, etag = %accepted.etag, expires = accepted.expires, changed = accepted.changed, "PUBLISH accepted");
                ctx.reply(stx, req, 200, "OK", |r| {
                    r.headers.push("SIP-ETag", accepted.etag.clone());
                    r.headers.push("Expires", accepted.expires.to_string());
                });
                if accepted.changed {
                    let key = EventKey::from_header(&event);
                    self.fan_out(ctx, &presentity, key.as_str());
                }
            }
            Err(refusal) => {
                tracing::info!(presentity = %presentity, code = refusal.code, reason = %refusal.reason, "PUBLISH refused");
                ctx.reply(stx, req, refusal.code, &refusal.reason, |r| {
                    if let Some(m) = refusal.min_expires {
                        r.headers.push("Min-Expires", m.to_string());
                    }
                    if let Some(s) = refusal.retry_after {
                        r.headers.push("Retry-After", s.to_string());
                    }
                    if refusal.code == 489 {
                        r.headers.push("Allow-Events", PUBLISH_EVENTS.join(", "));
                    }
                });
            }
        }
        self.arm(ctx);
    }

    /// A rule was set: activate, end or leave the pair's dialogs, then tell the owner's
    /// winfo watchers.
    fn apply_rule(&mut self, ctx: &mut ModuleCtx<'_>, presentity: &str, watcher: &str) {
        let action = ctx.svc.site.rules.decide(presentity, watcher);
        let pair: Vec<(NotifierDialogId, WatcherDialog)> = self
            .dialogs
            .of(presentity)
            .filter(|(_, d)| d.watcher == watcher && d.package() != "presence.winfo")
            .map(|(id, d)| (id, d.clone()))
            .collect();
        for (id, d) in pair {
            match (action, d.status) {
                (RuleAction::Allow, WatcherStatus::Pending) => {
                    let site = &ctx.svc.site;
                    let probe =
                        self.document_for(site, presentity, &d.event, watcher, &d.contact, 0);
                    self.last_sent.insert(id, body_digest(probe.as_ref()));
                    let version = self.next_version(ctx, id);
                    let site = &ctx.svc.site;
                    let body =
                        self.document_for(site, presentity, &d.event, watcher, &d.contact, version);
                    if let Some(w) = self.dialogs.get_mut(&id) {
                        w.status = WatcherStatus::Active;
                    }
                    ctx.notify(id, Some(StateChange::Activate), body);
                }
                (RuleAction::Deny, _) => {
                    ctx.notify(
                        id,
                        Some(StateChange::Terminate {
                            reason: TerminationReason::Rejected,
                            retry_after: None,
                        }),
                        None,
                    );
                }
                _ => {}
            }
        }
        ctx.local_rule_changed(presentity, watcher);
        self.fan_out_winfo(ctx, presentity);
    }
}

/// A digest of a document (its bytes and type), to tell whether a view changed.
fn body_digest(body: Option<&NotifierBody>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.map(|b| (&b.content_type, &b.bytes)).hash(&mut h);
    h.finish()
}

fn version_key(dialog: NotifierDialogId) -> String {
    format!("pa-version {}", dialog.key())
}

impl Module for PresenceAgentModule {
    fn id(&self) -> ModuleId {
        ModuleId::PresenceAgent
    }

    fn routes(&self) -> Vec<Route> {
        let mut v: Vec<Route> = SUBSCRIBE_EVENTS
            .iter()
            .map(|e| Route::new(Method::Subscribe, Some(e), self.domain_match()))
            .collect();
        v.extend(
            PUBLISH_EVENTS
                .iter()
                .map(|e| Route::new(Method::Publish, Some(e), self.domain_match())),
        );
        v
    }

    fn on_request(&mut self, ctx: &mut ModuleCtx<'_>, stx: ServerTxId, _from: Peer, req: &Request) {
        match req.method {
            Method::Publish => self.on_publish(ctx, stx, req),
            _ => ctx.reply(stx, req, 405, "Method Not Allowed", |_| {}),
        }
    }

    fn notifier_body_types(&self, package: &str) -> Vec<String> {
        Self::body_type(package)
            .map(|t| vec![t.to_string()])
            .unwrap_or_default()
    }

    fn authorize_local(&self, site: &LocalSite, info: &SubscribeInfo<'_>) -> Decision {
        let presentity = aor(if info.presentity.is_empty() {
            info.to_uri
        } else {
            info.presentity
        });
        let watcher = aor(info.watcher);
        if !site.serves(&presentity) {
            return Decision::reject(404);
        }
        let live = self.dialogs.count(&presentity);
        if !info.is_poll && live >= site.max_subscriptions_per_presentity {
            tracing::warn!(presentity = %presentity, live, "subscription limit reached");
            return Decision::reject(503).for_resource(presentity);
        }
        let event = info.event.to_string();
        if info.event.package == "presence.winfo" {
            // Only the presentity itself reads who watches it (RFC 3857 §5.1).
            if watcher != presentity {
                return Decision::reject(403);
            }
            let doc = self.winfo_document(site, &presentity, 0);
            return Decision::active(Some(NotifierBody::new(WATCHERINFO, doc)))
                .for_resource(presentity);
        }
        match site.rules.decide(&presentity, &watcher) {
            RuleAction::Deny => Decision::reject(403),
            RuleAction::Pending => Decision::pending().for_resource(presentity),
            RuleAction::Allow => {
                let contact = info
                    .request
                    .headers
                    .get("Contact")
                    .and_then(|c| NameAddr::parse("Contact", c).ok())
                    .map(|n| n.uri)
                    .unwrap_or_default();
                Decision::active(self.document_for(
                    site,
                    &presentity,
                    &event,
                    &watcher,
                    &contact,
                    0,
                ))
                .for_resource(presentity)
            }
        }
    }

    fn on_notifier_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &NotifierEvent) {
        match event {
            NotifierEvent::Created { dialog, view } => {
                let status = match view.state.as_str() {
                    "active" => WatcherStatus::Active,
                    _ => WatcherStatus::Pending,
                };
                // The first document carried version 0 (authorize); the next is 1.
                self.versions.entry(*dialog).or_insert(1);
                if status == WatcherStatus::Active {
                    let probe = self.document_for(
                        &ctx.svc.site,
                        &view.presentity,
                        &view.event_header,
                        &aor(&view.watcher),
                        &view.remote_target,
                        0,
                    );
                    self.last_sent.insert(*dialog, body_digest(probe.as_ref()));
                }
                self.dialogs.insert(
                    *dialog,
                    WatcherDialog {
                        presentity: view.presentity.clone(),
                        watcher: aor(&view.watcher),
                        event: view.event_header.clone(),
                        key: state_key(&view.event_header),
                        status,
                        contact: view.remote_target.clone(),
                    },
                );
                if view.event == "presence" {
                    let p = view.presentity.clone();
                    self.fan_out_winfo(ctx, &p);
                }
            }
            NotifierEvent::Ended { dialog, view, .. } => {
                self.dialogs.remove(dialog);
                self.last_sent.remove(dialog);
                if self.versions.remove(dialog).is_some() {
                    ctx.store(StoreOp::Delete {
                        table: StoreTable::Presence,
                        key: version_key(*dialog),
                    });
                }
                if view.event == "presence" {
                    let p = view.presentity.clone();
                    self.fan_out_winfo(ctx, &p);
                }
            }
            NotifierEvent::Refreshed { .. } | NotifierEvent::Polled { .. } => {}
        }
    }

    fn on_presence_changed(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        presentity: &str,
        event: &str,
        changed: bool,
    ) {
        if changed {
            if let Ok(h) = EventHeader::parse(event) {
                let key = EventKey::from_header(&h);
                self.fan_out(ctx, presentity, key.as_str());
            }
        }
        self.arm(ctx);
    }

    fn on_timer(&mut self, ctx: &mut ModuleCtx<'_>, token: u64) {
        if token == TIMER_EXPIRY {
            let now = ctx.now;
            let (changed, ops) = ctx.svc.site.presence.handle_timeout(now);
            for op in ops {
                ctx.store(op);
            }
            for c in changed {
                tracing::info!(presentity = %c.presentity, event = %c.event.as_str(), "publication expired");
                self.fan_out(ctx, &c.presentity, c.event.as_str());
            }
        }
        self.arm(ctx);
    }

    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        let n = ctx.svc.site.presence.restore(rows);
        let r = ctx.svc.site.rules.restore(rows);
        tracing::info!(publications = n, rules = r, "presence agent state restored");
        // Mirror the restored notifier dialogs this module owns.
        for view in ctx.svc.notifier.views(ctx.now) {
            if view.owner != ModuleId::PresenceAgent.as_str() {
                continue;
            }
            let Some(id) = NotifierDialogId::parse(&view.id) else {
                continue;
            };
            let status = match view.state.as_str() {
                "active" => WatcherStatus::Active,
                "pending" => WatcherStatus::Pending,
                _ => continue,
            };
            self.dialogs.insert(
                id,
                WatcherDialog {
                    presentity: view.presentity.clone(),
                    watcher: aor(&view.watcher),
                    event: view.event_header.clone(),
                    key: state_key(&view.event_header),
                    status,
                    contact: view.remote_target.clone(),
                },
            );
        }
        for row in rows.iter().filter(|r| {
            r.table == StoreTable::Presence && r.owner == ModuleId::PresenceAgent.as_str()
        }) {
            if let Ok(rec) = serde_json::from_value::<VersionRecord>(row.data.clone()) {
                if let Some(id) = NotifierDialogId::parse(&rec.dialog) {
                    if self.dialogs.contains_key(&id) {
                        // Ahead of anything sent before the restart (see the module docs).
                        self.versions
                            .insert(id, rec.version.saturating_add(VERSION_STRIDE + 1));
                    }
                }
            }
        }
        for id in self.dialogs.keys() {
            self.versions.entry(*id).or_insert(VERSION_STRIDE + 1);
        }
        self.arm(ctx);
    }

    fn on_admin(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        id: AdminRequestId,
        command: &AdminCommand,
    ) -> bool {
        match command {
            AdminCommand::SetRule {
                presentity,
                watcher,
                action,
            } => {
                let presentity = aor(presentity);
                let watcher = aor(watcher);
                if !ctx.svc.site.serves(&presentity) {
                    ctx.admin_reply(
                        id,
                        AdminReply::Error {
                            code: 404,
                            reason: format!("{presentity} is not in a served domain"),
                        },
                    );
                    return true;
                }
                let op = match action {
                    Some(a) => Some(ctx.svc.site.rules.set(&presentity, &watcher, *a)),
                    None => ctx.svc.site.rules.remove(&presentity, &watcher),
                };
                if let Some(op) = op {
                    ctx.store(op);
                }
                tracing::info!(presentity = %presentity, watcher = %watcher, action = ?action, "watcher rule set");
                self.apply_rule(ctx, &presentity, &watcher);
                ctx.admin_reply(id, AdminReply::Rules(rule_views(&ctx.svc.site)));
                true
            }
            AdminCommand::ListRules => {
                ctx.admin_reply(id, AdminReply::Rules(rule_views(&ctx.svc.site)));
                true
            }
            AdminCommand::ListWatchers { presentity } => {
                let filter = presentity.as_deref().map(aor);
                let mut v: Vec<WatcherView> = self
                    .dialogs
                    .iter()
                    .filter(|(_, d)| filter.as_ref().is_none_or(|p| *p == d.presentity))
                    .map(|(id, d)| WatcherView {
                        id: id.key(),
                        presentity: d.presentity.clone(),
                        watcher: d.watcher.clone(),
                        event: d.event.clone(),
                        status: d.status.as_str().to_string(),
                        via: "sip".into(),
                    })
                    .collect();
                for p in ctx.svc.site.local_presentities() {
                    if filter.as_ref().is_some_and(|f| *f != p) {
                        continue;
                    }
                    for w in ctx.svc.site.local_watchers(&p) {
                        v.push(WatcherView {
                            id: w.id.clone(),
                            presentity: p.clone(),
                            watcher: w.watcher.clone(),
                            event: "presence".into(),
                            status: w.status.as_str().to_string(),
                            via: "xmpp".into(),
                        });
                    }
                }
                ctx.admin_reply(id, AdminReply::Watchers(v));
                true
            }
            AdminCommand::ListPresentityPublications => {
                let v = ctx.svc.site.presence.publication_views(ctx.now);
                ctx.admin_reply(id, AdminReply::AgentPublications(v));
                true
            }
            _ => false,
        }
    }
}

fn rule_views(site: &LocalSite) -> Vec<RuleView> {
    site.rules
        .list()
        .into_iter()
        .map(|r| RuleView {
            presentity: r.presentity,
            watcher: r.watcher,
            action: r.action.as_str().to_string(),
        })
        .collect()
}
