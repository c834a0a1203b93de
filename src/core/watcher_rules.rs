//! Watcher authorization of the embedded presence agent: per (presentity, watcher) rules
//! `allow`, `deny` or `pending`, and a default per domain relation (same domain / other
//! domains). RFC 3856 §6.6 requires the presence agent to authorize subscriptions; the
//! policy language (XCAP pres-rules, RFC 5025) is out of scope: rules are set through the
//! management API and `ctl rules` (the presentity's owner or an operator decides).
//!
//! Pure and self-contained. Every change is returned as a [`StoreOp`] for
//! [`StoreTable::Rules`] so rules survive a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::persist::{StoreOp, StoreTable, StoredRow};

/// What a watcher is allowed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Subscriptions are active at once.
    Allow,
    /// Subscriptions are refused with 403 (RFC 6665 §4.2.1.2); live ones end with
    /// `terminated;reason=rejected`.
    Deny,
    /// Subscriptions wait (`pending`, RFC 6665 §4.2.1.3) and show up in the presentity's
    /// `presence.winfo` until a rule decides.
    Pending,
}

impl RuleAction {
    pub fn parse(s: &str) -> Option<RuleAction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Some(RuleAction::Allow),
            "deny" => Some(RuleAction::Deny),
            "pending" => Some(RuleAction::Pending),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
            RuleAction::Pending => "pending",
        }
    }
}

/// The defaults used when no explicit rule names the pair.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RuleDefaults {
    /// The watcher's domain equals the presentity's.
    pub same_domain: RuleAction,
    /// Any other watcher, XMPP users (seen under their SIP URI) included.
    pub other_domains: RuleAction,
}

impl Default for RuleDefaults {
    fn default() -> Self {
        RuleDefaults {
            same_domain: RuleAction::Allow,
            other_domains: RuleAction::Pending,
        }
    }
}

/// One explicit rule, as listed and stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub presentity: String,
    pub watcher: String,
    pub action: RuleAction,
}

/// The rule set. Presentities and watchers are AORs (`sip:user@domain`, see
/// `routing::aor_of`); callers normalise before asking.
#[derive(Clone, Debug, Default)]
pub struct WatcherRules {
    defaults: RuleDefaults,
    /// Defaults of particular presentity domains (lowercase), overriding `defaults`.
    domain_defaults: BTreeMap<String, RuleDefaults>,
    rules: BTreeMap<(String, String), RuleAction>,
}

/// The domain part of an AOR, lowercase.
fn domain_of(aor: &str) -> &str {
    aor.rsplit('@').next().unwrap_or(aor)
}

impl WatcherRules {
    pub fn new(defaults: RuleDefaults) -> WatcherRules {
        WatcherRules {
            defaults,
            domain_defaults: BTreeMap::new(),
            rules: BTreeMap::new(),
        }
    }

    /// Gives the presentities of `domain` defaults of their own.
    pub fn with_domain_defaults(mut self, domain: &str, defaults: RuleDefaults) -> WatcherRules {
        self.domain_defaults
            .insert(domain.to_ascii_lowercase(), defaults);
        self
    }

    /// The action for `watcher` watching `presentity`: the explicit rule, else the default
    /// of the domain relation. A presentity always may watch itself (its own devices).
    pub fn decide(&self, presentity: &str, watcher: &str) -> RuleAction {
        if let Some(a) = self
            .rules
            .get(&(presentity.to_string(), watcher.to_string()))
        {
            return *a;
        }
        if presentity == watcher {
            return RuleAction::Allow;
        }
        let domain = domain_of(presentity).to_ascii_lowercase();
        let defaults = self.domain_defaults.get(&domain).unwrap_or(&self.defaults);
        if domain.eq_ignore_ascii_case(domain_of(watcher)) {
            defaults.same_domain
        } else {
            defaults.other_domains
        }
    }

    /// Whether an explicit rule names the pair.
    pub fn explicit(&self, presentity: &str, watcher: &str) -> Option<RuleAction> {
        self.rules
            .get(&(presentity.to_string(), watcher.to_string()))
            .copied()
    }

    /// Sets (or replaces) the rule of a pair; returns the store write.
    pub fn set(&mut self, presentity: &str, watcher: &str, action: RuleAction) -> StoreOp {
        self.rules
            .insert((presentity.to_string(), watcher.to_string()), action);
        let rule = Rule {
            presentity: presentity.to_string(),
            watcher: watcher.to_string(),
            action,
        };
        StoreOp::Put {
            table: StoreTable::Rules,
            key: row_key(presentity, watcher),
            owner: "presence_agent".into(),
            subject: presentity.to_string(),
            expires_at: None,
            data: serde_json::to_value(&rule).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Removes the rule of a pair (the default applies again); `None` when there was none.
    pub fn remove(&mut self, presentity: &str, watcher: &str) -> Option<StoreOp> {
        self.rules
            .remove(&(presentity.to_string(), watcher.to_string()))
            .map(|_| StoreOp::Delete {
                table: StoreTable::Rules,
                key: row_key(presentity, watcher),
            })
    }

    /// Every explicit rule, ordered by presentity then watcher.
    pub fn list(&self) -> Vec<Rule> {
        self.rules
            .iter()
            .map(|((p, w), a)| Rule {
                presentity: p.clone(),
                watcher: w.clone(),
                action: *a,
            })
            .collect()
    }

    /// Rebuilds the rules from `StoreTable::Rules` rows; unreadable rows are logged and
    /// skipped. Returns how many were restored.
    pub fn restore(&mut self, rows: &[StoredRow]) -> usize {
        let mut n = 0;
        for row in rows.iter().filter(|r| r.table == StoreTable::Rules) {
            match serde_json::from_value::<Rule>(row.data.clone()) {
                Ok(r) => {
                    self.rules.insert((r.presentity, r.watcher), r.action);
                    n += 1;
                }
                Err(e) => {
                    tracing::warn!(key = %row.key, error = %e, "unreadable rule row, ignored")
                }
            }
        }
        n
    }
}

fn row_key(presentity: &str, watcher: &str) -> String {
    format!("{presentity} {watcher}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> WatcherRules {
        WatcherRules::new(RuleDefaults::default())
    }

    #[test]
    fn same_domain_default_allows_and_other_domains_wait() {
        let r = rules();
        assert_eq!(
            r.decide("sip:bob@sip.test", "sip:carol@sip.test"),
            RuleAction::Allow
        );
        assert_eq!(
            r.decide("sip:bob@sip.test", "sip:alice@xmpp.test"),
            RuleAction::Pending
        );
    }

    #[test]
    fn a_domain_of_its_own_has_its_own_defaults() {
        let open = RuleDefaults {
            same_domain: RuleAction::Allow,
            other_domains: RuleAction::Allow,
        };
        let r = rules().with_domain_defaults("Public.test", open);
        assert_eq!(
            r.decide("sip:desk@public.test", "sip:alice@xmpp.test"),
            RuleAction::Allow
        );
        assert_eq!(
            r.decide("sip:bob@sip.test", "sip:alice@xmpp.test"),
            RuleAction::Pending,
            "other domains keep the general default"
        );
    }

    #[test]
    fn explicit_rule_beats_the_default() {
        let mut r = rules();
        r.set("sip:bob@sip.test", "sip:carol@sip.test", RuleAction::Deny);
        assert_eq!(
            r.decide("sip:bob@sip.test", "sip:carol@sip.test"),
            RuleAction::Deny
        );
        r.remove("sip:bob@sip.test", "sip:carol@sip.test");
        assert_eq!(
            r.decide("sip:bob@sip.test", "sip:carol@sip.test"),
            RuleAction::Allow
        );
    }

    #[test]
    fn rules_survive_a_restore_from_their_store_rows() {
        let mut r = rules();
        let op = r.set("sip:bob@sip.test", "sip:alice@xmpp.test", RuleAction::Allow);
        let StoreOp::Put {
            table, key, data, ..
        } = op
        else {
            panic!("put expected")
        };
        let mut fresh = rules();
        let n = fresh.restore(&[StoredRow {
            table,
            key,
            owner: "presence_agent".into(),
            data,
        }]);
        assert_eq!(n, 1);
        assert_eq!(
            fresh.decide("sip:bob@sip.test", "sip:alice@xmpp.test"),
            RuleAction::Allow
        );
    }
}
