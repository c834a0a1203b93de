//! The SIP users directory: who may authenticate with digest (RFC 3261 §22.4), pure.
//!
//! Two sources:
//! - **config users**, from `gateway.toml`: a password or HA1 forms, fixed for the life of
//!   the process;
//! - **run-time users**, managed with `ctl users` ([`Users::add`], [`Users::remove`]) and
//!   persisted in `StoreTable::Users` (key `user@domain`, owner `"users"`). Their password
//!   is never kept: [`Users::add`] computes the MD5 and SHA-256 HA1s (RFC 7616 §3.4.2,
//!   realm = domain) and stores only those.
//!
//! **Config wins**: a config user shadows a run-time user of the same `user@domain`. `add`
//! and `remove` refuse to touch a name the config defines ([`UserError::ConfigOwned`]); a
//! stored row that collides (written before the name went into the config) is kept,
//! shadowed, and comes back into effect if the config entry is removed, so editing the
//! config never deletes data.
//!
//! The realm of a user is their domain: [`UserDirectory::secret`] looks `username` up in
//! `realm` as a domain. Domains compare case-insensitively (kept lowercase), usernames
//! exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::persist::{StoreOp, StoreTable, StoredRow};
use super::sip::digest_server::{StoredSecret, UserDirectory};

/// The `owner` of the users' store rows.
pub const STORE_OWNER: &str = "users";

/// A user from the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigUser {
    pub username: String,
    pub domain: String,
    pub secret: StoredSecret,
}

/// Where a user comes from, for listings.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserSource {
    Config,
    Runtime,
}

/// One line of [`Users::list`]: no secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UserEntry {
    pub username: String,
    pub domain: String,
    pub source: UserSource,
    /// A stored user hidden by a config user of the same name.
    pub shadowed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("bad username {0:?}: empty, or holds '@', ':', white space or a control character")]
    BadUsername(String),
    #[error("bad domain {0:?}: empty, or holds '@', ':', '/', white space or a control character")]
    BadDomain(String),
    #[error("{0} is defined in the config file; change it there")]
    ConfigOwned(String),
    #[error("no run-time user {0}")]
    NotFound(String),
    #[error("config user {0} has neither a password nor an HA1")]
    NoSecret(String),
    #[error("config user {0} is defined twice")]
    Duplicate(String),
    #[error("empty password")]
    EmptyPassword,
}

/// The stored form of a run-time user: HA1s only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredUser {
    username: String,
    domain: String,
    ha1_md5: String,
    ha1_sha256: String,
}

impl StoredUser {
    fn secret(&self) -> StoredSecret {
        StoredSecret::Ha1 {
            md5: Some(self.ha1_md5.clone()),
            sha256: Some(self.ha1_sha256.clone()),
        }
    }
}

/// The directory. Keys are `user@domain` with the domain lowercased.
#[derive(Clone, Debug, Default)]
pub struct Users {
    config: BTreeMap<String, ConfigUser>,
    runtime: BTreeMap<String, StoredUser>,
}

fn key(username: &str, domain: &str) -> String {
    format!("{username}@{domain}")
}

fn check_username(u: &str) -> Result<(), UserError> {
    if u.is_empty()
        || u.chars()
            .any(|c| c == '@' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(UserError::BadUsername(u.to_string()));
    }
    Ok(())
}

/// Checks a domain and gives its lowercase form.
fn check_domain(d: &str) -> Result<String, UserError> {
    if d.is_empty()
        || d.chars()
            .any(|c| matches!(c, '@' | ':' | '/') || c.is_whitespace() || c.is_control())
    {
        return Err(UserError::BadDomain(d.to_string()));
    }
    Ok(d.to_ascii_lowercase())
}

impl Users {
    /// The directory with the config users (validated here: names, a secret each, no
    /// duplicate `user@domain`).
    pub fn new(config_users: Vec<ConfigUser>) -> Result<Self, UserError> {
        let mut config = BTreeMap::new();
        for mut u in config_users {
            check_username(&u.username)?;
            u.domain = check_domain(&u.domain)?;
            let k = key(&u.username, &u.domain);
            match &u.secret {
                StoredSecret::Ha1 {
                    md5: None,
                    sha256: None,
                } => return Err(UserError::NoSecret(k)),
                StoredSecret::Password(p) if p.is_empty() => return Err(UserError::NoSecret(k)),
                _ => {}
            }
            if config.insert(k.clone(), u).is_some() {
                return Err(UserError::Duplicate(k));
            }
        }
        Ok(Users {
            config,
            runtime: BTreeMap::new(),
        })
    }

    /// Adds a run-time user, or changes their password. Only the HA1s are kept and stored.
    pub fn add(
        &mut self,
        username: &str,
        domain: &str,
        password: &str,
    ) -> Result<StoreOp, UserError> {
        check_username(username)?;
        let domain = check_domain(domain)?;
        if password.is_empty() {
            return Err(UserError::EmptyPassword);
        }
        let k = key(username, &domain);
        if self.config.contains_key(&k) {
            return Err(UserError::ConfigOwned(k));
        }
        let input = format!("{username}:{domain}:{password}");
        let user = StoredUser {
            username: username.to_string(),
            domain: domain.clone(),
            ha1_md5: super::sip::digest::Algorithm::Md5.hash_hex(&input),
            ha1_sha256: super::sip::digest::Algorithm::Sha256.hash_hex(&input),
        };
        let op = StoreOp::Put {
            table: StoreTable::Users,
            key: k.clone(),
            owner: STORE_OWNER.to_string(),
            subject: format!("sip:{k}"),
            expires_at: None,
            data: serde_json::to_value(&user).unwrap_or(serde_json::Value::Null),
        };
        self.runtime.insert(k, user);
        Ok(op)
    }

    /// Removes a run-time user.
    pub fn remove(&mut self, username: &str, domain: &str) -> Result<StoreOp, UserError> {
        let domain = check_domain(domain)?;
        let k = key(username, &domain);
        if self.config.contains_key(&k) {
            return Err(UserError::ConfigOwned(k));
        }
        if self.runtime.remove(&k).is_none() {
            return Err(UserError::NotFound(k));
        }
        Ok(StoreOp::Delete {
            table: StoreTable::Users,
            key: k,
        })
    }

    /// Every user, ordered by `user@domain`, config users before a stored one they shadow.
    pub fn list(&self) -> Vec<UserEntry> {
        let mut out: Vec<UserEntry> = self
            .config
            .values()
            .map(|u| UserEntry {
                username: u.username.clone(),
                domain: u.domain.clone(),
                source: UserSource::Config,
                shadowed: false,
            })
            .chain(self.runtime.iter().map(|(k, u)| UserEntry {
                username: u.username.clone(),
                domain: u.domain.clone(),
                source: UserSource::Runtime,
                shadowed: self.config.contains_key(k),
            }))
            .collect();
        out.sort();
        out
    }

    /// Takes back the rows of `StoreTable::Users` owned by `"users"` (others ignored).
    /// Returns the rows that could not be read, with the reason; they stay in the store.
    pub fn restore(&mut self, rows: &[StoredRow]) -> Vec<(String, String)> {
        let mut rejected = Vec::new();
        for row in rows {
            if row.table != StoreTable::Users || row.owner != STORE_OWNER {
                continue;
            }
            let user: StoredUser = match serde_json::from_value(row.data.clone()) {
                Ok(u) => u,
                Err(e) => {
                    rejected.push((row.key.clone(), e.to_string()));
                    continue;
                }
            };
            let valid = check_username(&user.username)
                .and_then(|()| check_domain(&user.domain))
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    if key(&user.username, &d) == row.key {
                        Ok(d)
                    } else {
                        Err(format!("row holds {}@{}", user.username, user.domain))
                    }
                });
            match valid {
                Ok(domain) => {
                    let user = StoredUser { domain, ..user };
                    self.runtime.insert(row.key.clone(), user);
                }
                Err(e) => rejected.push((row.key.clone(), e)),
            }
        }
        rejected
    }

    pub fn len(&self) -> usize {
        self.config.len()
            + self
                .runtime
                .keys()
                .filter(|k| !self.config.contains_key(*k))
                .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl UserDirectory for Users {
    /// The config user of `username@realm`, else the run-time one.
    fn secret(&self, username: &str, realm: &str) -> Option<StoredSecret> {
        let k = key(username, &realm.to_ascii_lowercase());
        self.config
            .get(&k)
            .map(|u| u.secret.clone())
            .or_else(|| self.runtime.get(&k).map(StoredUser::secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sip::digest::Algorithm;

    fn cfg_user(name: &str, pw: &str) -> ConfigUser {
        ConfigUser {
            username: name.into(),
            domain: "Sip.Example".into(),
            secret: StoredSecret::Password(pw.into()),
        }
    }

    fn rows_of(ops: &[StoreOp]) -> Vec<StoredRow> {
        ops.iter()
            .filter_map(|op| match op {
                StoreOp::Put {
                    table,
                    key,
                    owner,
                    data,
                    ..
                } => Some(StoredRow {
                    table: *table,
                    key: key.clone(),
                    owner: owner.clone(),
                    data: data.clone(),
                }),
                StoreOp::Delete { .. } => None,
            })
            .collect()
    }

    #[test]
    fn users_add_stores_ha1_never_the_password() {
        let mut u = Users::new(vec![]).unwrap();
        let op = u.add("anna", "sip.example", "s3cret-pw").unwrap();
        let StoreOp::Put {
            table,
            key,
            owner,
            data,
            ..
        } = &op
        else {
            panic!("{op:?}")
        };
        assert_eq!(*table, StoreTable::Users);
        assert_eq!(key, "anna@sip.example");
        assert_eq!(owner, "users");
        assert!(!data.to_string().contains("s3cret-pw"), "{data}");
        assert_eq!(
            data["ha1_md5"],
            Algorithm::Md5.hash_hex("anna:sip.example:s3cret-pw")
        );
        assert_eq!(
            data["ha1_sha256"],
            Algorithm::Sha256.hash_hex("anna:sip.example:s3cret-pw")
        );
    }

    #[test]
    fn users_directory_finds_runtime_user_by_realm_case_insensitively() {
        let mut u = Users::new(vec![]).unwrap();
        u.add("anna", "SIP.example", "pw").unwrap();
        let s = u.secret("anna", "sip.EXAMPLE").unwrap();
        assert_eq!(
            s.ha1(Algorithm::Sha256, "anna", "sip.example"),
            Some(Algorithm::Sha256.hash_hex("anna:sip.example:pw"))
        );
        assert!(
            u.secret("Anna", "sip.example").is_none(),
            "usernames are exact"
        );
        assert!(u.secret("anna", "other.example").is_none());
    }

    #[test]
    fn users_remove_deletes_the_row_and_the_user() {
        let mut u = Users::new(vec![]).unwrap();
        u.add("anna", "sip.example", "pw").unwrap();
        assert_eq!(
            u.remove("anna", "sip.example"),
            Ok(StoreOp::Delete {
                table: StoreTable::Users,
                key: "anna@sip.example".into()
            })
        );
        assert!(u.secret("anna", "sip.example").is_none());
        assert_eq!(
            u.remove("anna", "sip.example"),
            Err(UserError::NotFound("anna@sip.example".into()))
        );
    }

    #[test]
    fn users_restore_brings_back_added_users() {
        let mut a = Users::new(vec![]).unwrap();
        let ops = vec![
            a.add("anna", "sip.example", "pw1").unwrap(),
            a.add("ben", "sip.example", "pw2").unwrap(),
        ];
        let mut b = Users::new(vec![]).unwrap();
        assert!(b.restore(&rows_of(&ops)).is_empty());
        assert_eq!(b.list(), a.list());
        assert_eq!(
            b.secret("ben", "sip.example"),
            a.secret("ben", "sip.example")
        );
    }

    #[test]
    fn users_restore_rejects_unreadable_rows_and_ignores_other_tables() {
        let mut u = Users::new(vec![]).unwrap();
        let rows = vec![
            StoredRow {
                table: StoreTable::Users,
                key: "x@y".into(),
                owner: "users".into(),
                data: serde_json::json!({"nope": 1}),
            },
            StoredRow {
                table: StoreTable::Users,
                key: "mallory@y".into(),
                owner: "users".into(),
                data: serde_json::json!({"username": "anna", "domain": "y", "ha1_md5": "a", "ha1_sha256": "b"}),
            },
            StoredRow {
                table: StoreTable::Bindings,
                key: "z@y".into(),
                owner: "registrar".into(),
                data: serde_json::json!({}),
            },
        ];
        let rejected = u.restore(&rows);
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(u.is_empty());
    }

    #[test]
    fn users_config_wins_over_a_stored_user_of_the_same_name() {
        let mut stored = Users::new(vec![]).unwrap();
        let ops = vec![stored.add("anna", "sip.example", "runtime-pw").unwrap()];
        let mut u = Users::new(vec![cfg_user("anna", "config-pw")]).unwrap();
        u.restore(&rows_of(&ops));
        assert_eq!(
            u.secret("anna", "sip.example"),
            Some(StoredSecret::Password("config-pw".into()))
        );
        let list = u.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].source, UserSource::Config);
        assert!(list[1].shadowed);
        assert_eq!(u.len(), 1);
    }

    #[test]
    fn users_add_and_remove_refuse_config_names() {
        let mut u = Users::new(vec![cfg_user("anna", "pw")]).unwrap();
        assert_eq!(
            u.add("anna", "sip.example", "x"),
            Err(UserError::ConfigOwned("anna@sip.example".into()))
        );
        assert_eq!(
            u.remove("anna", "SIP.EXAMPLE"),
            Err(UserError::ConfigOwned("anna@sip.example".into()))
        );
    }

    #[test]
    fn users_refuse_bad_names_empty_passwords_and_secretless_config() {
        let mut u = Users::new(vec![]).unwrap();
        for bad in ["", "a@b", "a:b", "a b", "a\u{1}"] {
            assert!(matches!(
                u.add(bad, "sip.example", "pw"),
                Err(UserError::BadUsername(_))
            ));
        }
        assert!(matches!(
            u.add("anna", "sip.example/x", "pw"),
            Err(UserError::BadDomain(_))
        ));
        assert_eq!(
            u.add("anna", "sip.example", ""),
            Err(UserError::EmptyPassword)
        );
        let none = ConfigUser {
            username: "anna".into(),
            domain: "d".into(),
            secret: StoredSecret::Ha1 {
                md5: None,
                sha256: None,
            },
        };
        assert!(matches!(
            Users::new(vec![none]),
            Err(UserError::NoSecret(_))
        ));
        assert!(matches!(
            Users::new(vec![cfg_user("a", "p"), cfg_user("a", "q")]),
            Err(UserError::Duplicate(_))
        ));
    }
}
