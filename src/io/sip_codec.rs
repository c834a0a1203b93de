//! SIP wire codec: bytes ⇄ the core's `SipMessage`, using rsipstack's parser (kept here,
//! behind `io`, per architecture.md) and a Content-Length framer for stream transports
//! (RFC 3261 §18.3).
//!
//! Owner: sip-stack. Signatures fixed here for the transport driver.

use crate::core::engine::Input;
use crate::core::sip::Peer;

/// Turns one datagram (or one framed stream message) into an engine input:
/// `Input::Sip` when it parses, `Input::SipMalformed` when it does not,
/// `Input::SipOversized` when it exceeds `max_size`. Keep-alive CRLFs give `None`.
pub fn decode_message(from: Peer, bytes: &[u8], max_size: usize) -> Option<Input> {
    let _ = (from, bytes, max_size);
    todo!("sip-stack")
}

/// Splits a TCP byte stream into messages by Content-Length.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

/// One item cut from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete message (head and body).
    Message(Vec<u8>),
    /// The head or announced body exceeds the limit; the connection should be closed
    /// after answering (the head is given for a 513 answer).
    Oversized(Vec<u8>),
    /// Framing is impossible (no or bad Content-Length on a stream): close the connection.
    Broken(String),
}

impl StreamFramer {
    pub fn new() -> Self {
        StreamFramer { buf: Vec::new() }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Cuts the next complete item, if any.
    pub fn next_item(&mut self, max_size: usize) -> Option<Framed> {
        let _ = max_size;
        todo!("sip-stack")
    }
}
