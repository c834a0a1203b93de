//! The management vocabulary: [`AdminCommand`]s the HTTP driver (`io::admin_http`) builds
//! from JSON and [`AdminReply`]s it turns back into JSON. Plain data, below the services
//! and the modules, so the engine's outputs can carry replies without knowing a module.

use serde::{Deserialize, Serialize};

pub use super::views::{PublicationView, SubscriptionView};

/// `POST /publish` (anchors.md §1.4, `pua_mi:publish`). `expires` -1 means "no time
/// limit" (refreshed until removed), 0 removes the publication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishCommand {
    pub presentity: String,
    pub expires: i64,
    pub event: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub extra_headers: Option<String>,
}

/// `POST /subscribe` (`pua_mi:subscribe`): a SUBSCRIBE with Contact = watcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeCommand {
    pub presentity: String,
    pub watcher: String,
    pub event: String,
    pub expires: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    Publish(PublishCommand),
    Subscribe(SubscribeCommand),
    ListPublications,
    ListSubscriptions,
    Health,
    /// Presence agent: set (`Some`) or remove (`None`) the rule of a watcher of a local
    /// presentity; pending subscriptions of the pair follow at once.
    SetRule {
        presentity: String,
        watcher: String,
        action: Option<crate::core::watcher_rules::RuleAction>,
    },
    ListRules,
    /// Presence agent: watchers of local presentities (one presentity, or all).
    ListWatchers {
        presentity: Option<String>,
    },
    /// Presence agent: publications received from phones and modules.
    ListPresentityPublications,
    /// Users directory (`ctl users`): add or change a run-time user.
    AddUser {
        username: String,
        domain: String,
        password: String,
    },
    RemoveUser {
        username: String,
        domain: String,
    },
    ListUsers,
    /// Registrar: the bindings of one AOR, or of all, of every source.
    ListBindings {
        aor: Option<String>,
    },
    /// usrloc: the AORs it publishes and their state.
    ListUsrloc,
    /// bla: the shared lines, their phones and the line state.
    ListBla,
}

/// One explicit watcher rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    pub presentity: String,
    pub watcher: String,
    pub action: String,
}

/// One watcher of a local presentity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherView {
    pub id: String,
    pub presentity: String,
    pub watcher: String,
    pub event: String,
    /// `pending`, `active`, `terminated`.
    pub status: String,
    /// `sip` (a SIP dialog) or `xmpp` (an XMPP user through the bridge).
    pub via: String,
}

/// One registrar binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    pub aor: String,
    pub contact: String,
    pub q: Option<String>,
    pub expires_in: u64,
    pub user_agent: Option<String>,
    /// `registrar` (the embedded one), `copy` (REGISTER copies) or `reg_event` (RFC 3680).
    pub source: String,
}

/// One AOR usrloc publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrlocView {
    pub aor: String,
    /// `open` (registered) or `closed` (lingering before removal).
    pub state: String,
    /// The contacts of the published tuples.
    pub contacts: Vec<String>,
    /// Selected by the publish mark of a REGISTER copy.
    pub marked: bool,
    /// Seconds until a `closed` publication is removed.
    pub removed_in: Option<u64>,
}

/// One phone of a shared line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlaPhoneView {
    pub contact: String,
    /// `dialog;sla` subscription state (`init`, `notify_wait`, `active`, ...), if any.
    pub subscription: Option<String>,
    /// Live dialogs the phone reported: (id, state).
    pub dialogs: Vec<(String, String)>,
    /// The last dialog-info version applied.
    pub version: Option<u32>,
}

/// One shared line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlaLineView {
    pub line: String,
    pub phones: Vec<BlaPhoneView>,
}

/// The outcome of a publish: the final SIP response (or a local refusal with a SIP-style
/// code, as pua_mi does: 400 bad event, 404 bad URI, 418 unknown ETag, 500 send failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcome {
    pub code: u16,
    pub reason: String,
    pub etag: Option<String>,
    pub expires: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOutcome {
    pub code: u16,
    pub reason: String,
    /// The subscription's key in `GET /subscriptions`.
    pub id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub status: String,
    pub publications: usize,
    pub subscriptions: usize,
    pub notifier_dialogs: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminReply {
    Published(PublishOutcome),
    Subscribed(SubscribeOutcome),
    Publications(Vec<PublicationView>),
    Subscriptions(Vec<SubscriptionView>),
    Health(HealthView),
    Rules(Vec<RuleView>),
    Watchers(Vec<WatcherView>),
    AgentPublications(Vec<crate::core::presence_state::PublicationView>),
    Users(Vec<crate::core::users::UserEntry>),
    Bindings(Vec<BindingView>),
    Usrloc(Vec<UsrlocView>),
    Bla(Vec<BlaLineView>),
    /// A refused command: an HTTP-style code and why.
    Error {
        code: u16,
        reason: String,
    },
}
