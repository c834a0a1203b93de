//! dialog-info (RFC 4235), owner: bodies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DialogInfo {}
