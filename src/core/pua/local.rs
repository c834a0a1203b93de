//! In-process watchers (product.md, "Embedded presence agent"): a `presence`
//! subscription of a module to a presentity of a locally served domain is attached to the
//! local presence state service instead of a SIP dialog. The owner gets the events a SIP
//! subscription would give (`SubscribeResult`, `Notify` pending/active, `SubscriptionEnded`),
//! so it cannot tell the difference; watcher rules and publications drive them.

use super::{PuaEvent, PuaService, SubscribeRequest, SubscriptionEnd, SubscriptionId};
use crate::core::local_site::{aor, LocalWatch, LocalWatchRecord};
use crate::core::module_id::ModuleId;
use crate::core::persist::{StoreOp, StoreTable, StoredRow};
use crate::core::presence::watcherinfo::WatcherStatus;
use crate::core::presence::{parse_body, Body, PresenceDoc, PIDF};
use crate::core::presence_state::EventKey;
use crate::core::services::Services;
use crate::core::sip::headers::{SubState, TerminationReason};
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
            .iter()
            .filter(|(_, w)| w.presentity == presentity && w.status == WatcherStatus::Active)
            .map(|(id, w)| (*id, w.clone()))
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
            .iter()
            .filter(|(_, w)| w.presentity == presentity && w.watcher == watcher)
            .map(|(id, _)| *id)
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
