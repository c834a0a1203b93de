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
//!
//! Scope notes:
//! - Only non-INVITE machines are implemented. An INVITE (which this gateway only ever
//!   rejects) gets a server transaction of the same non-INVITE shape: its final response
//!   is re-sent on request retransmissions and an ACK with the same branch is absorbed,
//!   but there is no Timer G/H (RFC 3261 §17.2.1).
//! - A CANCEL is its own server transaction keyed by branch, sent-by and method CANCEL
//!   (RFC 3261 §9.2); [`TransactionLayer::cancel_target`] finds the transaction it names.
//! - An ACK never gets an answer. One that matches an INVITE server transaction is
//!   absorbed (`Retransmission`); any other is reported `New` so the TU sees it, and the
//!   TU must not respond (the record is dropped after 64·T1).
//! - Requests whose top Via branch lacks the `z9hG4bK` cookie are matched RFC 2543 style
//!   (Request-URI, From tag, Call-ID, CSeq, top Via; RFC 3261 §17.2.3).
//! - A server transaction the TU never answers is dropped after 64·T1 (the client's
//!   Timer F has fired by then).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::core::ids::IdGenerator;
use crate::core::time::Timestamp;
use crate::core::timers::TimerTable;

use super::headers::{top_via, CSeq, Via};
use super::message::{Method, Peer, Request, Response, SipMessage, Transport};

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

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ClientState {
    Trying,
    Proceeding,
    Completed,
}

#[derive(Debug)]
struct ClientTx {
    peer: Peer,
    /// The request as sent, with our Via on top (retransmitted verbatim); dropped once a
    /// final response arrives, since Completed only absorbs retransmitted responses.
    request: Option<Request>,
    branch: String,
    method: Method,
    state: ClientState,
    /// The interval Timer E was last armed with (RFC 3261 §17.1.2.2).
    interval: Duration,
    /// When Timer E is due.
    e_due: Timestamp,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    Completed,
}

/// How a server transaction is found again (RFC 3261 §17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ServerKey {
    /// RFC 3261: top Via branch, sent-by and method (ACK files under INVITE).
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// RFC 2543 peers without the magic cookie.
    Legacy(String),
}

#[derive(Debug)]
struct ServerTx {
    peer: Peer,
    /// Where responses go (§18.2.2), fixed by the request.
    dest: Peer,
    method: Method,
    /// The request, until the final response: Completed (Timer J, 64·T1 on UDP) only
    /// re-sends `last_final`, so the parsed request is not held that long.
    request: Option<Request>,
    key: ServerKey,
    state: ServerState,
    last_provisional: Option<Response>,
    last_final: Option<Response>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    /// Timer E: retransmit a non-INVITE request (UDP only).
    E(ClientTxId),
    /// Timer F: give up on a non-INVITE request.
    F(ClientTxId),
    /// Timer K: stop absorbing response retransmissions.
    K(ClientTxId),
    /// Timer J: stop absorbing request retransmissions.
    J(ServerTxId),
    /// Drop a server transaction the TU never answered (or an ACK record).
    Idle(ServerTxId),
}

/// The RFC 3261 §17 transaction layer for this gateway's non-INVITE traffic.
#[derive(Debug)]
pub struct TransactionLayer {
    config: TxConfig,
    next_id: u64,
    clients: BTreeMap<ClientTxId, ClientTx>,
    /// (top Via branch, CSeq method) → client transaction (RFC 3261 §17.1.3).
    client_index: HashMap<(String, Method), ClientTxId>,
    servers: BTreeMap<ServerTxId, ServerTx>,
    server_index: HashMap<ServerKey, ServerTxId>,
    timers: TimerTable<TimerKey>,
    outbox: VecDeque<(Peer, SipMessage)>,
}

impl TransactionLayer {
    pub fn new(config: TxConfig) -> Self {
        TransactionLayer {
            config,
            next_id: 0,
            clients: BTreeMap::new(),
            client_index: HashMap::new(),
            servers: BTreeMap::new(),
            server_index: HashMap::new(),
            timers: TimerTable::new(),
            outbox: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &TxConfig {
        &self.config
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// 64·T1: Timers F and J (and RFC 6665 Timer N).
    fn t64(&self) -> Duration {
        self.config.t1 * 64
    }

    /// Starts a client transaction for `request` towards `to`.
    ///
    /// Adds the top Via `SIP/2.0/<transport> <via_udp|via_tcp>;branch=z9hG4bK…;rport`
    /// (RFC 3261 §8.1.1.7, RFC 3581), queues the first transmission, and arms Timer F
    /// (64·T1) and, on UDP, Timer E (T1) (§17.1.2.2). The gateway is a UA, never a proxy,
    /// so any Via already in `request` (say, one copied from an earlier attempt) is
    /// removed first: a new transaction always has exactly one Via with a new branch.
    pub fn send_request(
        &mut self,
        now: Timestamp,
        ids: &mut IdGenerator,
        to: Peer,
        mut request: Request,
    ) -> ClientTxId {
        let id = ClientTxId(self.fresh_id());
        let branch = ids.branch();
        request.headers.remove("Via");
        let sent_by = match to.transport {
            Transport::Udp => &self.config.via_udp,
            Transport::Tcp => &self.config.via_tcp,
        };
        request.headers.prepend(
            "Via",
            format!(
                "SIP/2.0/{} {};branch={};rport",
                to.transport.as_str(),
                sent_by,
                branch
            ),
        );
        // The CSeq method normally equals the request method; match on the CSeq one
        // since that is what the response echoes (§17.1.3).
        let method = request
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .map(|c| c.method)
            .unwrap_or_else(|| request.method.clone());
        tracing::debug!(tx = id.0, %branch, method = %request.method, peer = %to, "client transaction started");
        self.outbox
            .push_back((to, SipMessage::Request(request.clone())));
        self.timers.set(TimerKey::F(id), now + self.t64());
        if !to.transport.is_reliable() {
            self.timers.set(TimerKey::E(id), now + self.config.t1);
        }
        self.client_index
            .insert((branch.clone(), method.clone()), id);
        self.clients.insert(
            id,
            ClientTx {
                peer: to,
                request: Some(request),
                branch,
                method,
                state: ClientState::Trying,
                interval: self.config.t1,
                e_due: now + self.config.t1,
            },
        );
        id
    }

    /// Matches a response to its client transaction by top Via branch and CSeq method
    /// (RFC 3261 §17.1.3) and runs §17.1.2.2: a 1xx moves Trying → Proceeding and is
    /// passed up; the first final response is passed up and moves to Completed (Timer K:
    /// T4 on UDP, 0 on TCP); anything in Completed, or matching nothing, is absorbed.
    pub fn on_response(
        &mut self,
        now: Timestamp,
        from: Peer,
        response: Response,
    ) -> Option<TxEvent> {
        let branch = match top_via(&response.headers) {
            Ok(v) => v.branch().map(str::to_string),
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "response without a usable Via dropped");
                return None;
            }
        }?;
        let method = match response.headers.get("CSeq").map(CSeq::parse) {
            Some(Ok(c)) => c.method,
            _ => {
                tracing::debug!(peer = %from, "response without a usable CSeq dropped");
                return None;
            }
        };
        let Some(&id) = self.client_index.get(&(branch.clone(), method)) else {
            tracing::debug!(peer = %from, %branch, status = response.status, "response matches no transaction");
            return None;
        };
        let tx = self.clients.get_mut(&id)?;
        match tx.state {
            ClientState::Completed => {
                tracing::trace!(
                    tx = id.0,
                    status = response.status,
                    "response retransmission absorbed"
                );
                None
            }
            ClientState::Trying | ClientState::Proceeding => {
                if response.status < 200 {
                    // In Proceeding, Timer E is reset to T2 from its next firing.
                    tx.state = ClientState::Proceeding;
                } else {
                    tx.state = ClientState::Completed;
                    tx.request = None;
                    let reliable = tx.peer.transport.is_reliable();
                    self.timers.cancel(&TimerKey::E(id));
                    self.timers.cancel(&TimerKey::F(id));
                    if reliable {
                        self.remove_client(id);
                    } else {
                        self.timers.set(TimerKey::K(id), now + self.config.t4);
                    }
                }
                Some(TxEvent::Response { tx: id, response })
            }
        }
    }

    /// Reports every live client transaction towards `to` as timed out after a transport
    /// failure (RFC 3261 §17.1.4 treats it like Timer F), and ends them.
    pub fn on_transport_error(&mut self, to: Peer) -> Vec<TxEvent> {
        let failed: Vec<ClientTxId> = self
            .clients
            .iter()
            .filter(|(_, t)| t.peer == to && t.state != ClientState::Completed)
            .map(|(id, _)| *id)
            .collect();
        failed
            .into_iter()
            .map(|id| {
                self.remove_client(id);
                TxEvent::Timeout { tx: id }
            })
            .collect()
    }

    fn remove_client(&mut self, id: ClientTxId) {
        if let Some(tx) = self.clients.remove(&id) {
            self.client_index.remove(&(tx.branch, tx.method));
        }
        self.timers.cancel(&TimerKey::E(id));
        self.timers.cancel(&TimerKey::F(id));
        self.timers.cancel(&TimerKey::K(id));
    }

    fn server_key(request: &Request, method: &Method) -> ServerKey {
        let via = top_via(&request.headers).ok();
        if let Some(via) = &via {
            if let Some(branch) = via.branch().filter(|b| b.starts_with("z9hG4bK")) {
                return ServerKey::Rfc3261 {
                    branch: branch.to_string(),
                    sent_by: via.sent_by().to_ascii_lowercase(),
                    method: method.as_str().to_string(),
                };
            }
        }
        // RFC 2543 matching (§17.2.3): Request-URI, To tag, From tag, Call-ID, CSeq, top Via.
        let h = &request.headers;
        let from_tag = h
            .get("From")
            .and_then(|f| super::headers::NameAddr::parse("From", f).ok());
        let cseq_num = h
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .map(|c| c.seq);
        ServerKey::Legacy(format!(
            "{}|{}|{}|{:?}|{}|{}",
            request.uri,
            from_tag.as_ref().and_then(|f| f.tag()).unwrap_or(""),
            h.get("Call-ID").unwrap_or(""),
            cseq_num,
            method,
            via.map(|v| v.to_string()).unwrap_or_default(),
        ))
    }

    /// Tells a new request from a retransmission (RFC 3261 §17.2.3 matching, §17.2.2
    /// behaviour). A retransmission in Completed gets the last final response again;
    /// in Proceeding the last provisional; in Trying nothing. It is never delivered twice.
    pub fn on_request(
        &mut self,
        now: Timestamp,
        from: Peer,
        request: &Request,
    ) -> RequestDisposition {
        let key = if request.method == Method::Ack {
            // An ACK belongs to the INVITE transaction it acknowledges.
            let key = Self::server_key(request, &Method::Invite);
            if self.server_index.contains_key(&key) {
                tracing::trace!(peer = %from, "ACK absorbed by its INVITE transaction");
                return RequestDisposition::Retransmission;
            }
            Self::server_key(request, &Method::Ack)
        } else {
            Self::server_key(request, &request.method)
        };
        if let Some(&id) = self.server_index.get(&key) {
            if let Some(tx) = self.servers.get(&id) {
                let resend = match tx.state {
                    ServerState::Trying => None,
                    ServerState::Proceeding => tx.last_provisional.clone(),
                    ServerState::Completed => tx.last_final.clone(),
                };
                tracing::debug!(tx = id.0, peer = %from, method = %request.method, resent = resend.is_some(), "request retransmission");
                if let Some(r) = resend {
                    self.outbox.push_back((tx.dest, SipMessage::Response(r)));
                }
                return RequestDisposition::Retransmission;
            }
        }
        let id = ServerTxId(self.fresh_id());
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerTx {
                peer: from,
                dest: response_destination(from, request),
                method: request.method.clone(),
                request: Some(request.clone()),
                key,
                state: ServerState::Trying,
                last_provisional: None,
                last_final: None,
            },
        );
        self.timers.set(TimerKey::Idle(id), now + self.t64());
        RequestDisposition::New(id)
    }

    /// The server transaction a CANCEL names: same branch and sent-by, other method
    /// (RFC 3261 §9.2). `None` means the TU answers the CANCEL 481.
    pub fn cancel_target(&self, cancel: &Request) -> Option<ServerTxId> {
        let ServerKey::Rfc3261 {
            branch, sent_by, ..
        } = Self::server_key(cancel, &Method::Cancel)
        else {
            return None;
        };
        self.servers.iter().find_map(|(id, tx)| match &tx.key {
            ServerKey::Rfc3261 {
                branch: b,
                sent_by: s,
                method,
            } if *b == branch && *s == sent_by && method != "CANCEL" => Some(*id),
            _ => None,
        })
    }

    /// Sends `response` on server transaction `tx`. Provisional responses may precede one final one.
    ///
    /// The response goes where §18.2.2 says (see [`response_destination`]). `respond` copies
    /// nothing into the response: the TU builds it with `message::response_to`. A final
    /// response moves the transaction to Completed and arms Timer J (64·T1 UDP, 0 TCP).
    /// Responses to an ACK, after a final response, or on an unknown transaction are
    /// dropped with a warning.
    pub fn respond(&mut self, now: Timestamp, tx: ServerTxId, response: Response) {
        let t64 = self.t64();
        let Some(st) = self.servers.get_mut(&tx) else {
            tracing::warn!(
                tx = tx.0,
                status = response.status,
                "respond on an unknown server transaction"
            );
            return;
        };
        if st.method == Method::Ack {
            tracing::warn!(tx = tx.0, "an ACK is never answered");
            return;
        }
        if st.state == ServerState::Completed {
            tracing::warn!(
                tx = tx.0,
                status = response.status,
                "second final response dropped"
            );
            return;
        }
        let dest = st.dest;
        if response.status < 200 {
            st.state = ServerState::Proceeding;
            st.last_provisional = Some(response.clone());
        } else {
            st.state = ServerState::Completed;
            st.request = None;
            st.last_final = Some(response.clone());
            let j = if st.peer.transport.is_reliable() {
                Duration::ZERO
            } else {
                t64
            };
            self.timers.cancel(&TimerKey::Idle(tx));
            self.timers.set(TimerKey::J(tx), now + j);
        }
        self.outbox
            .push_back((dest, SipMessage::Response(response)));
    }

    /// Sends a response outside any transaction (to a request that could not get one,
    /// such as a malformed message answered 400), routed per §18.2.2.
    /// `request_via` is the request's top Via value, if one could be read.
    pub fn respond_stateless(&mut self, from: Peer, request_via: Option<&str>, response: Response) {
        let via = request_via.and_then(|v| {
            super::headers::split_unquoted(v, ',')
                .first()
                .and_then(|f| Via::parse(f).ok())
        });
        let dest = route_by_via(from, via.as_ref());
        self.outbox
            .push_back((dest, SipMessage::Response(response)));
    }

    /// The request a server transaction was created for (to build responses from it),
    /// until its final response.
    pub fn server_request(&self, tx: ServerTxId) -> Option<&Request> {
        self.servers.get(&tx).and_then(|t| t.request.as_ref())
    }

    /// The peer a server transaction's request came from.
    pub fn server_peer(&self, tx: ServerTxId) -> Option<Peer> {
        self.servers.get(&tx).map(|t| t.peer)
    }

    /// The peer a client transaction sends to; `None` once the transaction has ended
    /// (after Timer K, at once for a final response on TCP, or after a timeout).
    pub fn client_peer(&self, tx: ClientTxId) -> Option<Peer> {
        self.clients.get(&tx).map(|t| t.peer)
    }

    /// The request as sent (with our Via) by a client transaction still waiting for its
    /// final response.
    pub fn client_request(&self, tx: ClientTxId) -> Option<&Request> {
        self.clients.get(&tx).and_then(|t| t.request.as_ref())
    }

    /// Fires every timer due at `now`: E retransmits (doubling from T1 up to T2 in
    /// Trying, T2 in Proceeding), F reports `Timeout`, K and J end their transactions.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Vec<TxEvent> {
        let mut events = Vec::new();
        while let Some(key) = self.timers.pop_expired(now) {
            match key {
                TimerKey::E(id) => {
                    let t2 = self.config.t2;
                    let Some(tx) = self.clients.get_mut(&id) else {
                        continue;
                    };
                    let Some(request) = tx
                        .request
                        .as_ref()
                        .filter(|_| tx.state != ClientState::Completed)
                    else {
                        continue;
                    };
                    self.outbox
                        .push_back((tx.peer, SipMessage::Request(request.clone())));
                    tx.interval = match tx.state {
                        ClientState::Proceeding => t2,
                        _ => (tx.interval * 2).min(t2),
                    };
                    // Re-arm from the due time, not `now`, so a late tick does not drift
                    // (but never in the past, which would fire a burst).
                    tx.e_due = (tx.e_due + tx.interval).max(now);
                    tracing::debug!(tx = id.0, next = %tx.e_due, "Timer E: request retransmitted");
                    self.timers.set(TimerKey::E(id), tx.e_due);
                }
                TimerKey::F(id) => {
                    if self
                        .clients
                        .get(&id)
                        .is_some_and(|t| t.state != ClientState::Completed)
                    {
                        tracing::info!(tx = id.0, "Timer F: transaction timed out");
                        self.remove_client(id);
                        events.push(TxEvent::Timeout { tx: id });
                    }
                }
                TimerKey::K(id) => self.remove_client(id),
                TimerKey::J(id) | TimerKey::Idle(id) => {
                    if let Some(tx) = self.servers.remove(&id) {
                        self.server_index.remove(&tx.key);
                    }
                    self.timers.cancel(&TimerKey::J(id));
                    self.timers.cancel(&TimerKey::Idle(id));
                }
            }
        }
        events
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    pub fn poll_transmit(&mut self) -> Option<(Peer, SipMessage)> {
        self.outbox.pop_front()
    }

    /// Live client and server transactions (for metrics and tests).
    pub fn counts(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }
}

/// Where a response to `request` (received from `from`) goes, RFC 3261 §18.2.2 with
/// RFC 3581: on TCP back over the connection the request came on (the driver reopens
/// one to the same address if it closed); on UDP to the source IP (`received`) and, when
/// the top Via asked for `rport`, the source port, else the Via sent-by port (default
/// 5060). `maddr` (multicast) is not supported and ignored.
pub fn response_destination(from: Peer, request: &Request) -> Peer {
    route_by_via(from, top_via(&request.headers).ok().as_ref())
}

fn route_by_via(from: Peer, via: Option<&Via>) -> Peer {
    if from.transport.is_reliable() {
        return from;
    }
    let Some(via) = via else { return from };
    let port = if via.rport().is_some() {
        from.addr.port()
    } else {
        via.port.unwrap_or(5060)
    };
    Peer {
        transport: from.transport,
        addr: SocketAddr::new(from.addr.ip(), port),
    }
}
