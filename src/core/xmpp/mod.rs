//! XMPP in the core: typed stanzas and address mapping (issue: presence bridge).

pub mod address;
pub mod error_map;
pub mod presence_map;
