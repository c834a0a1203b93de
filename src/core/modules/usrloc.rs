//! The `usrloc` module: REGISTER-driven presence (OpenSIPS/Kamailio `pua_usrloc`, minus
//! its bugs, anchors.md §6.1): a phone that does no presence still shows online while it
//! is registered.
//!
//! For every selected AOR (a configured domain, list or pattern, or an AOR whose REGISTER
//! copy carried the publish mark) the module publishes `presence` for the AOR through the
//! PUA, so into the local presence state service when the domain is served here and by
//! PUBLISH otherwise:
//!
//! - while the AOR has bindings (any source): one `<tuple>` per binding, `open`, its
//!   `<contact>` the binding's contact (with the binding's `q` as priority), its id
//!   `ul-` + a hash of the contact, stable across refreshes and restarts;
//! - when the last binding is removed or expires: the same tuples `closed` (pua_usrloc
//!   never publishes closed, and Kamailio publishes nothing on expiry, kamailio#3273),
//!   then, after `closed_linger`, the publication is removed.
//!
//! The document is always recomputed from the live bindings of the AOR
//! (`LocalSite::bindings_of`) and published only when it differs from the last one
//! published (kept in the module's record, which survives restarts: nothing is published
//! twice, and bindings that lapsed while the gateway was down produce their `closed` at
//! once). A phone's own PUBLISH wins over the derived tuple of its device: see
//! `presence_state::compose`, Derived tuples.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::admin::{AdminCommand, AdminReply};
use super::{restored_state, Module, ModuleCtx, ModuleId};
use crate::core::admin_api::UsrlocView;
use crate::core::handles::AdminRequestId;
use crate::core::local_site::aor;
use crate::core::persist::StoredRow;
use crate::core::presence::model::{Basic, Contact, PresenceDoc, Tuple};
use crate::core::presence::{build_pidf, PIDF};
use crate::core::pua::PublishRequest;
use crate::core::registrar::{BindingChange, BindingEvent, BindingSource};
use crate::core::routing::uri_domain;
use crate::core::time::Timestamp;

/// Which AORs are published and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsrlocConfig {
    /// Every AOR of these domains.
    pub domains: Vec<String>,
    /// These AORs.
    pub aors: Vec<String>,
    /// AORs matching one of these patterns (`*` matches any run of characters).
    pub patterns: Vec<String>,
    /// The PIDF `entity` is `<prefix>:<user>@<domain>` (OpenSIPS `entity_prefix`);
    /// `None`: the AOR.
    pub entity_prefix: Option<String>,
    /// The domain of an AOR reported without one (OpenSIPS `default_domain`).
    pub default_domain: Option<String>,
    /// How long the `closed` document stays published before it is removed.
    pub closed_linger: Duration,
}

/// The module's record of one AOR (`StoreTable::ModuleState`, key `usrloc:<aor>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct AorRecord {
    aor: String,
    /// A REGISTER copy of this AOR carried the publish mark (kept while it has bindings).
    #[serde(default)]
    marked: bool,
    /// The document last published, `None` before the first.
    published: Option<String>,
    /// The tuples (id, contact) of `published`, to publish them `closed`.
    #[serde(default)]
    tuples: Vec<(String, String, Option<u16>)>,
    /// When the `closed` document is removed (ms); `None` while open.
    remove_at: Option<u64>,
}

const STORE_PREFIX: &str = "usrloc:";

/// See the module docs.
#[derive(Debug)]
pub struct UsrlocModule {
    cfg: UsrlocConfig,
    records: BTreeMap<String, AorRecord>,
    /// (remove_at, AOR) of the closed records: the timer without a scan of every record.
    removals: BTreeSet<(u64, String)>,
}

/// A stable tuple id for a contact (FNV-1a, so the same on every run and machine).
fn tuple_id(contact: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in contact.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("ul-{h:016x}")
}

/// `*` matches any run of characters; everything else matches itself (ASCII case-blind).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl UsrlocModule {
    pub fn new(cfg: UsrlocConfig) -> Self {
        UsrlocModule {
            cfg,
            records: BTreeMap::new(),
            removals: BTreeSet::new(),
        }
    }

    /// The AOR as published: `default_domain` added when it has none.
    fn presentity(&self, reported: &str) -> String {
        match (&self.cfg.default_domain, reported.contains('@')) {
            (Some(d), false) => {
                let user = reported.trim().trim_start_matches("sip:");
                format!("sip:{user}@{d}")
            }
            _ => aor(reported),
        }
    }

    /// The AORs whose bindings make up `presentity`: itself, and its domainless form when
    /// `default_domain` is the presentity's domain (the inverse of [`Self::presentity`]).
    fn source_aors(&self, presentity: &str) -> Vec<String> {
        let mut out = vec![presentity.to_string()];
        if let (Some(d), Some((user, domain))) = (
            &self.cfg.default_domain,
            presentity
                .split_once(':')
                .and_then(|(_, rest)| rest.split_once('@')),
        ) {
            if domain.eq_ignore_ascii_case(d) {
                out.push(format!("sip:{user}"));
            }
        }
        out
    }

    fn selected_by_config(&self, presentity: &str) -> bool {
        uri_domain(presentity)
            .is_some_and(|d| self.cfg.domains.iter().any(|x| x.eq_ignore_ascii_case(&d)))
            || self.cfg.aors.iter().any(|a| aor(a) == presentity)
            || self.cfg.patterns.iter().any(|p| glob_match(p, presentity))
    }

    fn entity(&self, presentity: &str) -> String {
        match &self.cfg.entity_prefix {
            Some(prefix) if !prefix.is_empty() => {
                let bare = presentity
                    .split_once(':')
                    .map_or(presentity, |(_, rest)| rest);
                format!("{prefix}:{bare}")
            }
            _ => presentity.to_string(),
        }
    }

    fn document(
        &self,
        presentity: &str,
        tuples: &[(String, String, Option<u16>)],
        basic: Basic,
    ) -> String {
        build_pidf(&PresenceDoc {
            entity: self.entity(presentity),
            tuples: tuples
                .iter()
                .map(|(id, contact, q)| Tuple {
                    id: id.clone(),
                    basic: Some(basic),
                    contact: Some(Contact {
                        uri: contact.clone(),
                        priority_milli: *q,
                    }),
                    ..Tuple::default()
                })
                .collect(),
            ..PresenceDoc::default()
        })
    }

    fn persist(&self, ctx: &mut ModuleCtx<'_>, presentity: &str) {
        let rec = self.records.get(presentity);
        ctx.put_state(
            format!("{STORE_PREFIX}{presentity}"),
            presentity,
            rec.and_then(|r| r.remove_at).map(Timestamp::from_millis),
            rec,
        );
    }

    fn publish(&self, ctx: &mut ModuleCtx<'_>, presentity: &str, body: Option<String>) {
        let remove = body.is_none();
        let result = ctx.publish(PublishRequest {
            owner: ModuleId::Usrloc,
            presentity: presentity.to_string(),
            event: "presence".into(),
            content_type: body.as_ref().map(|_| PIDF.to_string()),
            body: body.map(String::into_bytes),
            expires: if remove { Some(0) } else { None },
            etag: None,
            extra_headers: Vec::new(),
            instance: None,
            sender: None,
        });
        if let Err(e) = result {
            tracing::warn!(presentity, error = %e, "usrloc publication not changed");
        }
    }

    /// Brings the publication of `presentity` in line with its live bindings.
    fn reconcile(&mut self, ctx: &mut ModuleCtx<'_>, presentity: &str) {
        let now = ctx.now;
        let mut bindings: Vec<(String, String, Option<u16>)> = self
            .source_aors(presentity)
            .iter()
            .flat_map(|a| ctx.svc.site.bindings_of(a))
            .filter(|(_, b)| b.expires_at > now)
            .map(|(_, b)| (tuple_id(&b.contact), b.contact.clone(), b.q))
            .collect();
        bindings.sort();
        bindings.dedup_by(|a, b| a.0 == b.0);
        let marked = self.records.get(presentity).is_some_and(|r| r.marked);
        if !self.selected_by_config(presentity) && !marked {
            return;
        }
        let mut rec = self.records.get(presentity).cloned().unwrap_or(AorRecord {
            aor: presentity.to_string(),
            ..AorRecord::default()
        });
        if !bindings.is_empty() {
            let doc = self.document(presentity, &bindings, Basic::Open);
            if rec.published.as_deref() == Some(doc.as_str()) && rec.remove_at.is_none() {
                return;
            }
            self.publish(ctx, presentity, Some(doc.clone()));
            rec.published = Some(doc);
            rec.tuples = bindings;
            rec.remove_at = None;
        } else {
            if rec.published.is_none() || rec.remove_at.is_some() {
                return;
            }
            let doc = self.document(presentity, &rec.tuples, Basic::Closed);
            self.publish(ctx, presentity, Some(doc.clone()));
            rec.published = Some(doc);
            rec.remove_at = Some((now + self.cfg.closed_linger).as_millis());
            rec.marked = false;
        }
        self.put(presentity, rec);
        self.persist(ctx, presentity);
        self.arm(ctx);
    }

    /// Stores `rec` for `presentity`, keeping `removals` in step.
    fn put(&mut self, presentity: &str, rec: AorRecord) {
        self.forget(presentity);
        if let Some(at) = rec.remove_at {
            self.removals.insert((at, presentity.to_string()));
        }
        self.records.insert(presentity.to_string(), rec);
    }

    fn forget(&mut self, presentity: &str) {
        if let Some(at) = self.records.remove(presentity).and_then(|r| r.remove_at) {
            self.removals.remove(&(at, presentity.to_string()));
        }
    }

    fn arm(&self, ctx: &mut ModuleCtx<'_>) {
        match self.removals.first().map(|(at, _)| *at) {
            Some(at) => ctx.set_timer(0, Timestamp::from_millis(at)),
            None => ctx.cancel_timer(0),
        }
    }

    /// The module's view for the management API.
    pub fn views(&self, now: Timestamp) -> Vec<UsrlocView> {
        self.records
            .values()
            .map(|r| UsrlocView {
                aor: r.aor.clone(),
                state: if r.remove_at.is_some() {
                    "closed"
                } else {
                    "open"
                }
                .into(),
                contacts: r.tuples.iter().map(|(_, c, _)| c.clone()).collect(),
                marked: r.marked,
                removed_in: r
                    .remove_at
                    .map(|at| now.secs_until(Timestamp::from_millis(at))),
            })
            .collect()
    }
}

impl Module for UsrlocModule {
    fn id(&self) -> ModuleId {
        ModuleId::Usrloc
    }

    fn on_binding_changed(&mut self, ctx: &mut ModuleCtx<'_>, change: &BindingChange) {
        let presentity = self.presentity(&change.event.binding().aor);
        if change.source == BindingSource::Copy
            && change.marked
            && matches!(
                change.event,
                BindingEvent::Added(_) | BindingEvent::Refreshed(_)
            )
        {
            let rec = self
                .records
                .entry(presentity.clone())
                .or_insert_with(|| AorRecord {
                    aor: presentity.clone(),
                    ..AorRecord::default()
                });
            rec.marked = true;
        }
        self.reconcile(ctx, &presentity);
    }

    fn on_timer(&mut self, ctx: &mut ModuleCtx<'_>, _token: u64) {
        let now = ctx.now.as_millis();
        let due: Vec<String> = self
            .removals
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, a)| a.clone())
            .collect();
        for presentity in due {
            self.publish(ctx, &presentity, None);
            self.forget(&presentity);
            self.persist(ctx, &presentity);
            tracing::info!(presentity, "usrloc publication removed after closed");
        }
        self.arm(ctx);
    }

    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        for rec in restored_state::<AorRecord>(rows, ModuleId::Usrloc, STORE_PREFIX) {
            let a = rec.aor.clone();
            self.put(&a, rec);
        }
        // The registration sources were restored before this module (module order):
        // every AOR with bindings or a record is brought in line now.
        let mut aors: BTreeSet<String> = self.records.keys().cloned().collect();
        let live: Vec<String> = ctx
            .svc
            .site
            .registrars()
            .flat_map(|r| r.aors().map(str::to_string).collect::<Vec<_>>())
            .collect();
        aors.extend(live.iter().map(|a| self.presentity(a)));
        for presentity in aors {
            self.reconcile(ctx, &presentity);
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
            AdminCommand::ListUsrloc => {
                let views = self.views(ctx.now);
                ctx.admin_reply(id, AdminReply::Usrloc(views));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_match_runs_of_characters() {
        assert!(glob_match("sip:*@example.org", "sip:bob@example.org"));
        assert!(glob_match("sip:desk-*@*", "sip:desk-12@Example.org"));
        assert!(!glob_match("sip:desk-*@example.org", "sip:bob@example.org"));
        assert!(glob_match("sip:bob@example.org", "SIP:bob@example.org"));
        assert!(!glob_match("sip:*@example.org", "sip:bob@example.org.evil"));
    }

    #[test]
    fn tuple_ids_are_stable_per_contact_and_valid_xml_ids() {
        let a = tuple_id("sip:bob@192.0.2.1:5060");
        assert_eq!(a, tuple_id("sip:bob@192.0.2.1:5060"));
        assert_ne!(a, tuple_id("sip:bob@192.0.2.2:5060"));
        assert!(a.starts_with("ul-") && a.len() == 19);
    }
}
