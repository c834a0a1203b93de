//! XMPP in the core: typed stanzas and address mapping (issue: presence bridge).

pub mod address;
pub mod disco;
pub mod stanza;
