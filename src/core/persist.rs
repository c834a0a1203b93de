//! What the core asks to be made durable, and what it is handed back after a restart.
//!
//! The core describes writes as [`StoreOp`]s among its outputs; the SQLite driver
//! (`io::store`) performs them in order, before any later output is performed, so a state
//! is durable before the message that acknowledges it leaves (product.md, Persistence).
//! Rows carry a few key columns an operator can query with `sqlite3`, plus the full record
//! as JSON so the core's record types can evolve without schema migrations.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// The tables the core keeps. One row per key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StoreTable {
    /// PUBLISH client state: ETag, body, expiry (RFC 3903).
    Publications,
    /// SUBSCRIBE client dialogs: Call-ID, tags, CSeq, route set, expiry (RFC 6665).
    Subscriptions,
    /// Notifier-side dialogs (SIP watchers of XMPP users).
    NotifierDialogs,
    /// Presence authorizations of the bridge, both directions (issue: presence bridge).
    Authorizations,
    /// Cached presence per resource (written behind; re-probed after a restart).
    Presence,
    /// Publications received by the embedded presence agent (RFC 3903 ESC side): one row
    /// per entity-tag, with its body and expiry.
    PresentityPublications,
    /// Registrar bindings (RFC 3261 §10.3): one row per address-of-record.
    Bindings,
    /// Watcher authorization rules of the presence agent (allow / deny / pending).
    Rules,
    /// SIP users (digest credentials) managed with `ctl users`.
    Users,
    /// Records of the modules that follow registrations (usrloc publications, bla phones).
    ModuleState,
}

impl StoreTable {
    pub const ALL: [StoreTable; 10] = [
        StoreTable::Publications,
        StoreTable::Subscriptions,
        StoreTable::NotifierDialogs,
        StoreTable::Authorizations,
        StoreTable::Presence,
        StoreTable::PresentityPublications,
        StoreTable::Bindings,
        StoreTable::Rules,
        StoreTable::Users,
        StoreTable::ModuleState,
    ];

    /// The SQL table name.
    pub fn name(self) -> &'static str {
        match self {
            StoreTable::Publications => "publications",
            StoreTable::Subscriptions => "subscriptions",
            StoreTable::NotifierDialogs => "notifier_dialogs",
            StoreTable::Authorizations => "authorizations",
            StoreTable::Presence => "presence",
            StoreTable::PresentityPublications => "presentity_publications",
            StoreTable::Bindings => "bindings",
            StoreTable::Rules => "rules",
            StoreTable::Users => "users",
            StoreTable::ModuleState => "module_state",
        }
    }
}

/// One write. `Put` inserts or replaces the row with this key.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreOp {
    Put {
        table: StoreTable,
        key: String,
        /// Who owns the row (a module name), for operators and for routing on restore.
        owner: String,
        /// The resource the row is about (presentity or watcher URI), for operators.
        subject: String,
        /// When the row stops mattering, if ever; informational for operators.
        expires_at: Option<Timestamp>,
        /// The record, serialised by its owner.
        data: serde_json::Value,
    },
    Delete {
        table: StoreTable,
        key: String,
    },
}

/// A row handed back to the core at start (`engine::Input::Restore`).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    pub table: StoreTable,
    pub key: String,
    pub owner: String,
    pub data: serde_json::Value,
}
