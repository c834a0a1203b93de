//! The `bla` module: bridged line appearance (draft-anil-sipping-bla-03, OpenSIPS/Kamailio
//! `pua_bla` parity minus its bug: it never unsubscribes when a registration ends,
//! anchors.md §6.3).
//!
//! For every shared line of the config and every phone registered to it (any
//! registration source, `LocalSite::bindings_of`):
//!
//! - the module SUBSCRIBEs `Event: dialog;sla` to the phone: Request-URI the phone's
//!   contact, From and To the line AOR, Contact the gateway, Expires the binding's
//!   remaining time; the PUA refreshes it while the binding lives. The first hop is the
//!   address the REGISTER came from (embedded registrar: a phone behind NAT), else the
//!   contact itself, never the outbound proxy (a presence server would not relay it);
//! - when the binding is removed or expires, the subscription is ended (unSUBSCRIBE) and
//!   the phone's publication removed;
//! - each NOTIFY's dialog-info document is applied to a per-phone [`DialogTable`]
//!   (RFC 4235 §4.1 versions: a stale one is ignored, a partial one after a gap makes the
//!   module refresh the subscription for full state), then the phone's live dialogs are published for the
//!   line AOR, event `dialog;sla`, one publication per phone (`instance` = the phone's
//!   contact), with the phone's contact as sender, so the presence agent (embedded, or
//!   Kamailio's `handle_publish("$hdr(Sender)")`) does not send it back to that phone.
//!   A NOTIFY that is not dialog-info is answered 400 by the PUA and changes nothing; one
//!   in no known dialog gets 481.
//!
//! The phones (line, contact, subscription, last publication) are stored in
//! `StoreTable::ModuleState`; after a restart the PUA resumes the subscriptions and the
//! module ends at once those whose binding lapsed meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::admin::{AdminCommand, AdminReply, BlaLineView, BlaPhoneView};
use super::{restored_state, Module, ModuleCtx, ModuleId};
use crate::core::handles::AdminRequestId;
use crate::core::local_site::aor;
use crate::core::persist::StoredRow;
use crate::core::presence::dialog_info::{build_dialog_info, DialogInfo, DialogTable};
use crate::core::presence::{Body, DocState, VersionOutcome, DIALOG_INFO};
use crate::core::pua::{PuaEvent, PublishRequest, SubscribeRequest, SubscriptionId};
use crate::core::registrar::{Binding, BindingChange, BindingSource};
use crate::core::sip::headers::SubState;

/// The shared lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlaConfig {
    /// Shared-line AORs (normalised `sip:user@domain`).
    pub lines: Vec<String>,
}

const EVENT: &str = "dialog;sla";
const STORE_PREFIX: &str = "bla:";

/// One phone of a line (stored form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PhoneRecord {
    line: String,
    contact: String,
    /// The PUA subscription (`SubscriptionId`), `None` once it ended.
    subscription: Option<u64>,
    /// The document last published for this phone.
    published: Option<String>,
}

#[derive(Clone, Debug)]
struct Phone {
    rec: PhoneRecord,
    table: DialogTable,
    /// `init`, `active`, `pending`, `terminated`, `refused`.
    state: String,
}

/// See the module docs.
#[derive(Debug)]
pub struct BlaModule {
    cfg: BlaConfig,
    /// By (line, contact).
    phones: BTreeMap<(String, String), Phone>,
}

/// The first hop towards the phone of `binding` (see the module docs).
fn hop_of(source: BindingSource, binding: &Binding) -> String {
    if source == BindingSource::Registrar {
        if let Some((transport, addr)) = binding.source.split_once(':') {
            if !addr.is_empty() {
                return format!("sip:{addr};transport={transport}");
            }
        }
    }
    binding.contact.clone()
}

impl BlaModule {
    pub fn new(cfg: BlaConfig) -> Self {
        BlaModule {
            cfg: BlaConfig {
                lines: cfg.lines.iter().map(|l| aor(l)).collect(),
            },
            phones: BTreeMap::new(),
        }
    }

    fn is_line(&self, a: &str) -> bool {
        self.cfg.lines.iter().any(|l| l == a)
    }

    fn key_of(&self, id: SubscriptionId) -> Option<(String, String)> {
        self.phones
            .iter()
            .find(|(_, p)| p.rec.subscription == Some(id.0))
            .map(|(k, _)| k.clone())
    }

    fn persist(&self, ctx: &mut ModuleCtx<'_>, key: &(String, String)) {
        ctx.put_state(
            format!("{STORE_PREFIX}{}|{}", key.0, key.1),
            &key.0,
            None,
            self.phones.get(key).map(|p| &p.rec),
        );
    }

    fn publish(&self, ctx: &mut ModuleCtx<'_>, line: &str, contact: &str, body: Option<String>) {
        let remove = body.is_none();
        let result = ctx.publish(PublishRequest {
            owner: ModuleId::Bla,
            presentity: line.to_string(),
            event: EVENT.into(),
            content_type: body.as_ref().map(|_| DIALOG_INFO.to_string()),
            body: body.map(String::into_bytes),
            expires: if remove { Some(0) } else { None },
            etag: None,
            extra_headers: Vec::new(),
            instance: Some(contact.to_string()),
            sender: Some(contact.to_string()),
        });
        if let Err(e) = result {
            tracing::debug!(line, contact, error = %e, "bla publication not changed");
        }
    }

    /// Subscribes to the phones of `line` that have none and ends what has no binding.
    fn reconcile(&mut self, ctx: &mut ModuleCtx<'_>, line: &str) {
        let now = ctx.now;
        let mut live: Vec<(String, String, u32)> = Vec::new();
        for (source, b) in ctx.svc.site.bindings_of(line) {
            if b.expires_at <= now || live.iter().any(|(c, _, _)| *c == b.contact) {
                continue;
            }
            let remaining = now.secs_until(b.expires_at).max(1);
            live.push((
                b.contact.clone(),
                hop_of(source, b),
                u32::try_from(remaining).unwrap_or(u32::MAX),
            ));
        }
        let gone: Vec<(String, String)> = self
            .phones
            .keys()
            .filter(|(l, c)| l == line && !live.iter().any(|(lc, _, _)| lc == c))
            .cloned()
            .collect();
        for key in gone {
            let Some(phone) = self.phones.remove(&key) else {
                continue;
            };
            if let Some(id) = phone.rec.subscription {
                ctx.unsubscribe(SubscriptionId(id));
            }
            if phone.rec.published.is_some() {
                self.publish(ctx, &key.0, &key.1, None);
            }
            tracing::info!(line = %key.0, contact = %key.1, "bla phone gone: unsubscribed");
            self.persist(ctx, &key);
        }
        for (contact, hop, remaining) in live {
            let key = (line.to_string(), contact.clone());
            let subscribed = self
                .phones
                .get(&key)
                .is_some_and(|p| p.rec.subscription.is_some());
            if subscribed {
                continue;
            }
            let id = ctx.subscribe(SubscribeRequest {
                owner: ModuleId::Bla,
                presentity: line.to_string(),
                watcher: line.to_string(),
                contact: None,
                event: EVENT.into(),
                expires: Some(remaining),
                refresh_until_unsubscribed: true,
                target: Some(contact.clone()),
                next_hop: Some(hop),
            });
            let phone = self.phones.entry(key.clone()).or_insert_with(|| Phone {
                rec: PhoneRecord {
                    line: line.to_string(),
                    contact: contact.clone(),
                    subscription: None,
                    published: None,
                },
                table: DialogTable::new(),
                state: "init".into(),
            });
            phone.rec.subscription = Some(id.0);
            phone.table.reset();
            phone.state = "init".into();
            tracing::info!(line, contact = %contact, "bla phone registered: subscribing dialog;sla");
            self.persist(ctx, &key);
        }
    }

    /// Applies a phone's dialog-info and publishes its dialogs for the line.
    fn on_dialog_info(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        key: &(String, String),
        id: SubscriptionId,
        doc: &DialogInfo,
    ) {
        let Some(phone) = self.phones.get_mut(key) else {
            return;
        };
        match phone.table.apply(doc) {
            VersionOutcome::Discarded => return,
            VersionOutcome::AppliedNeedsResync => {
                tracing::info!(line = %key.0, contact = %key.1, version = doc.version, "dialog-info version gap: refreshing for full state");
                ctx.refresh_subscription(id);
            }
            VersionOutcome::Applied => {}
        }
        let Some(phone) = self.phones.get_mut(key) else {
            return;
        };
        let body = build_dialog_info(&DialogInfo {
            version: 0,
            state: DocState::Full,
            entity: key.0.clone(),
            dialogs: phone.table.dialogs().to_vec(),
        });
        if phone.rec.published.as_deref() == Some(body.as_str()) {
            return;
        }
        phone.rec.published = Some(body.clone());
        self.publish(ctx, &key.0, &key.1, Some(body));
        self.persist(ctx, key);
    }

    fn views(&self) -> Vec<BlaLineView> {
        self.cfg
            .lines
            .iter()
            .map(|line| BlaLineView {
                line: line.clone(),
                phones: self
                    .phones
                    .values()
                    .filter(|p| &p.rec.line == line)
                    .map(|p| BlaPhoneView {
                        contact: p.rec.contact.clone(),
                        subscription: p.rec.subscription.map(|_| p.state.clone()),
                        dialogs: p
                            .table
                            .dialogs()
                            .iter()
                            .map(|d| (d.id.clone(), d.state.as_str().to_string()))
                            .collect(),
                        version: p.table.version(),
                    })
                    .collect(),
            })
            .collect()
    }
}

impl Module for BlaModule {
    fn id(&self) -> ModuleId {
        ModuleId::Bla
    }

    fn on_binding_changed(&mut self, ctx: &mut ModuleCtx<'_>, change: &BindingChange) {
        let line = aor(&change.event.binding().aor);
        if self.is_line(&line) {
            self.reconcile(ctx, &line);
        }
    }

    fn on_pua_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &PuaEvent) {
        match event {
            PuaEvent::Notify { id, state, body } => {
                let Some(key) = self.key_of(*id) else {
                    return;
                };
                if let Some(p) = self.phones.get_mut(&key) {
                    p.state = match state {
                        SubState::Active { .. } => "active",
                        SubState::Pending { .. } => "pending",
                        SubState::Terminated { .. } => "terminated",
                    }
                    .into();
                }
                match body {
                    Body::DialogInfo(doc) => self.on_dialog_info(ctx, &key, *id, doc),
                    Body::Empty => {}
                    _ => {
                        tracing::warn!(line = %key.0, contact = %key.1, "dialog;sla NOTIFY without dialog-info ignored")
                    }
                }
            }
            PuaEvent::SubscriptionEnded { id, end, retry_at } => {
                let Some(key) = self.key_of(*id) else {
                    return;
                };
                if let Some(p) = self.phones.get_mut(&key) {
                    // Versions restart with a new dialog (RFC 4235 §4.1).
                    p.table.reset();
                    if retry_at.is_none() {
                        tracing::warn!(line = %key.0, contact = %key.1, ?end, "bla subscription ended");
                        p.rec.subscription = None;
                        p.state = "refused".into();
                    } else {
                        p.state = "init".into();
                    }
                }
                self.persist(ctx, &key);
            }
            _ => {}
        }
    }

    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        for mut rec in restored_state::<PhoneRecord>(rows, ModuleId::Bla, STORE_PREFIX) {
            // A subscription the PUA did not keep is none (reconcile makes one).
            if rec
                .subscription
                .is_some_and(|id| ctx.pua.subscription(SubscriptionId(id)).is_none())
            {
                rec.subscription = None;
            }
            let key = (rec.line.clone(), rec.contact.clone());
            self.phones.insert(
                key,
                Phone {
                    rec,
                    table: DialogTable::new(),
                    state: "restored".into(),
                },
            );
        }
        let lines: BTreeSet<String> = self.cfg.lines.iter().cloned().collect();
        for line in lines {
            self.reconcile(ctx, &line);
        }
    }

    fn on_admin(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        id: AdminRequestId,
        command: &AdminCommand,
    ) -> bool {
        match command {
            AdminCommand::ListBla => {
                ctx.admin_reply(id, AdminReply::Bla(self.views()));
                true
            }
            _ => false,
        }
    }
}
