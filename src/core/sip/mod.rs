//! SIP in the core: message vocabulary, typed header values, transactions, and the
//! RFC 6665 / RFC 3903 state machines the PUA service is built from.

pub mod digest;
pub mod digest_server;
pub mod headers;
pub mod message;
pub mod notifier;
pub mod publisher;
pub mod subscriber;
pub mod transaction;
pub mod uri;

pub use message::{Headers, Method, Peer, Request, Response, SipMessage, Transport};
