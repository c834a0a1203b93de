//! xmpp-sip-gateway: a presence gateway between XMPP (as an XEP-0114 component) and SIP.
//!
//! `core` is pure protocol logic driven by inputs and producing outputs; `io` holds the
//! drivers; `daemon` wires them; `config` parses and validates `gateway.toml`; `ctl` is the
//! command-line client of the management API.

pub mod config;
pub mod core;
pub mod ctl;
pub mod daemon;
pub mod io;
