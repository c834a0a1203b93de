//! watcherinfo (RFC 3858), owner: bodies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatcherInfo {}
