//! Modules: policy on the shared PUA service. Each plugs into the engine through hooks
//! and never calls another module (architecture.md, Core and drivers).
//!
//! A module implements [`Module`]; every hook has a default that does nothing, so a module
//! only writes the hooks it needs. The engine routes explicitly: PUA events go to the
//! module that owns the publication or subscription, admin commands to the first module
//! that accepts them, timers to the module that armed them. Shared services (PUA, timers,
//! ids, outputs) are reached through the [`ModuleCtx`] handed to each hook.

pub mod admin;
pub mod bla;
pub mod bridge;
pub mod presence_agent;
pub mod registrar;
pub mod usrloc;

use std::time::Duration;

use super::ids::IdGenerator;
use super::local_site::LocalSite;
use super::persist::{StoreOp, StoreTable, StoredRow};
use super::pua::{
    PuaEvent, PuaService, PublicationId, PublishError, PublishRequest, SubscribeRequest,
    SubscriptionId,
};
use super::registrar::BindingChange;
use super::routing::Route;
use super::services::{AdminRequestId, SendError, Services, TimerKey, TxOwner};
use super::sip::message::{Peer, Request, Response};
use super::sip::notifier::{
    Body as NotifierBody, Decision, NotifierDialogId, NotifierDialogView, NotifierEvent,
    StateChange, SubscribeInfo,
};
use super::sip::transaction::{ClientTxId, ServerTxId};
use super::time::Timestamp;
use super::xmpp::stanza::Stanza;
use admin::{AdminCommand, AdminReply};

pub use crate::core::module_id::ModuleId;

/// Counters a module may report (admin health).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub notifier_dialogs: usize,
}

/// What a hook may use: the PUA, timers, ids and outputs, for one module.
pub struct ModuleCtx<'a> {
    pub now: Timestamp,
    pub module: ModuleId,
    pub pua: &'a mut PuaService,
    pub svc: &'a mut Services,
    pub stats: EngineStats,
}

impl<'a> ModuleCtx<'a> {
    pub fn new(
        now: Timestamp,
        module: ModuleId,
        pua: &'a mut PuaService,
        svc: &'a mut Services,
        notifier_dialogs: usize,
    ) -> Self {
        ModuleCtx {
            now,
            module,
            pua,
            svc,
            stats: EngineStats { notifier_dialogs },
        }
    }

    /// See [`PuaService::publish`]. The owner is forced to this module.
    pub fn publish(&mut self, mut req: PublishRequest) -> Result<PublicationId, PublishError> {
        req.owner = self.module;
        self.pua.publish(self.svc, self.now, req)
    }

    /// See [`PuaService::subscribe`]. The owner is forced to this module.
    pub fn subscribe(&mut self, mut req: SubscribeRequest) -> SubscriptionId {
        req.owner = self.module;
        self.pua.subscribe(self.svc, self.now, req)
    }

    pub fn unsubscribe(&mut self, id: SubscriptionId) -> bool {
        self.pua.unsubscribe(self.svc, self.now, id)
    }

    /// See [`PuaService::refresh`].
    pub fn refresh_subscription(&mut self, id: SubscriptionId) -> bool {
        self.pua.refresh(self.svc, self.now, id)
    }

    /// Arms this module's timer `token` (moving it if armed); `on_timer` gets the token.
    pub fn set_timer(&mut self, token: u64, at: Timestamp) {
        self.svc.set_timer(TimerKey::Module(self.module, token), at);
    }

    pub fn cancel_timer(&mut self, token: u64) {
        self.svc.cancel_timer(TimerKey::Module(self.module, token));
    }

    pub fn ids(&mut self) -> &mut IdGenerator {
        &mut self.svc.ids
    }

    pub fn store(&mut self, op: StoreOp) {
        self.svc.store(op);
    }

    /// Writes (`Some`) or deletes (`None`) this module's record `key` in
    /// `StoreTable::ModuleState`; `subject` names the resource for operators.
    pub fn put_state(
        &mut self,
        key: String,
        subject: &str,
        expires_at: Option<Timestamp>,
        record: Option<&impl serde::Serialize>,
    ) {
        match record {
            Some(r) => self.svc.put_record(
                StoreTable::ModuleState,
                key,
                self.module.as_str(),
                subject,
                expires_at,
                r,
            ),
            None => self.store(StoreOp::Delete {
                table: StoreTable::ModuleState,
                key,
            }),
        }
    }

    pub fn admin_reply(&mut self, id: AdminRequestId, reply: AdminReply) {
        self.svc.admin_reply(id, reply);
    }

    /// Answers a request routed to this module (see `Services::reply`).
    pub fn reply(
        &mut self,
        stx: ServerTxId,
        req: &Request,
        status: u16,
        reason: &str,
        edit: impl FnOnce(&mut Response),
    ) {
        self.svc.reply(self.now, stx, req, status, reason, edit);
    }

    /// Sends a request of this module's own (built without Via); its final response
    /// reaches [`Module::on_response`] with `token`.
    pub fn send_request(
        &mut self,
        token: u64,
        route_set: &[String],
        request: Request,
    ) -> Result<ClientTxId, SendError> {
        self.svc.send_request(
            self.now,
            TxOwner::Module(self.module, token),
            route_set,
            request,
        )
    }

    /// The composed presence of a local presentity changed: watchers attached through
    /// the PUA (no SIP hop) get the new document.
    pub fn local_presence_changed(&mut self, presentity: &str) {
        self.pua.on_local_presence_changed(self.svc, presentity);
    }

    /// A watcher rule of a local presentity changed: local watchers follow it.
    pub fn local_rule_changed(&mut self, presentity: &str, watcher: &str) {
        self.pua
            .on_local_rule_changed(self.svc, presentity, watcher);
    }

    /// Tells every module (this one included) that a binding changed.
    pub fn binding_changed(&mut self, change: BindingChange) {
        self.svc.binding_changes.push_back(change);
    }

    /// Sends a stanza to the XMPP server over the component link.
    pub fn send_stanza(&mut self, stanza: Stanza) {
        self.svc.send_stanza(stanza);
    }

    /// Pushes state or a Subscription-State change to one of this module's notifier
    /// dialogs (see `Notifier::notify`); the resulting NOTIFYs and store writes go out.
    pub fn notify(
        &mut self,
        dialog: NotifierDialogId,
        change: Option<StateChange>,
        body: Option<NotifierBody>,
    ) {
        let actions = self.svc.notifier.notify(self.now, dialog, change, body);
        self.svc.perform_notifier_actions(self.now, actions, None);
    }

    /// Pushes `body` to every live dialog of `package` for `presentity`.
    pub fn notify_presentity(&mut self, package: &str, presentity: &str, body: NotifierBody) {
        let actions = self
            .svc
            .notifier
            .notify_presentity(self.now, package, presentity, body);
        self.svc.perform_notifier_actions(self.now, actions, None);
    }
}

/// The records of `module` in `StoreTable::ModuleState` whose key starts with `prefix`
/// (see [`ModuleCtx::put_state`]); unreadable ones are logged and skipped.
pub fn restored_state<T: serde::de::DeserializeOwned>(
    rows: &[StoredRow],
    module: ModuleId,
    prefix: &str,
) -> Vec<T> {
    rows.iter()
        .filter(|r| {
            r.table == StoreTable::ModuleState
                && r.owner == module.as_str()
                && r.key.starts_with(prefix)
        })
        .filter_map(|row| match serde_json::from_value::<T>(row.data.clone()) {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::warn!(module = module.as_str(), key = %row.key, error = %e, "stored record unreadable; skipped");
                None
            }
        })
        .collect()
}

/// A module's hooks; every default does nothing. Modules live in the engine, which the
/// daemon moves to its own task, hence `Send`.
pub trait Module: Send {
    fn id(&self) -> ModuleId;

    /// The requests this module serves (see `routing`): SUBSCRIBE routes make it the
    /// notifier policy of the shared notifier for those packages and domains; other
    /// methods reach [`Module::on_request`]. Requests no module routes are answered by
    /// the engine (405/501 with Allow, 489 with Allow-Events, 404).
    fn routes(&self) -> Vec<Route> {
        Vec::new()
    }

    /// A request routed to this module (any method but SUBSCRIBE, which goes through the
    /// notifier). The module owns the server transaction `stx` and must answer it, at
    /// once or later, with [`ModuleCtx::reply`].
    fn on_request(&mut self, ctx: &mut ModuleCtx<'_>, stx: ServerTxId, from: Peer, req: &Request) {
        let _ = from;
        tracing::warn!(module = self.id().as_str(), method = %req.method, "routed request not handled");
        ctx.reply(stx, req, 500, "Server Internal Error", |_| {});
    }

    /// The final response (`None`: Timer F or a transport error, RFC 3261 §17.1.2.2) to a
    /// request this module sent with [`ModuleCtx::send_request`] under `token`.
    fn on_response(&mut self, ctx: &mut ModuleCtx<'_>, token: u64, response: Option<&Response>) {
        let _ = (ctx, token, response);
    }

    /// A result or notification about a publication or subscription this module owns.
    fn on_pua_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &PuaEvent) {
        let _ = (ctx, event);
    }

    /// An operator command; return `true` when this module took it (and will reply).
    fn on_admin(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        id: AdminRequestId,
        command: &AdminCommand,
    ) -> bool {
        let _ = (ctx, id, command);
        false
    }

    /// A timer this module armed with [`ModuleCtx::set_timer`] fired.
    fn on_timer(&mut self, ctx: &mut ModuleCtx<'_>, token: u64) {
        let _ = (ctx, token);
    }

    /// The stored rows at start (after the PUA and the notifier restored their records).
    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        let _ = (ctx, rows);
    }

    // ----- notifier policy (for the SUBSCRIBE routes in `routes`) -----

    /// Media types `package` can produce, preferred first (see `NotifierPolicy::body_types`).
    fn notifier_body_types(&self, package: &str) -> Vec<String> {
        let _ = package;
        Vec::new()
    }

    /// Interval granted when a SUBSCRIBE has no Expires; `None`: the configured default.
    fn notifier_default_expires(&self, package: &str) -> Option<u32> {
        let _ = package;
        None
    }

    /// NOTIFY throttle for `package`; `None`: the configured one.
    fn notifier_min_notify_interval(&self, package: &str) -> Option<Duration> {
        let _ = package;
        None
    }

    /// Decides a new subscription or poll, at once (RFC 6665 §4.2.1.3). Default: 403.
    fn authorize(&self, info: &SubscribeInfo<'_>) -> Decision {
        let _ = info;
        Decision::reject(403)
    }

    /// [`Module::authorize`] with the local site's state (rules, presence) at hand, for
    /// modules that serve local presentities. Default: [`Module::authorize`].
    fn authorize_local(&self, site: &LocalSite, info: &SubscribeInfo<'_>) -> Decision {
        let _ = site;
        self.authorize(info)
    }

    /// The body of the final `terminated;reason=timeout` NOTIFY of an active dialog.
    fn final_body(
        &self,
        dialog: &NotifierDialogView,
        cached: Option<&NotifierBody>,
    ) -> Option<NotifierBody> {
        let _ = dialog;
        cached.cloned()
    }

    /// A stanza from the XMPP server; return `true` when this module took it (answering
    /// it if it needs an answer). Untaken stanzas get `service-unavailable`.
    fn on_stanza(&mut self, ctx: &mut ModuleCtx<'_>, stanza: &Stanza) -> bool {
        let _ = (ctx, stanza);
        false
    }

    /// The component link came up (`true`, after each handshake) or went down.
    fn on_xmpp_link(&mut self, ctx: &mut ModuleCtx<'_>, up: bool) {
        let _ = (ctx, up);
    }

    /// Graceful shutdown: last words (e.g. `unavailable` to XMPP users); state stays stored.
    fn on_shutdown(&mut self, ctx: &mut ModuleCtx<'_>) {
        let _ = ctx;
    }

    /// The local presence state of `presentity` for `event` changed through the PUA (a
    /// module's publication); `changed` tells whether the composed document differs. The
    /// module serving that state's watchers notifies them.
    fn on_presence_changed(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        presentity: &str,
        event: &str,
        changed: bool,
    ) {
        let _ = (ctx, presentity, event, changed);
    }

    /// A binding of some registration source was added, refreshed, removed or expired
    /// (every module sees every change, in order; see `Services::binding_changes`).
    fn on_binding_changed(&mut self, ctx: &mut ModuleCtx<'_>, change: &BindingChange) {
        let _ = (ctx, change);
    }

    /// News about one of this module's notifier dialogs.
    fn on_notifier_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &NotifierEvent) {
        let _ = (ctx, event);
    }
}
