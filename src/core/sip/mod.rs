//! SIP in the core: message vocabulary, typed header values, URIs, transactions, digest,
//! and the notifier (RFC 6665 §4.2). Depends on nothing above it; the PUA's subscriber and
//! publication machines live with the PUA (`core::pua`).

pub mod digest;
pub mod digest_server;
pub mod headers;
pub mod message;
pub mod notifier;
pub mod transaction;
pub mod uri;

pub use message::{Headers, Method, Peer, Request, Response, SipMessage, Transport};
