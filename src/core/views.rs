//! Read-only views of the PUA's records, as the management API lists them. Plain data:
//! the PUA builds them, the admin vocabulary carries them.

use serde::{Deserialize, Serialize};

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
