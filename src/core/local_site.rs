//! The services of a locally served SIP site (product.md, "Embedded presence agent and
//! registrar"), shared by every module through `Services::site`:
//!
//! - the presence state service ([`PresenceState`]: publications, ETags, composed
//!   documents) for the configured SIP domains;
//! - watcher authorization ([`WatcherRules`]);
//! - the location service ([`Registrar`]: bindings other modules read), and the bindings
//!   mirrored from other registrars (REGISTER copies, `reg` events), one [`Registrar`] per
//!   [`BindingSource`];
//! - digest authentication of phones ([`DigestServer`] against [`Users`]).
//!
//! Modules never reach each other; they reach these through their context. A module that
//! produces presence for a presentity asks [`LocalSite::serves`] and publishes here when
//! the presentity is local, else through the PUA's PUBLISH client (the PUA does that
//! choice itself for its callers).

use super::presence_state::{EventKey, PresenceState, PresenceStateConfig};
use super::registrar::{Binding, BindingSource, Registrar, RegistrarConfig};
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
    /// Longest interval a mirrored REGISTER copy is kept for (0: one hour). Copies are
    /// never refused for a short interval: the proxy already granted it.
    pub copies_max_expires: u32,
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
    /// Bindings mirrored from REGISTER copies of a proxy that stays the registrar.
    pub copies: Registrar,
    /// Bindings mirrored from `reg` event notifications (RFC 3680).
    pub reg_events: Registrar,
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
            copies: Registrar::for_source(
                RegistrarConfig::mirror(c.copies_max_expires),
                BindingSource::Copy,
            ),
            reg_events: Registrar::for_source(RegistrarConfig::mirror(0), BindingSource::RegEvent),
            auth,
            sender_header: if c.sender_header.is_empty() {
                "Sender".into()
            } else {
                c.sender_header.clone()
            },
            max_subscriptions_per_presentity: c.max_subscriptions_per_presentity.max(1),
            local: LocalWatches::default(),
        }
    }

    /// Whether the domain of `uri` is served here.
    pub fn serves(&self, uri: &str) -> bool {
        uri_domain(uri).is_some_and(|d| self.serves_domain(&d))
    }

    pub fn serves_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The live bindings of `aor` from every source, embedded registrar first.
    pub fn bindings_of(&self, aor: &str) -> Vec<(BindingSource, &Binding)> {
        self.registrars()
            .flat_map(|r| r.bindings(aor).into_iter().map(move |b| (r.source(), b)))
            .collect()
    }

    /// The location service of every source that exists.
    pub fn registrars(&self) -> impl Iterator<Item = &Registrar> {
        self.location
            .iter()
            .chain(std::iter::once(&self.copies))
            .chain(std::iter::once(&self.reg_events))
    }

    /// The bindings of one source (`None`: the embedded registrar is off).
    pub fn registrar_mut(&mut self, source: BindingSource) -> Option<&mut Registrar> {
        match source {
            BindingSource::Registrar => self.location.as_mut(),
            BindingSource::Copy => Some(&mut self.copies),
            BindingSource::RegEvent => Some(&mut self.reg_events),
        }
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

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
            .of(presentity)
            .map(|(id, w)| LocalWatcherView {
                id: id.to_string(),
                watcher: w.watcher.clone(),
                status: w.status,
            })
            .collect()
    }

    /// Presentities with at least one local watcher, in order.
    pub fn local_presentities(&self) -> Vec<String> {
        self.local.presentities()
    }
}

/// Something kept per presentity (a watcher of it).
pub trait OfPresentity {
    fn presentity(&self) -> &str;
}

impl OfPresentity for LocalWatch {
    fn presentity(&self) -> &str {
        &self.presentity
    }
}

/// Records by id, indexed by presentity, so a publication, a rule or a new watcher costs
/// what its presentity has, not what the whole site has. A record's presentity must not
/// change while it is stored (re-`insert` it instead).
#[derive(Clone, Debug)]
pub struct ByPresentity<K, V> {
    all: BTreeMap<K, V>,
    index: HashMap<String, BTreeSet<K>>,
}

impl<K, V> Default for ByPresentity<K, V> {
    fn default() -> Self {
        ByPresentity {
            all: BTreeMap::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: Ord + Copy, V: OfPresentity> ByPresentity<K, V> {
    pub fn insert(&mut self, id: K, v: V) {
        self.remove(&id);
        self.index
            .entry(v.presentity().to_string())
            .or_default()
            .insert(id);
        self.all.insert(id, v);
    }

    pub fn remove(&mut self, id: &K) -> Option<V> {
        let v = self.all.remove(id)?;
        if let Some(set) = self.index.get_mut(v.presentity()) {
            set.remove(id);
            if set.is_empty() {
                self.index.remove(v.presentity());
            }
        }
        Some(v)
    }

    pub fn get(&self, id: &K) -> Option<&V> {
        self.all.get(id)
    }

    /// Mutable access for fields other than the presentity.
    pub fn get_mut(&mut self, id: &K) -> Option<&mut V> {
        self.all.get_mut(id)
    }

    pub fn contains_key(&self, id: &K) -> bool {
        self.all.contains_key(id)
    }

    /// The records of `presentity`, by id.
    pub fn of<'a>(&'a self, presentity: &str) -> impl Iterator<Item = (K, &'a V)> + 'a {
        self.index
            .get(presentity)
            .into_iter()
            .flatten()
            .filter_map(|id| self.all.get(id).map(|v| (*id, v)))
    }

    pub fn count(&self, presentity: &str) -> usize {
        self.index.get(presentity).map_or(0, BTreeSet::len)
    }

    /// Every record, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.all.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.all.keys()
    }

    /// Presentities with at least one record, in order.
    pub fn presentities(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// Local watches by subscription id (a field of [`LocalSite`]).
pub type LocalWatches = ByPresentity<SubscriptionId, LocalWatch>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct W(&'static str, u8);

    impl OfPresentity for W {
        fn presentity(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn by_presentity_index_follows_inserts_moves_and_removals() {
        let mut m: ByPresentity<u32, W> = ByPresentity::default();
        m.insert(1, W("sip:a@x", 1));
        m.insert(2, W("sip:a@x", 2));
        m.insert(3, W("sip:b@x", 3));
        assert_eq!(m.count("sip:a@x"), 2);
        // Re-inserting under another presentity moves it in the index.
        m.insert(2, W("sip:b@x", 2));
        assert_eq!(m.of("sip:a@x").map(|(k, _)| k).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            m.of("sip:b@x").map(|(k, _)| k).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(m.remove(&1), Some(W("sip:a@x", 1)));
        assert_eq!(m.count("sip:a@x"), 0);
        assert_eq!(m.presentities(), vec!["sip:b@x".to_string()]);
        assert_eq!(m.len(), 2);
    }
}
