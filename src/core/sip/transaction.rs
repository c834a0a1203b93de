//! RFC 3261 §17 non-INVITE transactions, client and server, driven by a manual clock.
//!
//! Owner: sip-stack. This file fixes the API the engine codes against; the bodies are
//! filled in by the sip-stack work. Contract:
//! - `send_request` adds the top Via (sent-by from `TxConfig`, new branch, `rport`),
//!   queues the first transmission and arms Timer E (UDP) and Timer F.
//! - `on_response` returns the response to hand to the TU, or `None` when it is absorbed
//!   (a retransmission in Completed, Timer K; a response matching no transaction).
//!   A 1xx moves Trying → Proceeding, where E is fixed at T2 (§17.1.2.2).
//! - `on_request` tells a new request from a retransmission; a retransmission of a request
//!   whose final response was sent gets the same response again (Timer J, §17.2.2) and is
//!   not delivered twice.
//! - `respond` routes the response per §18.2.2 (Via `received`/`rport`) and arms Timer J.
//! - `handle_timeout` fires due timers; Timer F and transport errors surface as
//!   `TxEvent::Timeout`, which the TU treats as a 408.
//! - Everything to send is drained with `poll_transmit`.

use std::time::Duration;

use crate::core::ids::IdGenerator;
use crate::core::time::Timestamp;

use super::message::{Peer, Request, Response, SipMessage};

/// Timer base values (RFC 3261 Table 4). Timer N of RFC 6665 is 64·T1 as well.
#[derive(Clone, Debug)]
pub struct TxConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// The `sent-by` (host[:port]) to put in our Via for UDP and TCP.
    pub via_udp: String,
    pub via_tcp: String,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            via_udp: "127.0.0.1:5060".into(),
            via_tcp: "127.0.0.1:5060".into(),
        }
    }
}

/// A client transaction handle, unique for the life of the layer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(pub u64);

/// A server transaction handle, unique for the life of the layer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(pub u64);

/// What a client transaction reports to its transaction user.
#[derive(Clone, Debug, PartialEq)]
pub enum TxEvent {
    /// A response to pass up (provisional or final; each final one exactly once).
    Response { tx: ClientTxId, response: Response },
    /// Timer F fired or the transport failed: treat as 408 (RFC 3261 §8.1.3.1).
    Timeout { tx: ClientTxId },
}

/// What `on_request` decided about an incoming request.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestDisposition {
    /// A new request: the TU must answer it with `respond`.
    New(ServerTxId),
    /// A retransmission: already answered again (or still being worked on); do nothing.
    Retransmission,
}

#[derive(Debug)]
pub struct TransactionLayer {
    _config: TxConfig,
}

impl TransactionLayer {
    pub fn new(config: TxConfig) -> Self {
        TransactionLayer { _config: config }
    }

    /// Starts a client transaction for `request` towards `to`.
    pub fn send_request(
        &mut self,
        now: Timestamp,
        ids: &mut IdGenerator,
        to: Peer,
        request: Request,
    ) -> ClientTxId {
        let _ = (now, ids, to, request);
        todo!("sip-stack")
    }

    pub fn on_response(
        &mut self,
        now: Timestamp,
        from: Peer,
        response: Response,
    ) -> Option<TxEvent> {
        let _ = (now, from, response);
        todo!("sip-stack")
    }

    pub fn on_request(
        &mut self,
        now: Timestamp,
        from: Peer,
        request: &Request,
    ) -> RequestDisposition {
        let _ = (now, from, request);
        todo!("sip-stack")
    }

    /// Sends `response` on server transaction `tx`. Provisional responses may precede one final one.
    pub fn respond(&mut self, now: Timestamp, tx: ServerTxId, response: Response) {
        let _ = (now, tx, response);
        todo!("sip-stack")
    }

    /// Sends a response outside any transaction (to a request that could not get one,
    /// such as a malformed message answered 400), routed per §18.2.2.
    pub fn respond_stateless(&mut self, from: Peer, request_via: Option<&str>, response: Response) {
        let _ = (from, request_via, response);
        todo!("sip-stack")
    }

    /// The request a server transaction was created for (to build responses from it).
    pub fn server_request(&self, tx: ServerTxId) -> Option<&Request> {
        let _ = tx;
        todo!("sip-stack")
    }

    /// The peer a client transaction sends to.
    pub fn client_peer(&self, tx: ClientTxId) -> Option<Peer> {
        let _ = tx;
        todo!("sip-stack")
    }

    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<TxEvent> {
        let _ = now;
        todo!("sip-stack")
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        todo!("sip-stack")
    }

    pub fn poll_transmit(&mut self) -> Option<(Peer, SipMessage)> {
        todo!("sip-stack")
    }
}
