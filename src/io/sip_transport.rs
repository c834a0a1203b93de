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
/// Messages queued for the sender task (a fan-out of one PUBLISH to thousands of watchers
/// leaves in one engine turn). Bounded: 16 384 messages of at most `max_message_size`.
const SEND_QUEUE: usize = 16_384;
/// How long a connection whose input can no longer be framed stays open for the answer.
const LINGER: Duration = Duration::from_secs(2);
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
            Some(a) => Some(bind_udp(a).map_err(|e| with_addr(e, "udp", a))?),
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

    /// Sends what is queued, then closes the sockets (cancelling the token given to
    /// [`SipSockets::start`]) and waits for every TCP connection to write its queue and
    /// close. Other `SipSender` clones must be dropped first.
    pub async fn close(self) {
        let SipTransport { sender, send_task } = self;
        let shared = sender.shared.clone();
        drop(sender);
        let _ = send_task.await;
        shared.cancel.cancel();
        // Every connection task holds a slot until it has flushed and closed.
        let _ = shared
            .conn_slots
            .acquire_many(MAX_TCP_CONNECTIONS as u32)
            .await;
    }
}

/// Receive buffer asked for the UDP socket: the kernel default (~208 KiB) overflows when
/// a fan-out's thousand 200 OKs arrive in one burst, and each datagram lost there costs a
/// T1 retransmission (measured: a third of a fan-out's NOTIFYs were retransmissions).
/// The kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// A non-blocking UDP socket on `a` with a large receive buffer, for tokio.
fn bind_udp(a: SocketAddr) -> io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(a),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER) {
        warn!("sip udp receive buffer left at the kernel default: {e}");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&a.into())?;
    let got = sock.recv_buffer_size().unwrap_or(0);
    debug!(requested = UDP_RECV_BUFFER, got, "sip udp receive buffer");
    UdpSocket::from_std(sock.into())
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
    /// Queues `bytes` for `to`. When the queue is full the message is not sent. Over UDP
    /// that is a lost datagram, which the transaction layer recovers by retransmitting
    /// (RFC 3261 §17.1.2.2 Timer E; a peer retransmits its request for a lost response):
    /// reporting it as a transport error would fail every transaction towards that peer
    /// (§17.1.4), which for a proxy or a site behind one address is every watcher at once.
    /// Over TCP, where nothing retransmits, the engine hears `SipTransportError`.
    pub fn send(&self, to: Peer, bytes: Vec<u8>) {
        if let Err(e) = self.tx.try_send((to, bytes)) {
            match to.transport {
                Transport::Udp => {
                    warn!(peer = %to, "sip send queue full; datagram dropped, left to retransmission: {e}")
                }
                Transport::Tcp => {
                    warn!(peer = %to, "sip send queue unavailable: {e}");
                    self.shared.report_error(to);
                }
            }
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
        // Not cut short by shutdown: what was queued before it should still leave (the
        // daemon bounds the whole flush).
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to.addr)).await {
            Ok(Ok(stream)) => {
                debug!(peer = %to, "sip tcp connection opened");
                run_connection(stream, to.addr, id, rx, shared).await;
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                warn!(peer = %to, "sip tcp connect failed: {why}");
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
    // Whether to keep writing for a moment after reading stopped (see below).
    let mut linger = false;
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
                            linger = true;
                            break 'conn "oversized message".into();
                        }
                        Some(Framed::Broken(why)) => break 'conn format!("framing broken: {why}"),
                    }
                }
            }
        }
    };
    if linger {
        // Reading has stopped, but the engine's one answer to what was read (a 513) must
        // still leave on this connection: wait a little for it.
        let answer = tokio::select! {
            _ = tokio::time::sleep(LINGER) => None,
            _ = shared.cancel.cancelled() => None,
            queued = rx.recv() => queued,
        };
        if let Some(bytes) = answer {
            if writer.write_all(&bytes).await.is_err() {
                shared.report_error(peer);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    //! Sending paths only: receiving needs the codec and is covered by the loopback tests.
    use super::*;
    use crate::daemon::Stamped;

    const WAIT: Duration = Duration::from_secs(10);

    fn cfg(udp: bool, tcp: bool) -> SipDriverConfig {
        let any = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        SipDriverConfig {
            udp_listen: if udp { any } else { None },
            tcp_listen: if tcp { any } else { None },
            public_host: None,
            max_message_size: 65536,
        }
    }

    async fn start(udp: bool, tcp: bool) -> (SipTransport, mpsc::Receiver<Stamped>, SipSockets2) {
        let sockets = SipSockets::bind(&cfg(udp, tcp)).await.unwrap();
        let addrs = SipSockets2 {
            tcp: sockets.tcp_addr(),
        };
        let (tx, rx) = mpsc::channel(16);
        (sockets.start(tx, CancellationToken::new()), rx, addrs)
    }

    struct SipSockets2 {
        tcp: Option<SocketAddr>,
    }

    fn peer(transport: Transport, addr: SocketAddr) -> Peer {
        Peer { transport, addr }
    }

    async fn next_input(rx: &mut mpsc::Receiver<Stamped>) -> Input {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("an input within the wait")
            .expect("channel open")
            .1
    }

    #[tokio::test]
    async fn udp_send_reaches_the_peer() {
        let (t, _rx, _) = start(true, false).await;
        let peer_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer(Transport::Udp, peer_sock.local_addr().unwrap());
        t.sender().send(to, b"hello".to_vec());
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(WAIT, peer_sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"hello");
    }

    /// The SIP UDP socket gets the large receive buffer, as far as the kernel allows.
    #[tokio::test]
    async fn udp_socket_asks_for_a_large_receive_buffer() {
        let sock = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = socket2::SockRef::from(&sock).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(UDP_RECV_BUFFER);
        // Linux doubles the value it grants (socket(7)); at least the capped request.
        assert!(got >= UDP_RECV_BUFFER.min(cap), "got {got}, cap {cap}");
    }

    /// A full send queue loses a UDP datagram (left to Timer E) but fails a TCP message.
    #[tokio::test]
    async fn full_send_queue_drops_udp_datagrams_without_failing_transactions() {
        let (itx, mut irx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            inputs: itx,
            cancel: CancellationToken::new(),
            conns: Mutex::new(HashMap::new()),
            next_conn_id: Mutex::new(0),
            conn_slots: Arc::new(Semaphore::new(1)),
            max_message_size: 65536,
        });
        let (tx, _never_drained) = mpsc::channel(1);
        let sender = SipSender { tx, shared };
        let udp = peer(Transport::Udp, "127.0.0.1:9".parse().unwrap());
        sender.send(udp, b"fills the queue".to_vec());
        sender.send(udp, b"dropped".to_vec());
        assert!(
            irx.try_recv().is_err(),
            "a lost datagram is no transport error"
        );
        let tcp = peer(Transport::Tcp, "127.0.0.1:9".parse().unwrap());
        sender.send(tcp, b"cannot leave".to_vec());
        assert_eq!(
            next_input(&mut irx).await,
            Input::SipTransportError { to: tcp }
        );
    }

    #[tokio::test]
    async fn udp_send_without_udp_socket_is_a_transport_error() {
        let (t, mut rx, _) = start(false, true).await;
        let to = peer(Transport::Udp, "127.0.0.1:9".parse().unwrap());
        t.sender().send(to, b"x".to_vec());
        assert_eq!(next_input(&mut rx).await, Input::SipTransportError { to });
    }

    /// RFC 3261 §18.1.1: a request to a peer without a connection opens one.
    #[tokio::test]
    async fn tcp_send_without_connection_opens_one() {
        let (t, _rx, _) = start(false, true).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = peer(Transport::Tcp, listener.local_addr().unwrap());
        t.sender().send(to, b"first".to_vec());
        t.sender().send(to, b"second".to_vec());
        let (mut stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut got = vec![0u8; 11];
        tokio::time::timeout(WAIT, stream.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"firstsecond", "in order, on one connection");
    }

    /// RFC 3261 §17.1.4: a refused connection is reported to the transaction layer.
    #[tokio::test]
    async fn tcp_connect_refused_is_a_transport_error() {
        let (t, mut rx, _) = start(false, true).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let to = peer(Transport::Tcp, closed);
        t.sender().send(to, b"x".to_vec());
        assert_eq!(next_input(&mut rx).await, Input::SipTransportError { to });
    }

    /// RFC 3261 §18.2.2: a response to a TCP peer goes on the connection it opened.
    #[tokio::test]
    async fn tcp_send_to_connected_peer_reuses_its_connection() {
        let (t, _rx, addrs) = start(false, true).await;
        let mut client = TcpStream::connect(addrs.tcp.unwrap()).await.unwrap();
        let to = peer(Transport::Tcp, client.local_addr().unwrap());
        // The accept loop registers the connection asynchronously: retry until it is
        // known, bounded. Until then the send would open a new connection to the client's
        // port, which fails, so only the reuse path can deliver.
        let mut got = [0u8; 5];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let known = lock(&t.sender.shared.conns).contains_key(&to.addr);
            if known {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "connection never registered"
            );
            tokio::task::yield_now().await;
        }
        t.sender().send(to, b"reply".to_vec());
        tokio::time::timeout(WAIT, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"reply");
    }

    #[tokio::test]
    async fn close_flushes_queued_messages() {
        let (t, _rx, _) = start(false, true).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = peer(Transport::Tcp, listener.local_addr().unwrap());
        t.sender().send(to, b"bye".to_vec());
        let accept = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            all
        });
        tokio::time::timeout(WAIT, t.close())
            .await
            .expect("close finishes");
        let all = tokio::time::timeout(WAIT, accept).await.unwrap().unwrap();
        assert_eq!(all, b"bye");
    }
}
