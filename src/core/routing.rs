//! The module host's routing table (architecture.md, The module host): every incoming
//! request that is not part of a dialog the shared services already hold selects exactly
//! one module by its method, its Event package *with parameters*, and the domain of its
//! Request-URI (of its To URI for in-dialog requests, whose Request-URI is our Contact).
//!
//! Contract:
//! - Modules declare [`Route`]s; the engine builds one [`RoutingTable`] from them at start.
//! - [`RoutingTable::route`] answers [`Routing::Module`] or an explicit [`Unrouted`] answer,
//!   never silence: a method nobody serves → 405 with `Allow` (501 for unknown methods,
//!   RFC 3261 §8.2.1 / §21.5.2); a missing or unserved Event package → 489 with
//!   `Allow-Events` (RFC 6665 §8.3.2); a served package for a domain nobody serves → 404
//!   (RFC 3903 §6 step 1 for PUBLISH, RFC 3261 §8.2.2.1 otherwise).
//! - The most specific route wins: a route naming domains beats a catch-all one, and a
//!   route whose Event parameters are all present in the request beats one with fewer
//!   (`dialog;sla` beats `dialog` for `Event: dialog;sla`; `Event: dialog;call-id=x` is
//!   served by the `dialog` route, RFC 4235 §4.1 filter parameters). Two equally specific
//!   routes are a configuration conflict, reported by [`RoutingTable::new`] and resolved
//!   in favour of the one declared first.

use super::module_id::ModuleId;
use super::sip::headers::{EventHeader, NameAddr};
use super::sip::message::{Method, Request};
use super::sip::uri::SipUri;

/// Methods the engine itself answers whatever the modules declare (RFC 3261 §20.5 Allow):
/// OPTIONS, CANCEL and ACK (stateless or transaction-level), NOTIFY (the PUA's dialogs),
/// and SUBSCRIBE, which an events-capable UA answers 489 for packages nobody serves
/// (RFC 6665 §8.3.2) rather than 405.
const BUILT_IN_METHODS: [&str; 5] = ["SUBSCRIBE", "NOTIFY", "OPTIONS", "CANCEL", "ACK"];

/// Which Request-URI domains a route takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainMatch {
    /// Every domain (the module decides, e.g. the bridge maps the address itself).
    Any,
    /// Only these domains (compared case-insensitively, RFC 3261 §19.1.4).
    Only(Vec<String>),
}

/// One entry a module declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// `None` for methods without an Event header (REGISTER, MESSAGE); else the package
    /// and the parameters that must be present, written like an Event header value
    /// (`presence`, `presence.winfo`, `dialog;sla`).
    pub event: Option<String>,
    pub domains: DomainMatch,
}

impl Route {
    pub fn new(method: Method, event: Option<&str>, domains: DomainMatch) -> Route {
        Route {
            method,
            event: event.map(str::to_string),
            domains,
        }
    }
}

/// A route as stored: the event split into package and required parameter names.
#[derive(Clone, Debug)]
struct Entry {
    method: Method,
    package: Option<String>,
    params: Vec<String>,
    domains: DomainMatch,
    module: ModuleId,
}

impl Entry {
    /// How specific this entry is (higher wins): named domains first, then parameters.
    fn specificity(&self) -> (u8, usize) {
        let d = match self.domains {
            DomainMatch::Any => 0,
            DomainMatch::Only(_) => 1,
        };
        (d, self.params.len())
    }

    fn takes_domain(&self, domain: &str) -> bool {
        match &self.domains {
            DomainMatch::Any => true,
            DomainMatch::Only(list) => list.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }

    fn takes_event(&self, event: &EventHeader) -> bool {
        self.package.as_deref() == Some(event.package.as_str())
            && self.params.iter().all(|p| event.params.has(p))
    }

    /// The event as listed in Allow-Events (package only: parameters are not part of
    /// the package name, RFC 6665 §8.2.2).
    fn listed_package(&self) -> Option<&str> {
        self.package.as_deref()
    }
}

/// Two routes that would take the same requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConflict {
    pub method: String,
    pub event: Option<String>,
    pub kept: ModuleId,
    pub ignored: ModuleId,
}

/// The explicit answer to a request no module takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrouted {
    pub status: u16,
    pub reason: &'static str,
    /// `Allow` or `Allow-Events` as applicable.
    pub headers: Vec<(&'static str, String)>,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routing {
    Module(ModuleId),
    Unrouted(Unrouted),
}

/// The routing table of one engine.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    entries: Vec<Entry>,
}

impl RoutingTable {
    /// Builds the table from each module's routes, in module order; returns the conflicts
    /// found (the first declaration is kept).
    pub fn new(routes: Vec<(ModuleId, Vec<Route>)>) -> (RoutingTable, Vec<RouteConflict>) {
        let mut table = RoutingTable::default();
        let mut conflicts = Vec::new();
        for (module, list) in routes {
            for r in list {
                let (package, params) = match r.event.as_deref().map(EventHeader::parse) {
                    None => (None, Vec::new()),
                    Some(Ok(ev)) => {
                        let mut names: Vec<String> = ev
                            .params
                            .0
                            .iter()
                            .map(|(n, _)| n.to_ascii_lowercase())
                            .collect();
                        names.sort();
                        (Some(ev.package), names)
                    }
                    Some(Err(e)) => {
                        tracing::error!(module = module.as_str(), error = %e, "route with a bad event ignored");
                        continue;
                    }
                };
                let entry = Entry {
                    method: r.method,
                    package,
                    params,
                    domains: r.domains,
                    module,
                };
                if let Some(prev) = table.entries.iter().find(|e| overlaps(e, &entry)) {
                    conflicts.push(RouteConflict {
                        method: entry.method.as_str().to_string(),
                        event: r.event.clone(),
                        kept: prev.module,
                        ignored: module,
                    });
                    continue;
                }
                table.entries.push(entry);
            }
        }
        (table, conflicts)
    }

    /// Whether some module takes `method` at all.
    pub fn serves_method(&self, method: &Method) -> bool {
        self.entries.iter().any(|e| &e.method == method)
    }

    /// The `Allow` value: the built-in methods and every routed one (RFC 3261 §20.5).
    pub fn allow(&self) -> String {
        let mut methods: Vec<String> = Vec::new();
        for e in &self.entries {
            let m = e.method.as_str().to_string();
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        for m in BUILT_IN_METHODS {
            if !methods.iter().any(|x| x == m) {
                methods.push(m.to_string());
            }
        }
        methods.join(", ")
    }

    /// Packages served for `method`, sorted and without duplicates (`Allow-Events`).
    pub fn packages(&self, method: &Method) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter(|e| &e.method == method)
            .filter_map(|e| e.listed_package().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Packages `module` serves for `method` (the notifier policy's `packages`).
    pub fn packages_of(&self, module: ModuleId, method: &Method) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.module == module && &e.method == method)
            .filter_map(|e| e.listed_package().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The module serving `method` + `event` for `domain`, when one does.
    pub fn module_for(
        &self,
        method: &Method,
        event: Option<&EventHeader>,
        domain: &str,
    ) -> Option<ModuleId> {
        self.entries
            .iter()
            .filter(|e| &e.method == method && e.takes_domain(domain))
            .filter(|e| match (&e.package, event) {
                (None, _) => true,
                (Some(_), Some(ev)) => e.takes_event(ev),
                (Some(_), None) => false,
            })
            .max_by_key(|e| (e.specificity(), std::cmp::Reverse(self.position(e))))
            .map(|e| e.module)
    }

    fn position(&self, e: &Entry) -> usize {
        self.entries
            .iter()
            .position(|x| std::ptr::eq(x, e))
            .unwrap_or(usize::MAX)
    }

    /// Routes `req` (see the module docs for the explicit answers).
    pub fn route(&self, req: &Request) -> Routing {
        let method = &req.method;
        if !self.serves_method(method) && *method != Method::Subscribe {
            let (status, reason) = match method {
                Method::Other(_) => (501, "Not Implemented"),
                _ => (405, "Method Not Allowed"),
            };
            return Routing::Unrouted(Unrouted {
                status,
                reason,
                headers: vec![("Allow", self.allow())],
            });
        }
        let takes_events = *method == Method::Subscribe
            || self
                .entries
                .iter()
                .any(|e| &e.method == method && e.package.is_some());
        let event = req
            .headers
            .get("Event")
            .and_then(|v| EventHeader::parse(v).ok());
        if takes_events {
            let served = event.as_ref().is_some_and(|ev| {
                self.entries
                    .iter()
                    .any(|e| &e.method == method && e.takes_event(ev))
            });
            if !served {
                let packages = self.packages(method);
                return Routing::Unrouted(Unrouted {
                    status: 489,
                    reason: "Bad Event",
                    headers: if packages.is_empty() {
                        Vec::new()
                    } else {
                        vec![("Allow-Events", packages.join(", "))]
                    },
                });
            }
        }
        let domain = request_domain(req).unwrap_or_default();
        match self.module_for(method, event.as_ref(), &domain) {
            Some(m) => Routing::Module(m),
            None => Routing::Unrouted(Unrouted {
                status: 404,
                reason: "Not Found",
                headers: Vec::new(),
            }),
        }
    }
}

/// Whether two entries would take exactly the same requests (same method, package,
/// parameters, and an overlapping domain set at the same specificity).
fn overlaps(a: &Entry, b: &Entry) -> bool {
    if a.method != b.method || a.package != b.package || a.params != b.params {
        return false;
    }
    match (&a.domains, &b.domains) {
        (DomainMatch::Any, DomainMatch::Any) => true,
        (DomainMatch::Only(x), DomainMatch::Only(y)) => x
            .iter()
            .any(|d| y.iter().any(|e| e.eq_ignore_ascii_case(d))),
        _ => false,
    }
}

/// The domain a request is addressed to: the To URI's host for in-dialog requests (the
/// Request-URI is then our Contact), else the Request-URI's host; lowercase.
pub fn request_domain(req: &Request) -> Option<String> {
    let to = req
        .headers
        .get("To")
        .and_then(|v| NameAddr::parse("To", v).ok());
    let in_dialog = to.as_ref().is_some_and(|n| n.tag().is_some());
    let uri = match (&to, in_dialog) {
        (Some(n), true) => n.uri.clone(),
        _ => req.uri.clone(),
    };
    uri_domain(&uri)
}

/// The host of a SIP URI, lowercase, without port.
pub fn uri_domain(uri: &str) -> Option<String> {
    SipUri::parse(uri).ok().map(|u| u.host.to_ascii_lowercase())
}

/// `sip:user@domain` of a URI: scheme kept, parameters, port and headers dropped,
/// domain lowercased (the form presentities, AORs and watchers are keyed by).
pub fn aor_of(uri: &str) -> Option<String> {
    let u = SipUri::parse(uri).ok()?;
    let host = u.host.to_ascii_lowercase();
    Some(match &u.user {
        Some(user) => format!("{}:{}@{}", u.scheme.as_str(), user, host),
        None => format!("{}:{}", u.scheme.as_str(), host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RoutingTable {
        let local = DomainMatch::Only(vec!["sip.test".into()]);
        RoutingTable::new(vec![
            (
                ModuleId::Bridge,
                vec![Route::new(
                    Method::Subscribe,
                    Some("presence"),
                    DomainMatch::Any,
                )],
            ),
            (
                ModuleId::PresenceAgent,
                vec![
                    Route::new(Method::Subscribe, Some("presence"), local.clone()),
                    Route::new(Method::Subscribe, Some("dialog"), local.clone()),
                    Route::new(Method::Publish, Some("presence"), local.clone()),
                ],
            ),
            (
                ModuleId::Bla,
                vec![Route::new(
                    Method::Subscribe,
                    Some("dialog;sla"),
                    local.clone(),
                )],
            ),
        ])
        .0
    }

    fn ev(v: &str) -> EventHeader {
        EventHeader::parse(v).unwrap()
    }

    #[test]
    fn named_domain_beats_catch_all() {
        let t = table();
        let p = ev("presence");
        assert_eq!(
            t.module_for(&Method::Subscribe, Some(&p), "sip.test"),
            Some(ModuleId::PresenceAgent)
        );
        assert_eq!(
            t.module_for(&Method::Subscribe, Some(&p), "xmpp.test"),
            Some(ModuleId::Bridge)
        );
    }

    #[test]
    fn event_parameters_select_the_more_specific_package_route() {
        let t = table();
        assert_eq!(
            t.module_for(&Method::Subscribe, Some(&ev("dialog;sla")), "sip.test"),
            Some(ModuleId::Bla)
        );
        assert_eq!(
            t.module_for(
                &Method::Subscribe,
                Some(&ev("dialog;call-id=x")),
                "sip.test"
            ),
            Some(ModuleId::PresenceAgent)
        );
    }

    #[test]
    fn equal_routes_are_reported_as_conflicts_and_first_is_kept() {
        let (t, conflicts) = RoutingTable::new(vec![
            (
                ModuleId::Admin,
                vec![Route::new(Method::Register, None, DomainMatch::Any)],
            ),
            (
                ModuleId::Usrloc,
                vec![Route::new(Method::Register, None, DomainMatch::Any)],
            ),
        ]);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].kept, ModuleId::Admin);
        assert_eq!(
            t.module_for(&Method::Register, None, "x"),
            Some(ModuleId::Admin)
        );
    }

    #[test]
    fn allow_lists_routed_and_built_in_methods() {
        let allow = table().allow();
        for m in ["SUBSCRIBE", "PUBLISH", "NOTIFY", "OPTIONS", "CANCEL", "ACK"] {
            assert!(allow.contains(m), "{allow}");
        }
        assert!(!allow.contains("REGISTER"));
    }

    #[test]
    fn subscribe_nobody_serves_is_489_not_405() {
        let (t, _) = RoutingTable::new(vec![]);
        let mut r = Request::new(Method::Subscribe, "sip:bob@sip.test");
        r.headers.push("Event", "presence");
        match t.route(&r) {
            Routing::Unrouted(u) => assert_eq!(u.status, 489),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aor_drops_parameters_port_and_case_of_domain() {
        assert_eq!(
            aor_of("sip:bob@SIP.test:5070;transport=tcp").as_deref(),
            Some("sip:bob@sip.test")
        );
    }
}
