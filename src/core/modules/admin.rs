//! The management module (OpenSIPS `pua_mi`'s job): publish any document and subscribe
//! any watcher on an operator's command. The HTTP driver (`io::admin_http`) turns JSON into
//! [`AdminCommand`]s and [`AdminReply`]s back into JSON; the command semantics live here.
//!
//! Owner of the types: the engine (fixed here so the HTTP driver and the module agree).

use serde::{Deserialize, Serialize};

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
pub struct PublicationView {
    pub id: String,
    pub presentity: String,
    pub event: String,
    pub etag: Option<String>,
    /// Seconds left of the granted interval, if one was granted.
    pub expires_in: Option<u64>,
    pub content_type: Option<String>,
    pub body: Option<String>,
    pub owner: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub id: String,
    pub presentity: String,
    pub watcher: String,
    pub event: String,
    /// `init`, `notify_wait`, `pending`, `active`, `terminated`.
    pub state: String,
    pub call_id: Option<String>,
    pub expires_in: Option<u64>,
    /// The last NOTIFY's Subscription-State and body.
    pub last_notify_state: Option<String>,
    pub last_content_type: Option<String>,
    pub last_body: Option<String>,
    pub owner: String,
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
}
