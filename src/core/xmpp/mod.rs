//! XMPP in the core: typed stanzas, component duties, address, presence and error mapping.

pub mod address;
pub mod disco;
pub mod error_map;
pub mod presence_map;
pub mod stanza;
