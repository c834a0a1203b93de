//! SIP transports: UDP and TCP sockets (RFC 3261 §18). Owner: io-daemon.
//!
//! The driver only moves bytes: datagrams and Content-Length framed stream messages become
//! engine inputs through [`sip_codec::decode_message`], stamped with the time of receipt;
//! the engine's `SendSip` outputs come back as bytes for a [`Peer`]. Transactions, Via
//! `received`/`rport` handling and 400/403/513 decisions are the core's.
//!
//! - UDP: one socket, one receive loop; `send_to` the peer address.
//! - TCP: one listener; connections are kept in a table keyed by the remote address, so a
//!   response to a peer leaves on the connection its request came in on (RFC 3261 §18.2.2),
//!   and a request to a peer with no connection opens one (§18.1.1).
//! - Every buffer is bounded: the engine input channel, each connection's write queue, the
//!   number of TCP connections, the framer (by `max_message_size`).
//! - A failure to send becomes `Input::SipTransportError { to }` (§17.1.4), once per message.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::SipDriverConfig;
use crate::core::engine::Input;
use crate::core::sip::{Peer, Transport};
use crate::daemon::{now, InputTx};
use crate::io::sip_codec::{decode_message, Framed, StreamFramer};

/// Most simultaneous TCP connections (inbound and outbound together).
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Messages queued per TCP connection before sends to it fail.
const CONNECTION_QUEUE: usize = 64;
/// Messages queued for the sender task before sends fail.
const SEND_QUEUE: usize = 1024;
/// Connecting to a peer that does not answer counts as a transport error after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound sockets, before the receive loops are started.
pub struct SipSockets {
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    max_message_size: usize,
}

impl SipSockets {
    /// Binds the configured UDP socket and TCP listener.
    pub async fn bind(cfg: &SipDriverConfig) -> io::Result<SipSockets> {
        let udp = match cfg.udp_listen {
            Some(a) => Some(
                UdpSocket::bind(a)
                    .await
                    .map_err(|e| with_addr(e, "udp", a))?,
            ),
            None => None,
        };
        let tcp = match cfg.tcp_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| with_addr(e, "tcp", a))?,
            ),
            None => None,
        };
        Ok(SipSockets {
            udp,
            tcp,
            max_message_size: cfg.max_message_size,
        })
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Starts the receive loops and the sender task. Received messages go to `inputs`;
    /// the sockets close when `cancel` fires (see [`SipTransport::close`]).
    pub fn start(self, inputs: InputTx, cancel: CancellationToken) -> SipTransport {
        let shared = Arc::new(Shared {
            inputs,
            cancel,
            conns: Mutex::new(HashMap::new()),
            next_conn_id: Mutex::new(0),
            conn_slots: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
            max_message_size: self.max_message_size,
        });
        let udp = self.udp.map(Arc::new);
        if let Some(sock) = udp.clone() {
            tokio::spawn(udp_recv_loop(sock, shared.clone()));
        }
        if let Some(listener) = self.tcp {
            tokio::spawn(tcp_accept_loop(listener, shared.clone()));
        }
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let send_task = tokio::spawn(send_loop(rx, udp, shared.clone()));
        SipTransport {
            sender: SipSender { tx, shared },
            send_task,
        }
    }
}

/// The running transport.
pub struct SipTransport {
    sender: SipSender,
    send_task: tokio::task::JoinHandle<()>,
}

impl SipTransport {
    /// A handle to queue outgoing messages.
    pub fn sender(&self) -> SipSender {
        self.sender.clone()
    }

    /// Sends what is queued, then closes the sockets and waits for every TCP connection to
    /// write its queue and close. Other `SipSender` clones must be dropped first.
    pub async fn close(self, cancel: CancellationToken) {
        let SipTransport { sender, send_task } = self;
        let shared = sender.shared.clone();
        drop(sender);
        let _ = send_task.await;
        cancel.cancel();
        // Every connection task holds a slot until it has flushed and closed.
        let _ = shared
            .conn_slots
            .acquire_many(MAX_TCP_CONNECTIONS as u32)
            .await;
    }
}

fn with_addr(e: io::Error, what: &str, a: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind sip {what} {a}: {e}"))
}

/// The engine side's handle: queue bytes for a peer without waiting on the network.
#[derive(Clone)]
pub struct SipSender {
    tx: mpsc::Sender<(Peer, Vec<u8>)>,
    shared: Arc<Shared>,
}

impl SipSender {
    /// Queues `bytes` for `to`. When the queue is full the message is not sent and the
    /// engine hears `SipTransportError` (a full queue is a transport that cannot keep up).
    pub fn send(&self, to: Peer, bytes: Vec<u8>) {
        if let Err(e) = self.tx.try_send((to, bytes)) {
            warn!(peer = %to, "sip send queue unavailable: {e}");
            self.shared.report_error(to);
        }
    }
}

/// A connection's id and its write queue.
type ConnEntry = (u64, mpsc::Sender<Vec<u8>>);

/// State shared by the transport's tasks.
struct Shared {
    inputs: InputTx,
    cancel: CancellationToken,
    /// Open (or opening) TCP connections by remote address, with the connection's id so a
    /// closing connection removes only its own entry.
    conns: Mutex<HashMap<SocketAddr, ConnEntry>>,
    next_conn_id: Mutex<u64>,
    conn_slots: Arc<Semaphore>,
    max_message_size: usize,
}

impl Shared {
    /// Hands an input to the engine, waiting for room (back-pressure on the sockets).
    async fn deliver(&self, input: Input) {
        if self.inputs.send((now(), input)).await.is_err() {
            debug!("engine gone; dropping sip input");
        }
    }

    /// Reports a failed send without blocking the caller.
    fn report_error(&self, to: Peer) {
        let inputs = self.inputs.clone();
        let input = Input::SipTransportError { to };
        if let Err(mpsc::error::TrySendError::Full((at, input))) = inputs.try_send((now(), input)) {
            // Must not be lost (a transaction waits for it): wait for room off this task.
            tokio::spawn(async move {
                let _ = inputs.send((at, input)).await;
            });
        }
    }

    fn new_conn_id(&self) -> u64 {
        let mut id = lock(&self.next_conn_id);
        *id += 1;
        *id
    }

    fn remove_conn(&self, addr: SocketAddr, id: u64) {
        let mut conns = lock(&self.conns);
        if conns.get(&addr).is_some_and(|(cid, _)| *cid == id) {
            conns.remove(&addr);
        }
    }

    /// Turns one framed message or datagram into an input. The codec must not panic, but
    /// if it does, one message is lost and the endpoint stays up.
    fn decode(&self, from: Peer, bytes: &[u8]) -> Option<Input> {
        let max = self.max_message_size;
        match std::panic::catch_unwind(AssertUnwindSafe(|| decode_message(from, bytes, max))) {
            Ok(input) => input,
            Err(_) => {
                error!(peer = %from, len = bytes.len(), "sip decoder panicked; message dropped");
                None
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of a plain map.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn udp_recv_loop(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    // One byte more than the largest UDP payload tells "too large" from "exactly max".
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, addr)) => {
                let from = Peer {
                    transport: Transport::Udp,
                    addr,
                };
                if let Some(input) = shared.decode(from, &buf[..n]) {
                    shared.deliver(input).await;
                }
            }
            // ICMP errors of earlier sends surface here on some systems; keep serving.
            Err(e) => debug!("sip udp receive error: {e}"),
        }
    }
}

async fn tcp_accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Ok(permit) = shared.conn_slots.clone().try_acquire_owned() else {
                    warn!(peer = %addr, "sip tcp connection refused: too many connections");
                    continue;
                };
                let id = shared.new_conn_id();
                let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
                // A newer connection from the same address replaces the older one for sends.
                lock(&shared.conns).insert(addr, (id, tx));
                debug!(peer = %addr, "sip tcp connection accepted");
                let shared = shared.clone();
                tokio::spawn(async move {
                    run_connection(stream, addr, id, rx, shared).await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn!("sip tcp accept failed: {e}");
                // Typically out of file descriptors: give the system a moment.
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn send_loop(
    mut rx: mpsc::Receiver<(Peer, Vec<u8>)>,
    udp: Option<Arc<UdpSocket>>,
    shared: Arc<Shared>,
) {
    while let Some((to, bytes)) = rx.recv().await {
        match to.transport {
            Transport::Udp => match &udp {
                Some(sock) => {
                    if let Err(e) = sock.send_to(&bytes, to.addr).await {
                        warn!(peer = %to, "sip udp send failed: {e}");
                        shared.report_error(to);
                    }
                }
                None => {
                    warn!(peer = %to, "sip udp send impossible: no udp_listen configured");
                    shared.report_error(to);
                }
            },
            Transport::Tcp => send_tcp(&shared, to, bytes),
        }
    }
}

/// Queues on the peer's connection, opening one when there is none.
fn send_tcp(shared: &Arc<Shared>, to: Peer, bytes: Vec<u8>) {
    let existing = lock(&shared.conns).get(&to.addr).map(|(_, tx)| tx.clone());
    let bytes = match existing {
        Some(tx) => match tx.try_send(bytes) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(peer = %to, "sip tcp connection queue full; message dropped");
                shared.report_error(to);
                return;
            }
            // The connection just closed: open a new one.
            Err(mpsc::error::TrySendError::Closed(b)) => b,
        },
        None => bytes,
    };
    let Ok(permit) = shared.conn_slots.clone().try_acquire_owned() else {
        warn!(peer = %to, "sip tcp connect refused: too many connections");
        shared.report_error(to);
        return;
    };
    let id = shared.new_conn_id();
    let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
    // Queued before the connect finishes, so later sends to this peer line up behind it.
    let _ = tx.try_send(bytes);
    lock(&shared.conns).insert(to.addr, (id, tx));
    let shared = shared.clone();
    tokio::spawn(async move {
        let connected = tokio::select! {
            _ = shared.cancel.cancelled() => None,
            r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to.addr)) => Some(r),
        };
        match connected {
            Some(Ok(Ok(stream))) => {
                debug!(peer = %to, "sip tcp connection opened");
                run_connection(stream, to.addr, id, rx, shared).await;
            }
            other => {
                if let Some(r) = other {
                    let why = match r {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    warn!(peer = %to, "sip tcp connect failed: {why}");
                }
                shared.remove_conn(to.addr, id);
                fail_queued(rx, to, &shared);
            }
        }
        drop(permit);
    });
}

/// Every message still queued for a connection that is gone is a transport error.
fn fail_queued(mut rx: mpsc::Receiver<Vec<u8>>, to: Peer, shared: &Shared) {
    rx.close();
    while rx.try_recv().is_ok() {
        shared.report_error(to);
    }
}

/// Reads framed messages and writes queued ones until either side fails, the framing
/// breaks, or shutdown.
async fn run_connection(
    stream: TcpStream,
    addr: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let peer = Peer {
        transport: Transport::Tcp,
        addr,
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let reason: String = 'conn: loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break 'conn "shutdown".into(),
            queued = rx.recv() => {
                let Some(bytes) = queued else { break 'conn "closed".into() };
                if let Err(e) = writer.write_all(&bytes).await {
                    shared.report_error(peer);
                    break 'conn format!("write failed: {e}");
                }
            }
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break 'conn "closed by peer".into(),
                    Ok(n) => n,
                    Err(e) => break 'conn format!("read failed: {e}"),
                };
                framer.push(&buf[..n]);
                loop {
                    let item = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        framer.next_item(shared.max_message_size)
                    })) {
                        Ok(item) => item,
                        Err(_) => break 'conn "framer panicked".into(),
                    };
                    match item {
                        None => break,
                        Some(Framed::Message(bytes)) => {
                            if let Some(input) = shared.decode(peer, &bytes) {
                                shared.deliver(input).await;
                            }
                        }
                        Some(Framed::Oversized(head)) => {
                            // Answered 513 by the engine when salvageable; the rest of the
                            // stream cannot be framed any more.
                            shared.deliver(Input::SipOversized { from: peer, head }).await;
                            break 'conn "oversized message".into();
                        }
                        Some(Framed::Broken(why)) => break 'conn format!("framing broken: {why}"),
                    }
                }
            }
        }
    };
    shared.remove_conn(addr, id);
    debug!(peer = %peer, reason = %reason, "sip tcp connection closed");
    // Give queued responses (e.g. the 513) a chance before closing our side.
    while let Ok(bytes) = rx.try_recv() {
        if writer.write_all(&bytes).await.is_err() {
            shared.report_error(peer);
            break;
        }
    }
    fail_queued(rx, peer, &shared);
    let _ = writer.shutdown().await;
}

/// Logs the bound addresses in a stable, machine-readable form (tests read the ports
/// from these lines).
pub fn log_bound(sockets: &SipSockets) {
    if let Some(a) = sockets.udp_addr() {
        info!(transport = %"udp", addr = %a, "sip listening");
    }
    if let Some(a) = sockets.tcp_addr() {
        info!(transport = %"tcp", addr = %a, "sip listening");
    }
}
