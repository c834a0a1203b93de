//! Handles of records the shared services keep (stable across restarts where stored):
//! leaf types every layer may name without depending on the service that owns them.

/// A publication's handle, stable across restarts (it is the store key).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicationId(pub u64);

/// A client subscription's handle, stable across restarts (it is the store key).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

impl std::fmt::Display for PublicationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pub-{}", self.0)
    }
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

/// Timer owners inside the PUA, keyed in the engine's timer table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PuaTimer {
    /// The publication's next action (refresh, retry, local expiry).
    Publication(PublicationId),
    /// The subscription's next action (refresh, retry, re-subscribe, linger end).
    Subscription(SubscriptionId),
    /// RFC 6665 Timer N of the subscription's outstanding SUBSCRIBE.
    TimerN(SubscriptionId),
}

/// Correlates an admin command with its reply.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdminRequestId(pub u64);
