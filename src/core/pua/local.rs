//! In-process watchers (product.md, "Embedded presence agent"): a `presence`
//! subscription of a module to a presentity of a locally served domain is attached to the
//! local presence state service instead of a SIP dialog. The owner gets the events a SIP
//! subscription would give (`SubscribeResult`, `Notify` pending/active, `SubscriptionEnded`),
//! so it cannot tell the difference; watcher rules and publications drive them.
//!
//! Likewise a module's publication for a local presentity goes into the presence state
//! service directly ([`PuaService::publish_local`]): the same `PublishResult` events, the
//! same refresh-until-removed contract (refreshed with its entity-tag at 85 % of the
//! granted interval; re-published in full after a 412), stored so it resumes after a
//! restart. Watchers are told through `Services::site_changes`.

use serde::{Deserialize, Serialize};

use super::{
    PuaEvent, PuaService, PuaTimer, PublicationId, PublishError, PublishRequest, SubscribeRequest,
    SubscriptionEnd, SubscriptionId,
};
use crate::core::local_site::{aor, LocalWatch, LocalWatchRecord};
use crate::core::module_id::ModuleId;
use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::presence::watcherinfo::WatcherStatus;
use crate::core::presence::{parse_body, Body, PresenceDoc, PIDF};
use crate::core::presence_state::EventKey;
use crate::core::presence_state::{PresenceState, PublishInput};
use crate::core::services::Services;
use crate::core::services::TimerKey;
use crate::core::sip::headers::EventHeader;
use crate::core::sip::headers::{SubState, TerminationReason};
use crate::core::time::Timestamp;
use crate::core::views::PublicationView;
use crate::core::watcher_rules::RuleAction;

impl PuaService {
    /// Attaches a watcher to a local presentity. The events are those of a SIP
    /// subscription, so the owner cannot tell the difference: `SubscribeResult` 200 (or
    /// 403 and `SubscriptionEnded` when a rule denies), then a `Notify` `pending` (no
    /// body) or `active` with the composed document. Rules set later activate or end it
    /// ([`Self::on_local_rule_changed`]); publications reach it through
    /// [`Self::on_local_presence_changed`].
    pub(super) fn subscribe_local(
        &mut self,
        svc: &mut Services,
        req: SubscribeRequest,
    ) -> SubscriptionId {
        let id = SubscriptionId(self.alloc_id());
        let presentity = aor(&req.presentity);
        let watcher = aor(&req.watcher);
        let action = svc.site.rules.decide(&presentity, &watcher);
        tracing::info!(%id, presentity = %presentity, watcher = %watcher, rule = action.as_str(), "local watcher attached");
        if action == RuleAction::Deny {
            self.emit(
                req.owner,
                PuaEvent::SubscribeResult {
                    id,
                    code: 403,
                    reason: "Forbidden".into(),
                },
            );
            self.emit(
                req.owner,
                PuaEvent::SubscriptionEnded {
                    id,
                    end: SubscriptionEnd::Response {
                        code: 403,
                        reason: "Forbidden".into(),
                    },
                    retry_at: None,
                },
            );
            return id;
        }
        let status = if action == RuleAction::Allow {
            WatcherStatus::Active
        } else {
            WatcherStatus::Pending
        };
        let w = LocalWatch {
            owner: req.owner,
            presentity,
            watcher,
            status,
        };
        store_local(svc, id, &w);
        svc.site.local.insert(id, w.clone());
        self.emit(
            req.owner,
            PuaEvent::SubscribeResult {
                id,
                code: 200,
                reason: "OK".into(),
            },
        );
        self.notify_local(svc, id, &w);
        id
    }

    /// Emits the current state of local watch `id`.
    fn notify_local(&mut self, svc: &Services, id: SubscriptionId, w: &LocalWatch) {
        let (state, body) = match w.status {
            WatcherStatus::Active => {
                let body = match svc.site.document(&w.presentity, &EventKey::presence(), 0) {
                    Some(bytes) => match parse_body(Some(PIDF), &bytes) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "composed document unreadable");
                            Body::Empty
                        }
                    },
                    None => Body::Pidf(PresenceDoc {
                        entity: w.presentity.clone(),
                        ..Default::default()
                    }),
                };
                (SubState::Active { expires: None }, body)
            }
            _ => (SubState::Pending { expires: None }, Body::Empty),
        };
        self.emit(w.owner, PuaEvent::Notify { id, state, body });
    }

    /// The composed presence of `presentity` changed: every active local watcher of it
    /// gets a `Notify` with the new document.
    pub fn on_local_presence_changed(&mut self, svc: &Services, presentity: &str) {
        let targets: Vec<(SubscriptionId, LocalWatch)> = svc
            .site
            .local
            .of(presentity)
            .filter(|(_, w)| w.status == WatcherStatus::Active)
            .map(|(id, w)| (id, w.clone()))
            .collect();
        for (id, w) in targets {
            self.notify_local(svc, id, &w);
        }
    }

    /// The rule of (`presentity`, `watcher`) changed: pending local watchers become active
    /// on `allow`; every local watcher of the pair ends with `terminated;reason=rejected`
    /// on `deny` (RFC 6665 §4.2.2).
    pub fn on_local_rule_changed(&mut self, svc: &mut Services, presentity: &str, watcher: &str) {
        let action = svc.site.rules.decide(presentity, watcher);
        let pair: Vec<SubscriptionId> = svc
            .site
            .local
            .of(presentity)
            .filter(|(_, w)| w.watcher == watcher)
            .map(|(id, _)| id)
            .collect();
        for id in pair {
            let Some(w) = svc.site.local.get(&id).cloned() else {
                continue;
            };
            match action {
                RuleAction::Allow if w.status == WatcherStatus::Pending => {
                    let mut w = w;
                    w.status = WatcherStatus::Active;
                    store_local(svc, id, &w);
                    svc.site.local.insert(id, w.clone());
                    self.notify_local(svc, id, &w);
                }
                RuleAction::Deny => {
                    svc.site.local.remove(&id);
                    let end = SubscriptionEnd::Notified(SubState::Terminated {
                        reason: Some(TerminationReason::Rejected),
                        retry_after: None,
                    });
                    self.end_local(svc, id, &w, end);
                }
                _ => {}
            }
        }
    }

    /// Ends local watch `id` (the owner unsubscribed); `false` when it is no local watch.
    pub(super) fn unsubscribe_local(&mut self, svc: &mut Services, id: SubscriptionId) -> bool {
        let Some(w) = svc.site.local.remove(&id) else {
            return false;
        };
        self.end_local(svc, id, &w, SubscriptionEnd::Unsubscribed);
        true
    }

    /// Removes the stored row of local watch `id` and tells its owner how it ended.
    fn end_local(
        &mut self,
        svc: &mut Services,
        id: SubscriptionId,
        w: &LocalWatch,
        end: SubscriptionEnd,
    ) {
        svc.store(StoreOp::Delete {
            table: StoreTable::Subscriptions,
            key: local_key(id),
        });
        self.emit(
            w.owner,
            PuaEvent::SubscriptionEnded {
                id,
                end,
                retry_at: None,
            },
        );
    }

    /// Rebuilds one local watch from its row (see [`LocalWatchRecord`]).
    pub(super) fn restore_local(&mut self, svc: &mut Services, row: &StoredRow) {
        match serde_json::from_value::<LocalWatchRecord>(row.data.clone()) {
            Ok(rec) => {
                let Some(owner) = ModuleId::parse(&rec.owner) else {
                    tracing::warn!(key = %row.key, owner = %rec.owner, "restored local watch of an unknown module, dropped");
                    return;
                };
                self.next_id = self.next_id.max(rec.id);
                svc.site.local.insert(
                    SubscriptionId(rec.id),
                    LocalWatch {
                        owner,
                        presentity: rec.presentity,
                        watcher: rec.watcher,
                        status: if rec.active {
                            WatcherStatus::Active
                        } else {
                            WatcherStatus::Pending
                        },
                    },
                );
            }
            Err(e) => {
                tracing::warn!(key = %row.key, error = %e, "unreadable local watch row, ignored")
            }
        }
    }
}

/// The store key of local watch `id`.
fn local_key(id: SubscriptionId) -> String {
    format!("local-{}", id.0)
}

/// Writes local watch `id` (see `LocalWatchRecord`).
fn store_local(svc: &mut Services, id: SubscriptionId, w: &LocalWatch) {
    use crate::core::presence::watcherinfo::WatcherStatus;
    let rec = LocalWatchRecord {
        local: true,
        id: id.0,
        owner: w.owner.as_str().to_string(),
        presentity: w.presentity.clone(),
        watcher: w.watcher.clone(),
        active: w.status == WatcherStatus::Active,
    };
    svc.put_record(
        StoreTable::Subscriptions,
        local_key(id),
        w.owner.as_str(),
        &w.presentity,
        None,
        &rec,
    );
}

/// Whether `event` has composed state in the presence state service.
pub(super) fn publishable(event: &str) -> bool {
    EventHeader::parse(event).is_ok_and(|e| PresenceState::supports(&e))
}

/// A module's publication into the local presence state service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalPublication {
    /// Always true: marks the stored row (in `StoreTable::Publications`).
    pub local: bool,
    pub id: u64,
    pub owner: String,
    pub presentity: String,
    pub event: String,
    pub etag: String,
    pub content_type: Option<String>,
    /// The document, kept to publish it again in full after a 412 (RFC 3903 §4.5).
    pub body: Vec<u8>,
    /// Refreshed until removed (the request had no Expires of its own).
    pub refresh: bool,
    /// See `PublishRequest::instance`.
    #[serde(default)]
    pub instance: Option<String>,
    /// See `PublishRequest::sender`.
    #[serde(default)]
    pub sender: Option<String>,
    pub op_seq: u64,
    /// When the granted interval ends (ms).
    pub expires_at: u64,
}

impl LocalPublication {
    pub(super) fn key(&self) -> super::PubKey {
        super::PubKey::new(
            &self.owner,
            &self.presentity,
            &self.event,
            self.instance.as_deref(),
        )
    }

    pub fn view(&self, id: PublicationId, now: Timestamp) -> PublicationView {
        PublicationView {
            id: id.to_string(),
            presentity: self.presentity.clone(),
            event: self.event.clone(),
            etag: Some(self.etag.clone()),
            expires_in: Some(now.secs_until(Timestamp(self.expires_at))),
            content_type: self.content_type.clone(),
            body: String::from_utf8(self.body.clone()).ok(),
            owner: self.owner.clone(),
        }
    }
}

fn local_publication_key(id: PublicationId) -> String {
    format!("local-{}", id.0)
}

impl PuaService {
    /// [`PuaService::publish`] for a presentity of a locally served domain.
    pub(super) fn publish_local(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        req: PublishRequest,
    ) -> Result<PublicationId, PublishError> {
        let presentity = aor(&req.presentity);
        let existing = self.find_local(&super::PubKey::new(
            req.owner.as_str(),
            &presentity,
            &req.event,
            req.instance.as_deref(),
        ));
        if let Some(etag) = &req.etag {
            let ok = existing
                .and_then(|id| self.local_publications.get(&id))
                .is_some_and(|p| &p.etag == etag);
            if !ok {
                return Err(PublishError::UnknownEtag(etag.clone()));
            }
        }
        let previous = existing.and_then(|id| self.local_publications.get(&id).cloned());
        if previous.is_none() {
            if req.expires == Some(0) {
                return Err(PublishError::NoRecord);
            }
            if req.body.is_none() {
                return Err(PublishError::NoBody);
            }
        }
        let id = existing.unwrap_or_else(|| PublicationId(self.alloc_id()));
        let rec = LocalPublication {
            local: true,
            id: id.0,
            owner: req.owner.as_str().to_string(),
            presentity,
            event: req.event.clone(),
            etag: previous
                .as_ref()
                .map(|p| p.etag.clone())
                .unwrap_or_default(),
            content_type: req
                .content_type
                .clone()
                .or_else(|| previous.as_ref().and_then(|p| p.content_type.clone())),
            body: req
                .body
                .clone()
                .or_else(|| previous.as_ref().map(|p| p.body.clone()))
                .unwrap_or_default(),
            refresh: req.expires.is_none(),
            instance: req.instance.clone(),
            sender: req
                .sender
                .clone()
                .or_else(|| previous.as_ref().and_then(|p| p.sender.clone())),
            op_seq: previous.as_ref().map_or(1, |p| p.op_seq + 1),
            expires_at: 0,
        };
        let send_body = req.body.is_some();
        self.apply_local(svc, now, req.owner, id, rec, req.expires, send_body);
        Ok(id)
    }

    /// Sends `rec` (its entity-tag as SIP-If-Match when it has one) to the presence state
    /// service and settles the outcome: the record, its timer and row, the owner's
    /// `PublishResult`, and a site change for the watchers.
    #[allow(clippy::too_many_arguments)]
    fn apply_local(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        owner: ModuleId,
        id: PublicationId,
        mut rec: LocalPublication,
        expires: Option<u32>,
        send_body: bool,
    ) {
        let Ok(event) = EventHeader::parse(&rec.event) else {
            return;
        };
        let if_match: Vec<String> = (!rec.etag.is_empty())
            .then(|| rec.etag.clone())
            .into_iter()
            .collect();
        let body: &[u8] = if send_body || if_match.is_empty() {
            &rec.body
        } else {
            &[]
        };
        let input = PublishInput {
            presentity: &rec.presentity,
            event: &event,
            if_match: &if_match,
            expires,
            content_type: if body.is_empty() {
                None
            } else {
                rec.content_type.as_deref()
            },
            body,
            sender: rec.sender.as_deref(),
            origin: owner.as_str(),
        };
        let (result, ops) = svc.site.presence.publish(now, &mut svc.ids, input);
        for op in ops {
            svc.store(op);
        }
        match result {
            Ok(acc) => {
                let removed = expires == Some(0);
                rec.etag = acc.etag.clone();
                rec.expires_at = now.as_millis() + u64::from(acc.expires) * 1000;
                svc.site_changes.push_back((
                    rec.presentity.clone(),
                    rec.event.clone(),
                    acc.changed,
                ));
                let key = local_publication_key(id);
                if removed {
                    self.remove_local(id);
                    svc.cancel_timer(TimerKey::Pua(PuaTimer::Publication(id)));
                    svc.store(StoreOp::Delete {
                        table: StoreTable::Publications,
                        key,
                    });
                } else {
                    // Refreshed at 85 % of the interval, or dropped when it ends.
                    let at = if rec.refresh {
                        now.as_millis() + u64::from(acc.expires) * 850
                    } else {
                        rec.expires_at
                    };
                    svc.set_timer(
                        TimerKey::Pua(PuaTimer::Publication(id)),
                        Timestamp::from_millis(at),
                    );
                    svc.put_record(
                        StoreTable::Publications,
                        key,
                        owner.as_str(),
                        &rec.presentity,
                        Some(Timestamp(rec.expires_at)),
                        &rec,
                    );
                    self.insert_local(id, rec.clone());
                }
                self.emit(
                    owner,
                    PuaEvent::PublishResult {
                        id,
                        op_seq: rec.op_seq,
                        code: 200,
                        reason: "OK".into(),
                        etag: Some(acc.etag),
                        expires: Some(acc.expires),
                        alive: !removed,
                    },
                );
            }
            Err(refusal) if refusal.code == 412 && !rec.etag.is_empty() => {
                // The state service lost the entity-tag: publish the whole document anew
                // (RFC 3903 §4.5), never the failed request again.
                tracing::info!(%id, presentity = %rec.presentity, "local publication re-published after 412");
                rec.etag.clear();
                self.apply_local(svc, now, owner, id, rec, expires, true);
            }
            Err(refusal) => {
                tracing::warn!(%id, presentity = %rec.presentity, code = refusal.code, reason = %refusal.reason, "local publication refused");
                let alive = self.local_publications.contains_key(&id);
                self.emit(
                    owner,
                    PuaEvent::PublishResult {
                        id,
                        op_seq: rec.op_seq,
                        code: refusal.code,
                        reason: refusal.reason,
                        etag: None,
                        expires: None,
                        alive,
                    },
                );
            }
        }
    }

    /// The timer of local publication `id`: a refresh (no body, its entity-tag), or the
    /// end of a publication that was not to be refreshed.
    pub(super) fn refresh_local(&mut self, svc: &mut Services, now: Timestamp, id: PublicationId) {
        let Some(rec) = self.local_publications.get(&id).cloned() else {
            return;
        };
        let Some(owner) = ModuleId::parse(&rec.owner) else {
            return;
        };
        if !rec.refresh {
            self.remove_local(id);
            svc.store(StoreOp::Delete {
                table: StoreTable::Publications,
                key: local_publication_key(id),
            });
            return;
        }
        self.apply_local(svc, now, owner, id, rec, None, false);
    }

    /// Rebuilds one local publication from its row and arms its timer (a refresh due
    /// during the downtime happens at once).
    pub(super) fn restore_local_publication(
        &mut self,
        svc: &mut Services,
        now: Timestamp,
        row: &StoredRow,
    ) {
        match serde_json::from_value::<LocalPublication>(row.data.clone()) {
            Ok(rec) => {
                let id = PublicationId(rec.id);
                self.next_id = self.next_id.max(rec.id);
                let at = if rec.refresh {
                    // 85 % of what was left is no longer known: refresh soon after start.
                    now.as_millis() + 1000
                } else {
                    rec.expires_at
                };
                svc.set_timer(
                    TimerKey::Pua(PuaTimer::Publication(id)),
                    Timestamp::from_millis(at.max(now.as_millis())),
                );
                self.insert_local(id, rec);
            }
            Err(e) => {
                tracing::warn!(key = %row.key, error = %e, "unreadable local publication row, ignored")
            }
        }
    }
}
