//! The `registrar` module: REGISTER for the locally served SIP domains (RFC 3261 §10.3),
//! policy on the shared location service (`LocalSite::location`), which other modules
//! (usrloc, bla) read. Authentication happens before the request reaches this module
//! (the engine challenges untrusted peers, RFC 3261 §22); the binding rules live in
//! `core::registrar`.

use super::{Module, ModuleCtx, ModuleId};
use crate::core::local_site::aor;
use crate::core::persist::StoredRow;
use crate::core::registrar::BindingEvent;
use crate::core::routing::{DomainMatch, Route};
use crate::core::sip::message::{Method, Peer, Request};
use crate::core::sip::transaction::ServerTxId;

/// See the module docs.
#[derive(Debug)]
pub struct RegistrarModule {
    domains: Vec<String>,
}

impl RegistrarModule {
    pub fn new(domains: Vec<String>) -> Self {
        RegistrarModule { domains }
    }

    /// Arms the one timer of the module at the location service's next binding expiry.
    fn arm(&self, ctx: &mut ModuleCtx<'_>) {
        match ctx
            .svc
            .site
            .location
            .as_ref()
            .and_then(|l| l.next_deadline())
        {
            Some(at) => ctx.set_timer(0, at),
            None => ctx.cancel_timer(0),
        }
    }
}

impl Module for RegistrarModule {
    fn id(&self) -> ModuleId {
        ModuleId::Registrar
    }

    fn routes(&self) -> Vec<Route> {
        vec![Route::new(
            Method::Register,
            None,
            DomainMatch::Only(self.domains.clone()),
        )]
    }

    fn on_request(&mut self, ctx: &mut ModuleCtx<'_>, stx: ServerTxId, from: Peer, req: &Request) {
        // RFC 3261 §10.3 step 5: the AOR is the To URI (canonical form).
        let to_uri = req
            .headers
            .get("To")
            .and_then(|v| crate::core::sip::headers::NameAddr::parse("To", v).ok())
            .map(|n| n.uri);
        let Some(to_uri) = to_uri else {
            ctx.reply(stx, req, 400, "Bad To", |_| {});
            return;
        };
        let aor = aor(&to_uri);
        if !ctx.svc.site.serves(&aor) {
            // Step 4 would forward; a registrar of its own domains only answers 404.
            ctx.reply(stx, req, 404, "Not Found", |_| {});
            return;
        }
        let now = ctx.now;
        let Some(location) = ctx.svc.site.location.as_mut() else {
            ctx.reply(stx, req, 500, "Registrar Disabled", |_| {});
            return;
        };
        let outcome = location.on_register(now, &aor, req, from);
        for op in outcome.store {
            ctx.store(op);
        }
        for ev in &outcome.events {
            let change = match ev {
                BindingEvent::Added(_) => "added",
                BindingEvent::Refreshed(_) => "refreshed",
                BindingEvent::Removed(_) => "removed",
                BindingEvent::Expired(_) => "expired",
            };
            tracing::info!(aor = %ev.binding().aor, contact = %ev.binding().contact, change, "binding changed");
        }
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
        if let Some((events, ops)) = ctx
            .svc
            .site
            .location
            .as_mut()
            .map(|l| l.handle_timeout(now))
        {
            for op in ops {
                ctx.store(op);
            }
            for ev in events {
                tracing::info!(aor = %ev.binding().aor, contact = %ev.binding().contact, "binding expired");
            }
        }
        self.arm(ctx);
    }

    fn on_restore(&mut self, ctx: &mut ModuleCtx<'_>, rows: &[StoredRow]) {
        let now = ctx.now;
        if let Some(restored) = ctx.svc.site.location.as_mut().map(|l| l.restore(rows, now)) {
            for op in restored.store {
                ctx.store(op);
            }
            let n = ctx
                .svc
                .site
                .location
                .as_ref()
                .map_or(0, |l| l.binding_count());
            tracing::info!(bindings = n, "bindings restored");
        }
        self.arm(ctx);
    }
}
