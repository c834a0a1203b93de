//! xmpp-sip-gateway: a presence gateway between XMPP (as an XEP-0114 component) and SIP.
//!
//! `core` is pure protocol logic driven by inputs and producing outputs; `io` holds the
//! drivers; `daemon` wires them; `config` parses and validates `gateway.toml`.

pub mod core;
pub mod io;
