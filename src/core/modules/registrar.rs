//! The `registrar` module: every source of registrations (product.md, "Where the secondary
//! modules get their input"), each kept in its own location service of `LocalSite`:
//!
//! - **REGISTER** for the locally served SIP domains (RFC 3261 §10.3), into
//!   `LocalSite::location`, authoritative. Authentication happens before the request
//!   reaches this module (the engine challenges untrusted peers, RFC 3261 §22); the
//!   binding rules live in `core::registrar`.
//! - **REGISTER copies** for the `copy_domains`, from a proxy that stays the registrar
//!   (Kamailio/OpenSIPS `t_replicate`): accepted from trusted peers only (403 otherwise),
//!   applied with the same rules (a malformed Contact or Expires is a 400 and stores
//!   nothing), answered 200, mirrored with their expiry into `LocalSite::copies`; never
//!   used for routing. Retransmitted copies are absorbed by the transaction layer.
//! - **`reg` event subscriptions** (RFC 3680) to an external registrar for the configured
//!   AORs, refreshed by the PUA like every other subscription; each NOTIFY's reginfo
//!   document is mirrored into `LocalSite::reg_events` (contacts keyed by URI, a contact
//!   missing from a full document is gone; see `presence::reginfo`).
//!
//! Every change of every source goes to every module as a `BindingChange`
//! (`Module::on_binding_changed`), which is how usrloc and bla follow registrations.

use super::{Module, ModuleCtx, ModuleId};
use crate::core::local_site::aor;
use crate::core::persist::StoredRow;
use crate::core::presence::reginfo::Reginfo;
use crate::core::presence::{Body, DocState};
use crate::core::pua::{PuaEvent, SubscribeRequest, SubscriptionId};
use crate::core::registrar::{Binding, BindingChange, BindingEvent, BindingSource};
use crate::core::routing::{uri_domain, DomainMatch, Route};
use crate::core::sip::headers::NameAddr;
use crate::core::sip::message::{Method, Peer, Request};
use crate::core::sip::transaction::ServerTxId;

/// The `reg` event subscriptions to make (RFC 3680).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegEventConfig {
    /// AORs subscribed to (normalised `sip:user@domain`).
    pub aors: Vec<String>,
    /// Interval asked for in each SUBSCRIBE.
    pub expires: u32,
    /// From of the subscriptions.
    pub watcher: String,
    /// First hop (a SIP URI) instead of the outbound proxy / the AOR's host.
    pub server: Option<String>,
}

/// What the module serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrarModuleConfig {
    /// Domains of the embedded registrar (authoritative).
    pub domains: Vec<String>,
    /// Domains whose REGISTER copies are mirrored.
    pub copy_domains: Vec<String>,
    /// A header whose presence on a copy marks its AOR for usrloc (`X-Publish`).
    pub publish_mark: Option<String>,
    pub reg_event: RegEventConfig,
}

/// Seconds a reginfo contact without `expires` is kept (until the next NOTIFY says more).
const REGINFO_DEFAULT_EXPIRES: u32 = 3600;

/// See the module docs.
#[derive(Debug)]
pub struct RegistrarModule {
    cfg: RegistrarModuleConfig,
    /// The PUA subscription of each `reg_event.aors` entry.
    reg_subscriptions: Vec<(String, SubscriptionId)>,
}

impl RegistrarModule {
    pub fn new(domains: Vec<String>) -> Self {
        Self::with_config(RegistrarModuleConfig {
            domains,
            ..RegistrarModuleConfig::default()
        })
    }

    pub fn with_config(cfg: RegistrarModuleConfig) -> Self {
        RegistrarModule {
            cfg,
            reg_subscriptions: Vec::new(),
        }
    }

    /// Arms the one timer of the module at the next binding expiry of any source.
    fn arm(&self, ctx: &mut ModuleCtx<'_>) {
        match ctx
            .svc
            .site
            .registrars()
            .filter_map(|r| r.next_deadline())
            .min()
        {
            Some(at) => ctx.set_timer(0, at),
            None => ctx.cancel_timer(0),
        }
    }

    fn is_copy_domain(&self, uri: &str) -> bool {
        uri_domain(uri).is_some_and(|d| {
            self.cfg
                .copy_domains
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&d))
        })
    }

    /// Makes sure every configured `reg` AOR has a subscription (restored ones are kept).
    fn ensure_reg_subscriptions(&mut self, ctx: &mut ModuleCtx<'_>) {
        let cfg = self.cfg.reg_event.clone();
        for a in &cfg.aors {
            if self.reg_subscriptions.iter().any(|(x, _)| x == a) {
                continue;
            }
            let id = match ctx
                .pua
                .find_subscription(ModuleId::Registrar, a, &cfg.watcher, "reg")
            {
                Some(id) => id,
                None => ctx.subscribe(SubscribeRequest {
                    owner: ModuleId::Registrar,
                    presentity: a.clone(),
                    watcher: cfg.watcher.clone(),
                    contact: None,
                    event: "reg".into(),
                    expires: Some(cfg.expires),
                    refresh_until_unsubscribed: true,
                    target: None,
                    next_hop: cfg.server.clone(),
                }),
            };
            self.reg_subscriptions.push((a.clone(), id));
        }
    }

    /// Mirrors a reginfo document (RFC 3680 §5) for the AOR `subscribed`.
    fn apply_reginfo(&mut self, ctx: &mut ModuleCtx<'_>, subscribed: &str, doc: &Reginfo) {
        let now = ctx.now;
        for reg in &doc.registrations {
            let reg_aor = aor(&reg.aor);
            // A registrar that does not use domains (Kamailio `use_domain 0`) reports
            // `sip:carol` for `sip:carol@example.org`: mirrored as reported; usrloc's
            // `default_domain` completes it.
            let domainless_match = !reg_aor.contains('@')
                && subscribed
                    .split_once(':')
                    .and_then(|(_, rest)| rest.split_once('@'))
                    .is_some_and(|(user, _)| Some(user) == reg_aor.split_once(':').map(|(_, u)| u));
            if reg_aor != subscribed && !domainless_match {
                tracing::debug!(aor = %reg.aor, subscribed, "reginfo registration for another AOR ignored");
                continue;
            }
            let existing: Vec<Binding> = ctx
                .svc
                .site
                .reg_events
                .bindings(&reg_aor)
                .into_iter()
                .cloned()
                .collect();
            let list: Vec<Binding> = reg
                .active_contacts()
                .map(|c| {
                    let granted = c.expires.unwrap_or(REGINFO_DEFAULT_EXPIRES);
                    let mut expires_at = now + std::time::Duration::from_secs(u64::from(granted));
                    // A document sent again (to a new or refreshed subscription) repeats
                    // the remaining time of its first sending: the same registration
                    // (Call-ID and CSeq unchanged) keeps the expiry it had.
                    if let Some(old) = existing.iter().find(|b| {
                        crate::core::registrar::uri_equivalent(&b.contact, &c.uri)
                            && Some(&b.call_id) == c.call_id.as_ref()
                            && Some(b.cseq) == c.cseq
                    }) {
                        expires_at = old.expires_at;
                    }
                    Binding {
                        aor: reg_aor.clone(),
                        contact: c.uri.clone(),
                        q: c.q,
                        expires_at,
                        call_id: c.call_id.clone().unwrap_or_default(),
                        cseq: c.cseq.unwrap_or(0),
                        source: "reg_event".into(),
                        instance: None,
                        reg_id: None,
                        user_agent: c.user_agent.clone(),
                        path: Vec::new(),
                    }
                })
                .collect();
            let listed: Vec<String> = reg.contacts.iter().map(|c| c.uri.clone()).collect();
            let only = (doc.state == DocState::Partial).then_some(listed.as_slice());
            let (events, ops) = ctx.svc.site.reg_events.mirror(now, &reg_aor, list, only);
            for op in ops {
                ctx.store(op);
            }
            self.announce(ctx, BindingSource::RegEvent, events, false);
        }
        self.arm(ctx);
    }

    fn announce(
        &self,
        ctx: &mut ModuleCtx<'_>,
        source: BindingSource,
        events: Vec<BindingEvent>,
        marked: bool,
    ) {
        for event in events {
            let change = match &event {
                BindingEvent::Added(_) => "added",
                BindingEvent::Refreshed(_) => "refreshed",
                BindingEvent::Removed(_) => "removed",
                BindingEvent::Expired(_) => "expired",
            };
            tracing::info!(aor = %event.binding().aor, contact = %event.binding().contact, source = source.as_str(), change, "binding changed");
            ctx.binding_changed(BindingChange {
                source,
                event,
                marked,
            });
        }
    }
}

impl Module for RegistrarModule {
    fn id(&self) -> ModuleId {
        ModuleId::Registrar
    }

    fn routes(&self) -> Vec<Route> {
        let mut domains = self.cfg.domains.clone();
        domains.extend(self.cfg.copy_domains.iter().cloned());
        if domains.is_empty() {
            return Vec::new();
        }
        vec![Route::new(
            Method::Register,
            None,
            DomainMatch::Only(domains),
        )]
    }

    fn on_request(&mut self, ctx: &mut ModuleCtx<'_>, stx: ServerTxId, from: Peer, req: &Request) {
        // RFC 3261 §10.3 step 5: the AOR is the To URI (canonical form).
        let to_uri = req
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse("To", v).ok())
            .map(|n| n.uri);
        let Some(to_uri) = to_uri else {
            ctx.reply(stx, req, 400, "Bad To", |_| {});
            return;
        };
        let aor = aor(&to_uri);
        let now = ctx.now;
        let (source, marked) = if self.is_copy_domain(&aor) {
            let ip = from.addr.ip();
            if !ctx.svc.config.trusted.iter().any(|n| n.contains(&ip)) {
                tracing::warn!(peer = %from, %aor, "REGISTER copy from an untrusted peer refused");
                ctx.reply(stx, req, 403, "Not A Trusted Proxy", |_| {});
                return;
            }
            let marked = self
                .cfg
                .publish_mark
                .as_deref()
                .is_some_and(|h| req.headers.get(h).is_some());
            (BindingSource::Copy, marked)
        } else {
            if !ctx.svc.site.serves(&aor) {
                // Step 4 would forward; a registrar of its own domains only answers 404.
                ctx.reply(stx, req, 404, "Not Found", |_| {});
                return;
            }
            (BindingSource::Registrar, false)
        };
        let Some(location) = ctx.svc.site.registrar_mut(source) else {
            ctx.reply(stx, req, 500, "Registrar Disabled", |_| {});
            return;
        };
        let outcome = location.on_register(now, &aor, req, from);
        for op in outcome.store {
            ctx.store(op);
        }
        self.announce(ctx, source, outcome.events, marked);
        let headers = outcome.headers;
        ctx.reply(stx, req, outcome.status, &outcome.reason, |r| {
            for (name, value) in headers {
                r.headers.push(&name, value);
            }
        });
        self.arm(ctx);
    }

    fn on_timer(&mut self, ctx: &mut ModuleCtx<'_>, _token: u64) {
        let now = ctx.now;
        for source in [
            BindingSource::Registrar,
            BindingSource::Copy,
            BindingSource::RegEvent,
        ] {
            let Some((events, ops)) = ctx
                .svc
                .site
                .registrar_mut(source)
                .map(|l| l.handle_timeout(now))
            else {
                continue;
            };
            for op in ops {
                ctx.store(op);
            }
            self.announce(ctx, source, events, false);
        }
        self.arm(ctx);
    }

    fn on_pua_event(&mut self, ctx: &mut ModuleCtx<'_>, event: &PuaEvent) {
        match event {
            PuaEvent::Notify { id, body, .. } => {
                let Some(subscribed) = self
                    .reg_subscriptions
                    .iter()
                    .find(|(_, s)| s == id)
                    .map(|(a, _)| a.clone())
                else {
                    return;
                };
                match body {
                    Body::Reginfo(doc) => self.apply_reginfo(ctx, &subscribed, doc),
                    // Kamailio's first NOTIFY before anything was published carries no
                    // body: no information, the bindings stay as they are.
                    Body::Empty => {}
                    other => {
                        tracing::warn!(aor = %subscribed, body = ?std::mem::discriminant(other), "reg NOTIFY without a reginfo document ignored");
                    }
                }
            }
            PuaEvent::SubscriptionEnded {
                id,
                end,
                retry_at: None,
            } => {
                if let Some(i) = self.reg_subscriptions.iter().position(|(_, s)| s == id) {
                    let (a, _) = self.reg_subscriptions.remove(i);
                    // The mirrored bindings stay until they expire: the registrar said
                    // nothing about them.
                    tracing::error!(aor = %a, ?end, "reg subscription ended for good");
                }
            }
            _ => {}
        }
    }

    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        let now = ctx.now;
        for source in [
            BindingSource::Registrar,
            BindingSource::Copy,
            BindingSource::RegEvent,
        ] {
            let Some(restored) = ctx
                .svc
                .site
                .registrar_mut(source)
                .map(|l| l.restore(rows, now))
            else {
                continue;
            };
            for op in restored.store {
                ctx.store(op);
            }
            self.announce(ctx, source, restored.events, false);
            let n = ctx
                .svc
                .site
                .registrar_mut(source)
                .map_or(0, |l| l.binding_count());
            tracing::info!(bindings = n, source = source.as_str(), "bindings restored");
        }
        self.ensure_reg_subscriptions(ctx);
        self.arm(ctx);
    }
}
