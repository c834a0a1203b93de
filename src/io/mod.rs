//! Drivers: sockets, framing, persistence and HTTP. They stamp inputs with the time of
//! receipt, hand them to the engine, and perform the engine's outputs.

pub mod admin_http;
pub mod sip_codec;
pub mod sip_transport;
pub mod store;
pub mod xmpp_link;
