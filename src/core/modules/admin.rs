//! The management module (OpenSIPS `pua_mi`'s job): publish any document and subscribe
//! any watcher on an operator's command. The vocabulary is `core::admin_api`; the command
//! semantics live here.

pub use crate::core::admin_api::*;

// ---------------------------------------------------------------------------------------
// The module.
// ---------------------------------------------------------------------------------------

use super::{Module, ModuleCtx, ModuleId};
use crate::core::handles::AdminRequestId;
use crate::core::pua::{
    PuaEvent, PublicationId, PublishRequest, SubscribeRequest, SubscriptionEnd, SubscriptionId,
};

/// Event packages the admin commands accept (pua_mi's set, with `presence.winfo` spelled
/// as registered, anchors.md §1.4).
pub const ADMIN_EVENTS: [&str; 4] = ["presence", "presence.winfo", "dialog", "dialog;sla"];

/// A URI the admin commands accept: `sip:`/`sips:` with a host part and no whitespace.
fn valid_uri(uri: &str) -> bool {
    let rest = match uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
    {
        Some(r) => r,
        None => return false,
    };
    let host = rest.rsplit('@').next().unwrap_or("");
    !host.is_empty()
        && !host.starts_with([';', '?', ':'])
        && !uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

/// The event as accepted (`Err` = the reason phrase of the 400).
fn valid_event(event: &str) -> Result<String, &'static str> {
    let e = event.trim();
    if e.is_empty() {
        return Err("Empty Event");
    }
    let norm: String = e
        .split(';')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(";")
        .to_ascii_lowercase();
    if ADMIN_EVENTS.contains(&norm.as_str()) {
        Ok(norm)
    } else {
        Err("Unknown Event")
    }
}

/// `extra_headers` as `Name: value` lines (CRLF or LF separated).
fn parse_extra_headers(s: &str) -> Result<Vec<(String, String)>, ()> {
    let mut out = Vec::new();
    for line in s
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let (n, v) = line.split_once(':').ok_or(())?;
        let n = n.trim();
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!%*+`'~".contains(c))
        {
            return Err(());
        }
        out.push((n.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// The management module (`pua_mi`): publish and subscribe on an operator's command, reply
/// when the final SIP response arrives (pua_mi async semantics), list records, health.
#[derive(Debug, Default)]
pub struct AdminModule {
    /// Publish commands waiting for their final response: (publication, op seq, request).
    pending_publish: Vec<(PublicationId, u64, AdminRequestId)>,
    /// Subscribe commands waiting for the first final response.
    pending_subscribe: Vec<(SubscriptionId, AdminRequestId)>,
}

impl AdminModule {
    pub fn new() -> Self {
        Self::default()
    }

    fn publish_refused(ctx: &mut ModuleCtx<'_>, id: AdminRequestId, code: u16, reason: &str) {
        ctx.admin_reply(
            id,
            AdminReply::Published(PublishOutcome {
                code,
                reason: reason.into(),
                etag: None,
                expires: None,
            }),
        );
    }

    fn subscribe_refused(ctx: &mut ModuleCtx<'_>, id: AdminRequestId, code: u16, reason: &str) {
        ctx.admin_reply(
            id,
            AdminReply::Subscribed(SubscribeOutcome {
                code,
                reason: reason.into(),
                id: None,
            }),
        );
    }

    fn on_publish(&mut self, ctx: &mut ModuleCtx<'_>, id: AdminRequestId, cmd: &PublishCommand) {
        if !valid_uri(&cmd.presentity) {
            return Self::publish_refused(ctx, id, 404, "Bad Presentity URI");
        }
        let event = match valid_event(&cmd.event) {
            Ok(e) => e,
            Err(reason) => return Self::publish_refused(ctx, id, 400, reason),
        };
        if cmd.content_type.is_some() != cmd.body.is_some() {
            return Self::publish_refused(ctx, id, 400, "Content Type And Body Go Together");
        }
        let expires = match cmd.expires {
            -1 => None,
            n if n >= 0 => Some(n.min(u32::MAX as i64) as u32),
            _ => return Self::publish_refused(ctx, id, 400, "Bad Expires"),
        };
        let extra_headers = match cmd.extra_headers.as_deref().map(parse_extra_headers) {
            None => Vec::new(),
            Some(Ok(h)) => h,
            Some(Err(())) => return Self::publish_refused(ctx, id, 400, "Bad Extra Headers"),
        };
        if let Some(etag) = &cmd.etag {
            if !ctx.pua.etag_known(&cmd.presentity, &event, etag) {
                return Self::publish_refused(ctx, id, 418, "Wrong ETag");
            }
        }
        let req = PublishRequest {
            owner: ModuleId::Admin,
            presentity: cmd.presentity.clone(),
            event,
            content_type: cmd.content_type.clone(),
            body: cmd.body.as_ref().map(|b| b.clone().into_bytes()),
            expires,
            etag: cmd.etag.clone(),
            extra_headers,
            instance: None,
            sender: None,
        };
        match ctx.publish(req) {
            Ok(pid) => {
                let seq = ctx.pua.publication_op_seq(pid).unwrap_or(0);
                self.pending_publish.push((pid, seq, id));
            }
            Err(e) => Self::publish_refused(ctx, id, e.code(), e.reason()),
        }
    }

    fn on_subscribe(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        id: AdminRequestId,
        cmd: &SubscribeCommand,
    ) {
        if !valid_uri(&cmd.presentity) {
            return Self::subscribe_refused(ctx, id, 404, "Bad Presentity URI");
        }
        if !valid_uri(&cmd.watcher) {
            return Self::subscribe_refused(ctx, id, 404, "Bad Watcher URI");
        }
        let event = match valid_event(&cmd.event) {
            Ok(e) => e,
            Err(reason) => return Self::subscribe_refused(ctx, id, 400, reason),
        };
        let expires = match cmd.expires {
            -1 => None,
            0 => {
                // Expires 0 ends the operator's existing subscription (in-dialog Expires: 0).
                match ctx.pua.find_subscription(
                    ModuleId::Admin,
                    &cmd.presentity,
                    &cmd.watcher,
                    &event,
                ) {
                    Some(sid) => {
                        self.pending_subscribe.push((sid, id));
                        ctx.unsubscribe(sid);
                    }
                    None => Self::subscribe_refused(ctx, id, 481, "No Such Subscription"),
                }
                return;
            }
            n if n > 0 => Some(n.min(u32::MAX as i64) as u32),
            _ => return Self::subscribe_refused(ctx, id, 400, "Bad Expires"),
        };
        // Unlike pua_mi, the gateway is the Contact, so the NOTIFYs come back here and the
        // subscription list can show the last state and body.
        let sid = ctx.subscribe(SubscribeRequest {
            owner: ModuleId::Admin,
            presentity: cmd.presentity.clone(),
            watcher: cmd.watcher.clone(),
            contact: None,
            event,
            expires,
            // The issue asks the gateway to hold and refresh an operator's subscription
            // (pua_mi lets a positive expires lapse: anchors.md §2.4).
            refresh_until_unsubscribed: true,
            target: None,
            next_hop: None,
        });
        self.pending_subscribe.push((sid, id));
    }
}

impl Module for AdminModule {
    fn id(&self) -> ModuleId {
        ModuleId::Admin
    }

    fn on_admin(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        id: AdminRequestId,
        command: &AdminCommand,
    ) -> bool {
        match command {
            AdminCommand::Publish(cmd) => self.on_publish(ctx, id, cmd),
            AdminCommand::Subscribe(cmd) => self.on_subscribe(ctx, id, cmd),
            AdminCommand::ListPublications => {
                let v = ctx.pua.publication_views(ctx.now);
                ctx.admin_reply(id, AdminReply::Publications(v));
            }
            AdminCommand::ListSubscriptions => {
                let v = ctx.pua.subscription_views(ctx.now);
                ctx.admin_reply(id, AdminReply::Subscriptions(v));
            }
            AdminCommand::AddUser {
                username,
                domain,
                password,
            } => {
                let reply = change_users(ctx, |u| u.add(username, domain, password));
                ctx.admin_reply(id, reply);
            }
            AdminCommand::RemoveUser { username, domain } => {
                let reply = change_users(ctx, |u| u.remove(username, domain));
                ctx.admin_reply(id, reply);
            }
            AdminCommand::ListUsers => {
                let v = ctx
                    .svc
                    .site
                    .auth
                    .as_ref()
                    .map(|a| a.users.list())
                    .unwrap_or_default();
                ctx.admin_reply(id, AdminReply::Users(v));
            }
            AdminCommand::ListBindings { aor } => {
                let now = ctx.now;
                let want = aor.as_deref().map(crate::core::local_site::aor);
                let mut v = Vec::new();
                for loc in ctx.svc.site.registrars() {
                    let aors: Vec<String> = loc.aors().map(str::to_string).collect();
                    for a in aors
                        .iter()
                        .filter(|a| want.as_ref().is_none_or(|w| w == *a))
                    {
                        for b in loc.bindings(a) {
                            v.push(BindingView {
                                aor: b.aor.clone(),
                                contact: b.contact.clone(),
                                q: b.q.map(crate::core::registrar::format_qvalue),
                                expires_in: now.secs_until(b.expires_at),
                                user_agent: b.user_agent.clone(),
                                source: loc.source().as_str().to_string(),
                            });
                        }
                    }
                }
                ctx.admin_reply(id, AdminReply::Bindings(v));
            }
            AdminCommand::SetRule { .. }
            | AdminCommand::ListRules
            | AdminCommand::ListWatchers { .. }
            | AdminCommand::ListPresentityPublications
            | AdminCommand::ListUsrloc
            | AdminCommand::ListBla => return false,
            AdminCommand::Health => {
                let h = HealthView {
                    status: "ok".into(),
                    publications: ctx.pua.publication_count(),
                    subscriptions: ctx.pua.subscription_count(),
                    notifier_dialogs: ctx.stats.notifier_dialogs,
                };
                ctx.admin_reply(id, AdminReply::Health(h));
            }
        }
        true
    }

    fn on_pua_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &PuaEvent) {
        match event {
            PuaEvent::PublishResult {
                id,
                op_seq,
                code,
                reason,
                etag,
                expires,
                ..
            } => {
                let (done, keep): (Vec<_>, Vec<_>) = self
                    .pending_publish
                    .drain(..)
                    .partition(|(p, s, _)| p == id && s <= op_seq);
                self.pending_publish = keep;
                let ok = (200..300).contains(code);
                for (_, _, rid) in done {
                    let outcome = PublishOutcome {
                        code: *code,
                        reason: reason.clone(),
                        etag: if ok { etag.clone() } else { None },
                        expires: if ok { *expires } else { None },
                    };
                    ctx.admin_reply(rid, AdminReply::Published(outcome));
                }
            }
            PuaEvent::SubscribeResult { id, code, reason } => {
                self.reply_subscribe(ctx, *id, *code, reason);
            }
            PuaEvent::SubscriptionEnded { id, end, .. } => {
                // Only when no response settled the command (e.g. ended before any answer).
                let (code, reason) = match end {
                    SubscriptionEnd::Response { code, reason } => (*code, reason.clone()),
                    SubscriptionEnd::Unsubscribed => (200, "Unsubscribed".to_string()),
                    SubscriptionEnd::NoNotify => (408, "No NOTIFY".to_string()),
                    _ => (200, "Ended".to_string()),
                };
                self.reply_subscribe(ctx, *id, code, &reason);
            }
            PuaEvent::Notify { .. } => {}
        }
    }
}

impl AdminModule {
    fn reply_subscribe(
        &mut self,
        ctx: &mut ModuleCtx<'_>,
        sid: SubscriptionId,
        code: u16,
        reason: &str,
    ) {
        let (done, keep): (Vec<_>, Vec<_>) = self
            .pending_subscribe
            .drain(..)
            .partition(|(s, _)| *s == sid);
        self.pending_subscribe = keep;
        for (_, rid) in done {
            ctx.admin_reply(
                rid,
                AdminReply::Subscribed(SubscribeOutcome {
                    code,
                    reason: reason.to_string(),
                    id: Some(sid.to_string()),
                }),
            );
        }
    }
}

/// Applies a change to the users directory: stores it and answers with every user, or
/// the refusal (409 without `[auth]`, 404 for an unknown run-time user, 400 otherwise).
fn change_users(
    ctx: &mut ModuleCtx<'_>,
    change: impl FnOnce(
        &mut crate::core::users::Users,
    ) -> Result<crate::core::persist::StoreOp, crate::core::users::UserError>,
) -> AdminReply {
    use crate::core::users::UserError;
    let Some(auth) = ctx.svc.site.auth.as_mut() else {
        return AdminReply::Error {
            code: 409,
            reason: "digest authentication is not configured ([auth])".into(),
        };
    };
    match change(&mut auth.users) {
        Ok(op) => {
            let list = auth.users.list();
            ctx.store(op);
            AdminReply::Users(list)
        }
        Err(UserError::NotFound(k)) => AdminReply::Error {
            code: 404,
            reason: format!("no run-time user {k}"),
        },
        Err(e) => AdminReply::Error {
            code: 400,
            reason: e.to_string(),
        },
    }
}
