//! Wires the drivers to the engine; graceful shutdown. Owner: io-daemon.
//!
//! One task owns the engine (architecture.md, Core and drivers). Drivers hand it inputs
//! through bounded channels, each stamped with the wall-clock time of receipt. After every
//! input the task drains `poll_output` and performs each output in order:
//! - `Store` is applied synchronously before anything after it is performed, so a state is
//!   durable before the message that acknowledges it leaves (product.md, Persistence);
//! - `SendSip` is serialised and queued on the SIP transport;
//! - `AdminReply` answers the HTTP request waiting for it.
//!
//! Then it sleeps until the next input or `poll_timeout`, when it feeds `Input::Tick`.
//!
//! Start: open the store, bind the sockets (logging each bound address), then
//! `Input::Restore` before any other input. Stop (SIGTERM/SIGINT cancel the token):
//! `Input::Shutdown`, drain and perform the outputs, flush the transports, close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::core::engine::{AdminRequestId, EngineConfig, Input, Output};
use crate::core::modules::admin::AdminReply;
use crate::core::persist::{StoreOp, StoredRow};
use crate::core::time::Timestamp;
use crate::io::sip_transport::{self, SipSender, SipSockets};
use crate::io::store::Store;

/// Inputs queued for the engine before drivers wait (back-pressure on the sockets).
const INPUT_QUEUE: usize = 1024;
/// Admin commands queued before the HTTP handlers wait.
const ADMIN_QUEUE: usize = 64;
/// How long shutdown waits for queued messages to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A stamped engine input, as drivers send it.
pub type Stamped = (Timestamp, Input);
/// Where drivers send their inputs.
pub type InputTx = mpsc::Sender<Stamped>;

/// The wall-clock time as the core counts it (core::time: milliseconds since the epoch).
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// Why the daemon stopped other than by a signal (exit code 1 in `main`).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("store: {0}")]
    Store(String),
    #[error("{0}")]
    Bind(std::io::Error),
}

/// The engine as the daemon drives it: `core::engine::Engine` in production, a scripted
/// fake in the daemon's own tests.
pub trait EngineDriver: Send + 'static {
    fn handle_input(&mut self, now: Timestamp, input: Input);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Timestamp>;
}

// TEMPORARY until `core::engine::Engine` (helper pua) and `io::admin_http` (helper
// ioadmin) land in main; replaced by `impl EngineDriver for Engine` and
// `admin_http::{serve, AdminCall}` then.
struct Engine;
impl Engine {
    fn new(_config: EngineConfig, _seed: u64) -> Self {
        Engine
    }
}
impl EngineDriver for Engine {
    fn handle_input(&mut self, _now: Timestamp, _input: Input) {}
    fn poll_output(&mut self) -> Option<Output> {
        None
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
}
mod admin_http {
    use crate::core::modules::admin::{AdminCommand, AdminReply};
    use tokio::sync::{mpsc, oneshot};
    use tokio_util::sync::CancellationToken;
    #[derive(Debug)]
    pub struct AdminCall {
        pub command: AdminCommand,
        pub reply: oneshot::Sender<AdminReply>,
    }
    pub async fn serve(
        _listener: tokio::net::TcpListener,
        _commands: mpsc::Sender<AdminCall>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}
use admin_http::AdminCall;

/// Durable storage as the daemon uses it (`io::store::Store` in production).
pub trait StoreDriver: Send + 'static {
    fn load_all(&mut self) -> Result<Vec<StoredRow>, String>;
    fn apply(&mut self, op: &StoreOp) -> Result<(), String>;
}

impl StoreDriver for Store {
    fn load_all(&mut self) -> Result<Vec<StoredRow>, String> {
        Store::load_all(self).map_err(|e| e.to_string())
    }
    fn apply(&mut self, op: &StoreOp) -> Result<(), String> {
        Store::apply(self, op).map_err(|e| e.to_string())
    }
}

/// Runs the gateway until `cancel` fires (then shuts down gracefully and returns `Ok`) or
/// a fatal error occurs.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), DaemonError> {
    let store = Store::open(&config.store.path).map_err(|e| DaemonError::Store(e.to_string()))?;
    let seed: u64 = rand::random();
    run_with(config, store, cancel, move |engine_config| {
        Engine::new(engine_config, seed)
    })
    .await
}

/// [`run`] with the engine and the store supplied (tests drive the wiring with fakes).
pub async fn run_with<E, S>(
    config: Config,
    mut store: S,
    cancel: CancellationToken,
    make_engine: impl FnOnce(EngineConfig) -> E,
) -> Result<(), DaemonError>
where
    E: EngineDriver,
    S: StoreDriver,
{
    let rows = store.load_all().map_err(DaemonError::Store)?;

    let sockets = SipSockets::bind(&config.sip)
        .await
        .map_err(DaemonError::Bind)?;
    sip_transport::log_bound(&sockets);
    let engine_config = config.engine_config_for(sockets.udp_addr(), sockets.tcp_addr());
    info!(
        contact = %engine_config.contact_uri,
        via_udp = %engine_config.tx.via_udp,
        via_tcp = %engine_config.tx.via_tcp,
        "sip identity"
    );

    let admin_listener = if config.admin.enabled {
        let l = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .map_err(|e| {
                DaemonError::Bind(std::io::Error::new(
                    e.kind(),
                    format!("cannot bind admin {}: {e}", config.admin.listen),
                ))
            })?;
        let addr: Option<SocketAddr> = l.local_addr().ok();
        if let Some(addr) = addr {
            info!(addr = %addr, "admin listening");
        }
        Some(l)
    } else {
        None
    };

    let mut engine = make_engine(engine_config);
    let mut loop_state = Loop {
        pending_admin: HashMap::new(),
        next_admin_id: 0,
        sip: None,
    };

    // Restore comes before any other input, so nothing races with rebuilding state.
    let restored = rows.len();
    engine.handle_input(now(), Input::Restore(rows));
    info!(rows = restored, "state restored");

    // Drivers start only now: their inputs queue behind the restore.
    let transport_cancel = CancellationToken::new();
    let (input_tx, mut input_rx) = mpsc::channel::<Stamped>(INPUT_QUEUE);
    let transport = sockets.start(input_tx, transport_cancel.clone());
    loop_state.sip = Some(transport.sender());
    // Outputs of the restore (e.g. refreshes due) go out once the transport exists.
    loop_state.drain(&mut engine, &mut store)?;

    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminCall>(ADMIN_QUEUE);
    let admin_cancel = CancellationToken::new();
    let admin_task = admin_listener.map(|listener| {
        let cancel = admin_cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = admin_http::serve(listener, admin_tx, cancel).await {
                error!("admin server failed: {e}");
            }
        })
    });

    info!("gateway running");
    let result = loop {
        let sleep = match engine.poll_timeout() {
            Some(deadline) => now().until(deadline),
            // Nothing scheduled: wake rarely, only to re-check.
            None => Duration::from_secs(3600),
        };
        let input = tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            received = input_rx.recv() => match received {
                Some((at, input)) => Some((at, input)),
                None => break Ok(()),
            },
            Some(call) = admin_rx.recv() => {
                let id = loop_state.admit(call.reply);
                Some((now(), Input::Admin { id, command: call.command }))
            }
            _ = tokio::time::sleep(sleep) => None,
        };
        let (at, input) = input.unwrap_or_else(|| (now(), Input::Tick));
        engine.handle_input(at, input);
        if let Err(e) = loop_state.drain(&mut engine, &mut store) {
            break Err(e);
        }
    };

    info!("shutting down");
    admin_cancel.cancel();
    engine.handle_input(now(), Input::Shutdown);
    let drained = loop_state.drain(&mut engine, &mut store);
    // Unanswered admin requests get a 503 from the HTTP driver when their sender drops.
    loop_state.pending_admin.clear();
    loop_state.sip = None;
    if tokio::time::timeout(FLUSH_TIMEOUT, transport.close(transport_cancel))
        .await
        .is_err()
    {
        warn!("sip transport did not flush within {FLUSH_TIMEOUT:?}");
    }
    if let Some(task) = admin_task {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, task).await;
    }
    info!("stopped");
    result.and(drained)
}

/// What the engine task keeps besides the engine.
struct Loop {
    /// HTTP requests waiting for their `AdminReply`.
    pending_admin: HashMap<AdminRequestId, oneshot::Sender<AdminReply>>,
    next_admin_id: u64,
    sip: Option<SipSender>,
}

impl Loop {
    fn admit(&mut self, reply: oneshot::Sender<AdminReply>) -> AdminRequestId {
        self.next_admin_id += 1;
        let id = AdminRequestId(self.next_admin_id);
        self.pending_admin.insert(id, reply);
        id
    }

    /// Performs every pending output in order. A failed store write stops the daemon:
    /// continuing would acknowledge state that is not durable.
    fn drain<E: EngineDriver, S: StoreDriver>(
        &mut self,
        engine: &mut E,
        store: &mut S,
    ) -> Result<(), DaemonError> {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Store(op) => {
                    if let Err(e) = apply_blocking(store, &op) {
                        error!("store write failed: {e}; stopping");
                        return Err(DaemonError::Store(e));
                    }
                }
                Output::SendSip { to, message } => match &self.sip {
                    Some(sip) => {
                        debug!(peer = %to, "sip send");
                        sip.send(to, message.to_bytes());
                    }
                    None => warn!(peer = %to, "sip output before the transport started; dropped"),
                },
                Output::AdminReply { id, reply } => match self.pending_admin.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    None => debug!(id = id.0, "admin reply for a request no longer waiting"),
                },
            }
        }
        Ok(())
    }
}

/// A store write on the engine task. On the multi-threaded runtime the worker is handed
/// over first so other tasks keep running while SQLite syncs.
fn apply_blocking<S: StoreDriver>(store: &mut S, op: &StoreOp) -> Result<(), String> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| store.apply(op)),
        _ => store.apply(op),
    }
}
