//! The services of a locally served SIP site (product.md, "Embedded presence agent and
//! registrar"), shared by every module through `Services::site`:
//!
//! - the presence state service ([`PresenceState`]: publications, ETags, composed
//!   documents) for the configured SIP domains;
//! - watcher authorization ([`WatcherRules`]);
//! - the location service ([`Registrar`]: bindings other modules read);
//! - digest authentication of phones ([`DigestServer`] against [`Users`]).
//!
//! Modules never reach each other; they reach these through their context. A module that
//! produces presence for a presentity asks [`LocalSite::serves`] and publishes here when
//! the presentity is local, else through the PUA's PUBLISH client (the PUA does that
//! choice itself for its callers).

use super::presence_state::{EventKey, PresenceState, PresenceStateConfig};
use super::registrar::{Registrar, RegistrarConfig};
use super::routing::{aor_of, uri_domain};
use super::sip::digest_server::{DigestServer, DigestServerConfig, StoredSecret};
use super::users::{ConfigUser, Users};
use super::watcher_rules::{RuleDefaults, WatcherRules};

/// What the engine needs to build the local site (validated by `config`).
#[derive(Clone, Debug, Default)]
pub struct LocalSiteConfig {
    /// SIP domains served locally (lowercase). Empty: no local site.
    pub domains: Vec<String>,
    pub presence: PresenceStateConfig,
    pub rule_defaults: RuleDefaults,
    /// Defaults of particular served domains (domain, defaults), overriding `rule_defaults`.
    pub domain_rule_defaults: Vec<(String, RuleDefaults)>,
    /// Header naming the publisher of a `dialog;sla` PUBLISH (pua_bla's `Sender`).
    pub sender_header: String,
    /// Most watcher subscriptions one presentity may have (503 beyond).
    pub max_subscriptions_per_presentity: usize,
    /// `None`: no registrar.
    pub registrar: Option<RegistrarConfig>,
    /// `None`: requests from untrusted peers are refused (403) rather than challenged.
    pub auth: Option<AuthConfig>,
}

/// Digest authentication of phones (RFC 3261 §22).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub server: DigestServerConfig,
    /// The realm of every challenge; `None`: the request's domain.
    pub realm: Option<String>,
    pub users: Vec<ConfigUser>,
}

/// Digest server and users together.
#[derive(Debug)]
pub struct Auth {
    pub server: DigestServer,
    pub users: Users,
    pub realm: Option<String>,
}

/// See the module docs.
#[derive(Debug)]
pub struct LocalSite {
    pub domains: Vec<String>,
    pub presence: PresenceState,
    pub rules: WatcherRules,
    pub location: Option<Registrar>,
    pub auth: Option<Auth>,
    pub sender_header: String,
    pub max_subscriptions_per_presentity: usize,
    /// PUA subscriptions attached here (see [`LocalWatch`]).
    pub local: LocalWatches,
}

impl LocalSite {
    pub fn new(c: &LocalSiteConfig) -> LocalSite {
        let auth = c.auth.as_ref().and_then(|a| {
            let server = match DigestServer::new(a.server.clone()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "digest authentication disabled");
                    return None;
                }
            };
            let users = match Users::new(a.users.clone()) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "configured users refused; none loaded");
                    Users::default()
                }
            };
            Some(Auth {
                server,
                users,
                realm: a.realm.clone(),
            })
        });
        LocalSite {
            domains: c.domains.clone(),
            presence: PresenceState::new(c.presence.clone()),
            rules: c
                .domain_rule_defaults
                .iter()
                .fold(WatcherRules::new(c.rule_defaults), |r, (d, defaults)| {
                    r.with_domain_defaults(d, *defaults)
                }),
            location: c.registrar.clone().map(Registrar::new),
            auth,
            sender_header: if c.sender_header.is_empty() {
                "Sender".into()
            } else {
                c.sender_header.clone()
            },
            max_subscriptions_per_presentity: c.max_subscriptions_per_presentity.max(1),
            local: LocalWatches::new(),
        }
    }

    /// Whether the domain of `uri` is served here.
    pub fn serves(&self, uri: &str) -> bool {
        uri_domain(uri).is_some_and(|d| self.serves_domain(&d))
    }

    pub fn serves_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The composed document of `presentity` for `event` as a watcher without a sender
    /// of its own sees it (`version` for dialog-info).
    pub fn document(&self, presentity: &str, event: &EventKey, version: u32) -> Option<Vec<u8>> {
        self.presence.document(presentity, event, version, None)
    }
}

/// A config user's secret from its password or HA1s.
pub fn config_user(
    username: &str,
    domain: &str,
    password: Option<&str>,
    ha1_md5: Option<&str>,
    ha1_sha256: Option<&str>,
) -> ConfigUser {
    ConfigUser {
        username: username.to_string(),
        domain: domain.to_string(),
        secret: match password {
            Some(p) => StoredSecret::Password(p.to_string()),
            None => StoredSecret::Ha1 {
                md5: ha1_md5.map(str::to_string),
                sha256: ha1_sha256.map(str::to_string),
            },
        },
    }
}

/// The AOR form of a URI (see `routing::aor_of`), or the text itself when it is no URI.
pub fn aor(uri: &str) -> String {
    aor_of(uri).unwrap_or_else(|| uri.trim().to_string())
}

// ---------------------------------------------------------------------------------------
// Watchers attached in-process (no SIP hop): the PUA's subscriptions to local presentities.
// ---------------------------------------------------------------------------------------

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::handles::SubscriptionId;
use super::module_id::ModuleId;
use super::presence::watcherinfo::WatcherStatus;

/// A PUA subscription satisfied by the local presence state service instead of a SIP
/// dialog (the bridge's XMPP users watching a local SIP user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalWatch {
    pub owner: ModuleId,
    pub presentity: String,
    pub watcher: String,
    pub status: WatcherStatus,
}

/// One local watcher as the winfo document and the admin API list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalWatcherView {
    pub id: String,
    pub watcher: String,
    pub status: WatcherStatus,
}

/// Stored form of a [`LocalWatch`] (in `StoreTable::Subscriptions`, `local: true`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalWatchRecord {
    pub local: bool,
    pub id: u64,
    pub owner: String,
    pub presentity: String,
    pub watcher: String,
    pub active: bool,
}

impl LocalSite {
    /// The local watchers of `presentity`, by id.
    pub fn local_watchers(&self, presentity: &str) -> Vec<LocalWatcherView> {
        self.local
            .iter()
            .filter(|(_, w)| w.presentity == presentity)
            .map(|(id, w)| LocalWatcherView {
                id: id.to_string(),
                watcher: w.watcher.clone(),
                status: w.status,
            })
            .collect()
    }

    /// Presentities with at least one local watcher.
    pub fn local_presentities(&self) -> Vec<String> {
        let mut v: Vec<String> = self.local.values().map(|w| w.presentity.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Local watches by subscription id (a field of [`LocalSite`]).
pub type LocalWatches = BTreeMap<SubscriptionId, LocalWatch>;
