//! Wires the drivers to the engine; graceful shutdown. Owner: io-daemon.
//!
//! One task owns the engine (architecture.md, Core and drivers). Drivers hand it inputs
//! through bounded channels, each stamped with the wall-clock time of receipt. The task
//! takes one input and then, without waiting, up to [`INPUT_BATCH`] more that are already
//! queued, hands them to the engine in order, then drains `poll_output`:
//! - every `Store` op of the drain is applied in ONE SQLite transaction before any other
//!   output of the drain is performed, so a state is durable before the message that
//!   acknowledges it leaves (product.md, Persistence), and a burst of N inputs costs one
//!   commit instead of N (the per-commit cost dominated under load);
//! - `SendSip` is serialised and queued on the SIP transport;
//! - `AdminReply` answers the HTTP request waiting for it.
//!
//! Then it sleeps until the next input or `poll_timeout`, when it feeds `Input::Tick`.
//!
//! Start: open the store, bind the sockets (logging each bound address), then
//! `Input::Restore` before any other input. Stop (SIGTERM/SIGINT cancel the token):
//! `Input::Shutdown`, drain and perform the outputs, flush the transports, close.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::core::engine::{Engine, EngineConfig, Input, Output};
use crate::core::modules::admin::AdminModule;
use crate::core::modules::bla::BlaModule;
use crate::core::modules::bridge::BridgeModule;
use crate::core::modules::presence_agent::PresenceAgentModule;
use crate::core::modules::registrar::RegistrarModule;
use crate::core::modules::usrloc::UsrlocModule;
use crate::core::modules::Module;
use crate::core::persist::{StoreOp, StoredRow};
use crate::core::sip::Peer;
use crate::core::time::Timestamp;
use crate::core::xmpp::stanza::Stanza;
use crate::io::admin_http::{self, AdminCall, PendingAdmin};
use crate::io::sip_transport::{self, SipSender, SipSockets};
use crate::io::store::Store;
use crate::io::xmpp_link::{self, LinkEvent, XmppLinkConfig};

/// Inputs queued for the engine before drivers wait (back-pressure on the sockets).
const INPUT_QUEUE: usize = 8192;
/// Stanzas queued for the component link before sends are dropped (the link itself also
/// queues while it is down). Sized for a burst such as the probes to every authorized pair
/// after a reconnect (at 1024, a restart with 5000 pairs dropped most of them); a stanza
/// is a few hundred bytes, so a full queue is a few tens of MiB.
const XMPP_QUEUE: usize = 65_536;
/// Admin commands queued before the HTTP handlers wait.
const ADMIN_QUEUE: usize = 64;
/// Inputs handled before one drain (one store transaction). Bounds the latency an input
/// can add to the ones queued with it.
const INPUT_BATCH: usize = 256;
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
    /// The first component handshake was refused (product.md: fail fast, then it is a
    /// configuration problem, not a network one).
    #[error("{0}")]
    XmppLink(String),
}

/// The engine as the daemon drives it: `core::engine::Engine` in production, a scripted
/// fake in the daemon's own tests.
pub trait EngineDriver: Send + 'static {
    fn handle_input(&mut self, now: Timestamp, input: Input);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Timestamp>;
}

impl EngineDriver for Engine {
    fn handle_input(&mut self, now: Timestamp, input: Input) {
        Engine::handle_input(self, now, input)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Engine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        Engine::poll_timeout(self)
    }
}

/// Durable storage as the daemon uses it (`io::store::Store` in production).
pub trait StoreDriver: Send + 'static {
    fn load_all(&mut self) -> Result<Vec<StoredRow>, String>;
    fn apply(&mut self, op: &StoreOp) -> Result<(), String>;
    /// `ops` in order, all or none (one transaction where the store has them).
    fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), String> {
        ops.iter().try_for_each(|op| self.apply(op))
    }
}

impl StoreDriver for Store {
    fn load_all(&mut self) -> Result<Vec<StoredRow>, String> {
        Store::load_all(self).map_err(|e| e.to_string())
    }
    fn apply(&mut self, op: &StoreOp) -> Result<(), String> {
        Store::apply(self, op).map_err(|e| e.to_string())
    }
    fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), String> {
        Store::apply_batch(self, ops).map_err(|e| e.to_string())
    }
}

/// Runs the gateway until `cancel` fires (then shuts down gracefully and returns `Ok`) or
/// a fatal error occurs.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), DaemonError> {
    let store = Store::open(&config.store.path).map_err(|e| DaemonError::Store(e.to_string()))?;
    let seed: u64 = rand::random();
    let modules_config = config.clone();
    run_with(config, store, cancel, move |mut engine_config| {
        let nonce_key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        engine_config.site = modules_config.site_config(nonce_key);
        let mut modules: Vec<Box<dyn Module>> = vec![Box::new(AdminModule::new())];
        let mut sources = modules_config.registrar_module_config(&engine_config);
        if let Some(pa) = &modules_config.presence_agent {
            info!(domains = ?pa.domains, "embedded presence agent enabled");
            modules.push(Box::new(PresenceAgentModule::new(pa.domains.clone())));
            if modules_config.registrar.is_some() {
                info!(domains = ?pa.domains, "embedded registrar enabled");
            } else {
                sources.domains.clear();
            }
        }
        if !sources.domains.is_empty()
            || !sources.copy_domains.is_empty()
            || !sources.reg_event.aors.is_empty()
        {
            info!(copies = ?sources.copy_domains, reg_event = ?sources.reg_event.aors, "registration sources enabled");
            // Before usrloc and bla: their restore reads the restored bindings.
            modules.push(Box::new(RegistrarModule::with_config(sources)));
        }
        if let Some(u) = &modules_config.usrloc {
            info!(domains = ?u.domains, aors = u.aors.len(), patterns = u.patterns.len(), "usrloc enabled");
            modules.push(Box::new(UsrlocModule::new(u.clone())));
        }
        if let Some(b) = &modules_config.bla {
            info!(lines = ?b.lines, "bla enabled");
            modules.push(Box::new(BlaModule::new(b.clone())));
        }
        if let Some(bridge) = modules_config.bridge_module_config(&engine_config) {
            info!(mode = ?bridge.mode, domains = bridge.domains.len(), "presence bridge enabled");
            modules.push(Box::new(BridgeModule::new(bridge)));
        }
        Engine::with_modules(engine_config, seed, modules)
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
        pending_admin: PendingAdmin::new(),
        sip: None,
        xmpp: None,
    };

    // Restore comes before any other input, so nothing races with rebuilding state.
    let restored = rows.len();
    engine.handle_input(now(), Input::Restore(rows));
    info!(rows = restored, "state restored");

    // Drivers start only now: their inputs queue behind the restore.
    let transport_cancel = CancellationToken::new();
    let (input_tx, mut input_rx) = mpsc::channel::<Stamped>(INPUT_QUEUE);
    let transport = sockets.start(input_tx, transport_cancel);
    loop_state.sip = Some(Box::new(transport.sender()));
    // Outputs of the restore (e.g. refreshes due) go out once the transport exists.
    loop_state.drain(&mut engine, &mut store)?;

    // The XEP-0114 component link, when configured. Its events are engine inputs like any
    // driver's; the engine's `SendStanza` outputs go to its outbound queue.
    let xmpp_cancel = CancellationToken::new();
    let (link_tx, mut link_rx) = mpsc::channel::<LinkEvent>(INPUT_QUEUE);
    let link_task = config.xmpp.as_ref().map(|x| {
        let (out_tx, out_rx) = mpsc::channel(XMPP_QUEUE);
        loop_state.xmpp = Some(out_tx);
        let cfg = XmppLinkConfig::new(x.server.clone(), x.component_jid.clone(), x.secret.clone());
        info!(server = %x.server, component = %x.component_jid, "xmpp component link starting");
        tokio::spawn(xmpp_link::run(cfg, link_tx, out_rx, xmpp_cancel.clone()))
    });

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
    let mut last_tick: Option<Timestamp> = None;
    let mut xmpp_up = false;
    let result = loop {
        let sleep = match engine.poll_timeout() {
            // A deadline the last Tick did not clear would spin the task: back off a little.
            Some(deadline) if last_tick.is_some_and(|t| deadline <= t) => {
                now().until(deadline).max(Duration::from_millis(1))
            }
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
            Some(call) = admin_rx.recv() => Some((now(), loop_state.pending_admin.register(call))),
            Some(event) = link_rx.recv() => match link_input(event, &mut xmpp_up) {
                Ok(Some(input)) => Some((now(), input)),
                Ok(None) => continue,
                Err(e) => break Err(e),
            },
            _ = tokio::time::sleep(sleep) => None,
        };
        let (at, input) = input.unwrap_or_else(|| (now(), Input::Tick));
        last_tick = matches!(input, Input::Tick).then_some(at);
        engine.handle_input(at, input);
        // Inputs already queued join this drain (one store transaction for all of them).
        for _ in 0..INPUT_BATCH {
            match input_rx.try_recv() {
                Ok((at, input)) => {
                    last_tick = None;
                    engine.handle_input(at, input);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = loop_state.drain(&mut engine, &mut store) {
            break Err(e);
        }
    };

    info!("shutting down");
    admin_cancel.cancel();
    engine.handle_input(now(), Input::Shutdown);
    let drained = loop_state.drain(&mut engine, &mut store);
    // Unanswered admin requests get a 503 from the HTTP driver when their sender drops.
    loop_state.pending_admin = PendingAdmin::new();
    loop_state.sip = None;
    // Dropping the outbound queue lets the link send what the shutdown queued (the
    // `unavailable` presences) and close its stream.
    loop_state.xmpp = None;
    if !xmpp_up {
        // Nothing can be flushed over a link that is down (or still connecting).
        xmpp_cancel.cancel();
    }
    if let Some(task) = link_task {
        if tokio::time::timeout(FLUSH_TIMEOUT, task).await.is_err() {
            warn!("xmpp link did not close within {FLUSH_TIMEOUT:?}");
        }
        xmpp_cancel.cancel();
    }
    if tokio::time::timeout(FLUSH_TIMEOUT, transport.close())
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

/// The engine input for a link event; `Err` when the daemon must stop.
fn link_input(event: LinkEvent, up: &mut bool) -> Result<Option<Input>, DaemonError> {
    match event {
        LinkEvent::Up => *up = true,
        LinkEvent::Down(_) => *up = false,
        _ => {}
    }
    Ok(match event {
        LinkEvent::Up => {
            info!("xmpp component link up");
            Some(Input::XmppLinkUp)
        }
        LinkEvent::Down(reason) => {
            warn!(reason = %reason, "xmpp component link down");
            Some(Input::XmppLinkDown)
        }
        LinkEvent::Stanza(stanza) => Some(Input::Stanza(stanza)),
        LinkEvent::Bad {
            condition,
            reason,
            bounced,
        } => {
            warn!(?condition, bounced, reason = %reason, "bad element from the xmpp server");
            None
        }
        LinkEvent::ConnectFailed {
            attempt,
            reason,
            retry_in,
        } => {
            warn!(attempt, retry_in_ms = retry_in.as_millis() as u64, reason = %reason,
                "xmpp component connect failed");
            None
        }
        LinkEvent::FirstHandshakeRefused { reason } => {
            return Err(DaemonError::XmppLink(format!(
                "the XMPP server refused the component handshake: {reason} \
                 (check xmpp.component_jid and xmpp.secret against the server's configuration)"
            )));
        }
    })
}

/// What the engine task keeps besides the engine.
struct Loop {
    /// HTTP requests waiting for their `AdminReply`.
    pending_admin: PendingAdmin,
    sip: Option<Box<dyn SipOut>>,
    /// The component link's outbound queue, when `[xmpp]` is configured.
    xmpp: Option<mpsc::Sender<Stanza>>,
}

/// Where `SendSip` outputs go (the SIP transport; a recorder in tests).
pub trait SipOut: Send {
    fn send(&self, to: Peer, bytes: Vec<u8>);
}

impl SipOut for SipSender {
    fn send(&self, to: Peer, bytes: Vec<u8>) {
        SipSender::send(self, to, bytes)
    }
}

impl Loop {
    /// Performs every pending output: first all store ops in one transaction, then the
    /// other outputs in order. So nothing of the drain leaves before its state is durable
    /// (a send that came before a store op only waits for the commit). A failed store write
    /// stops the daemon: continuing would acknowledge state that is not durable.
    fn drain<E: EngineDriver, S: StoreDriver>(
        &mut self,
        engine: &mut E,
        store: &mut S,
    ) -> Result<(), DaemonError> {
        let mut ops = Vec::new();
        let mut rest = Vec::new();
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Store(op) => ops.push(op),
                other => rest.push(other),
            }
        }
        if !ops.is_empty() {
            if let Err(e) = apply_blocking(store, &ops) {
                error!("store write failed: {e}; stopping");
                return Err(DaemonError::Store(e));
            }
        }
        for output in rest {
            match output {
                Output::Store(_) => {}
                Output::SendSip { to, message } => match &self.sip {
                    Some(sip) => {
                        debug!(peer = %to, "sip send");
                        sip.send(to, message.to_bytes());
                    }
                    None => warn!(peer = %to, "sip output before the transport started; dropped"),
                },
                Output::AdminReply { id, reply } => {
                    self.pending_admin.complete(id, reply);
                }
                Output::SendStanza(stanza) => match &self.xmpp {
                    Some(tx) => {
                        if tx.try_send(stanza).is_err() {
                            warn!("xmpp outbound queue full or closed; stanza dropped");
                        }
                    }
                    None => debug!("no component link configured; stanza dropped"),
                },
            }
        }
        Ok(())
    }
}

/// The store writes of one drain on the engine task. On the multi-threaded runtime the
/// worker is handed over first so other tasks keep running while SQLite writes.
fn apply_blocking<S: StoreDriver>(store: &mut S, ops: &[StoreOp]) -> Result<(), String> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| store.apply_batch(ops)),
        _ => store.apply_batch(ops),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::modules::admin::AdminReply;
    use crate::core::modules::admin::HealthView;
    use crate::core::persist::StoreTable;
    use crate::core::sip::{Request, SipMessage, Transport};
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;

    /// Everything the fakes saw, in order.
    type Journal = Arc<Mutex<Vec<String>>>;

    struct FakeEngine {
        inputs: Arc<Mutex<Vec<Input>>>,
        /// Outputs to emit after the next input.
        script: Vec<Output>,
        deadline: Option<Timestamp>,
        seen: mpsc::UnboundedSender<&'static str>,
    }

    impl EngineDriver for FakeEngine {
        fn handle_input(&mut self, now: Timestamp, input: Input) {
            let kind = match &input {
                Input::Restore(_) => "restore",
                Input::Tick => "tick",
                Input::Shutdown => "shutdown",
                _ => "other",
            };
            if kind == "restore" {
                // Ask to be woken shortly after start.
                self.deadline = Some(now + Duration::from_millis(20));
            } else if kind == "tick" {
                self.deadline = None;
            }
            self.inputs.lock().unwrap().push(input);
            let _ = self.seen.send(kind);
        }
        fn poll_output(&mut self) -> Option<Output> {
            if self.script.is_empty() {
                None
            } else {
                Some(self.script.remove(0))
            }
        }
        fn poll_timeout(&self) -> Option<Timestamp> {
            self.deadline
        }
    }

    struct FakeStore {
        rows: Vec<StoredRow>,
        journal: Journal,
        fail_on: Option<String>,
    }

    impl StoreDriver for FakeStore {
        fn load_all(&mut self) -> Result<Vec<StoredRow>, String> {
            Ok(self.rows.clone())
        }
        fn apply(&mut self, op: &StoreOp) -> Result<(), String> {
            let key = match op {
                StoreOp::Put { key, .. } | StoreOp::Delete { key, .. } => key.clone(),
            };
            if self.fail_on.as_ref() == Some(&key) {
                return Err("disk full".into());
            }
            self.journal.lock().unwrap().push(format!("store {key}"));
            Ok(())
        }
        fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), String> {
            self.journal
                .lock()
                .unwrap()
                .push(format!("batch {}", ops.len()));
            ops.iter().try_for_each(|op| self.apply(op))
        }
    }

    struct RecordingSip(Journal);

    impl SipOut for RecordingSip {
        fn send(&self, to: Peer, _bytes: Vec<u8>) {
            self.0.lock().unwrap().push(format!("send {}", to.addr));
        }
    }

    fn put(key: &str) -> Output {
        Output::Store(StoreOp::Delete {
            table: StoreTable::Subscriptions,
            key: key.into(),
        })
    }

    fn send(port: u16) -> Output {
        Output::SendSip {
            to: Peer {
                transport: Transport::Udp,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            },
            message: SipMessage::Request(Request::new(
                crate::core::sip::Method::Options,
                "sip:x@127.0.0.1",
            )),
        }
    }

    fn row(key: &str) -> StoredRow {
        StoredRow {
            table: StoreTable::Subscriptions,
            key: key.into(),
            owner: "pua".into(),
            data: serde_json::Value::Null,
        }
    }

    fn test_config() -> Config {
        crate::config::load_str(
            "[sip]\nudp_listen = \"127.0.0.1:0\"\n[admin]\nenabled = false\n",
            Some(Default::default()),
        )
        .unwrap()
    }

    fn fake_engine(
        script: Vec<Output>,
    ) -> (
        FakeEngine,
        Arc<Mutex<Vec<Input>>>,
        mpsc::UnboundedReceiver<&'static str>,
    ) {
        let inputs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = FakeEngine {
            inputs: inputs.clone(),
            script,
            deadline: None,
            seen: tx,
        };
        (engine, inputs, rx)
    }

    async fn wait_for(rx: &mut mpsc::UnboundedReceiver<&'static str>, kind: &str) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(k) = rx.recv().await {
                if k == kind {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "engine never saw {kind}");
    }

    #[tokio::test]
    async fn restore_is_the_first_input_and_shutdown_the_last() {
        let (engine, inputs, mut seen) = fake_engine(Vec::new());
        let store = FakeStore {
            rows: vec![row("a"), row("b")],
            journal: Default::default(),
            fail_on: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_with(test_config(), store, cancel.clone(), move |_| {
            engine
        }));
        wait_for(&mut seen, "restore").await;
        cancel.cancel();
        task.await.unwrap().unwrap();
        let inputs = inputs.lock().unwrap();
        assert_eq!(
            inputs.first(),
            Some(&Input::Restore(vec![row("a"), row("b")]))
        );
        assert_eq!(inputs.last(), Some(&Input::Shutdown));
    }

    #[tokio::test]
    async fn tick_is_fed_when_the_engine_deadline_passes() {
        let (engine, _inputs, mut seen) = fake_engine(Vec::new());
        let store = FakeStore {
            rows: Vec::new(),
            journal: Default::default(),
            fail_on: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_with(test_config(), store, cancel.clone(), move |_| {
            engine
        }));
        wait_for(&mut seen, "tick").await;
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn engine_config_carries_the_bound_port() {
        let (engine, _inputs, mut seen) = fake_engine(Vec::new());
        let store = FakeStore {
            rows: Vec::new(),
            journal: Default::default(),
            fail_on: None,
        };
        let (cfg_tx, cfg_rx) = oneshot::channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_with(test_config(), store, cancel.clone(), move |c| {
            let _ = cfg_tx.send(c);
            engine
        }));
        wait_for(&mut seen, "restore").await;
        cancel.cancel();
        task.await.unwrap().unwrap();
        let cfg = cfg_rx.await.unwrap();
        assert!(!cfg.tx.via_udp.ends_with(":0"), "{}", cfg.tx.via_udp);
        assert!(cfg.contact_uri.starts_with("sip:gateway@127.0.0.1:"));
    }

    #[test]
    fn store_ops_of_a_drain_are_durable_before_any_send() {
        let journal: Journal = Default::default();
        let (mut engine, _, _rx) = fake_engine(vec![put("a"), send(1), put("b"), send(2)]);
        let mut store = FakeStore {
            rows: Vec::new(),
            journal: journal.clone(),
            fail_on: None,
        };
        let mut l = Loop {
            pending_admin: PendingAdmin::new(),
            sip: Some(Box::new(RecordingSip(journal.clone()))),
            xmpp: None,
        };
        l.drain(&mut engine, &mut store).unwrap();
        assert_eq!(
            *journal.lock().unwrap(),
            [
                "batch 2",
                "store a",
                "store b",
                "send 127.0.0.1:1",
                "send 127.0.0.1:2"
            ]
        );
    }

    #[test]
    fn store_ops_of_a_drain_share_one_batch() {
        let journal: Journal = Default::default();
        let (mut engine, _, _rx) = fake_engine(vec![put("a"), put("b"), put("c")]);
        let mut store = FakeStore {
            rows: Vec::new(),
            journal: journal.clone(),
            fail_on: None,
        };
        let mut l = Loop {
            pending_admin: PendingAdmin::new(),
            sip: None,
            xmpp: None,
        };
        l.drain(&mut engine, &mut store).unwrap();
        let batches: Vec<String> = journal
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("batch"))
            .cloned()
            .collect();
        assert_eq!(batches, ["batch 3"]);
    }

    #[test]
    fn failed_store_write_stops_before_later_outputs() {
        let journal: Journal = Default::default();
        let (mut engine, _, _rx) = fake_engine(vec![put("a"), send(1)]);
        let mut store = FakeStore {
            rows: Vec::new(),
            journal: journal.clone(),
            fail_on: Some("a".into()),
        };
        let mut l = Loop {
            pending_admin: PendingAdmin::new(),
            sip: Some(Box::new(RecordingSip(journal.clone()))),
            xmpp: None,
        };
        assert!(matches!(
            l.drain(&mut engine, &mut store),
            Err(DaemonError::Store(_))
        ));
        let journal = journal.lock().unwrap();
        assert!(
            !journal.iter().any(|e| e.starts_with("send")),
            "nothing acknowledged: {journal:?}"
        );
    }

    #[test]
    fn admin_reply_reaches_the_waiting_request() {
        let health = AdminReply::Health(HealthView {
            status: "ok".into(),
            publications: 0,
            subscriptions: 0,
            notifier_dialogs: 0,
        });
        let mut l = Loop {
            pending_admin: PendingAdmin::new(),
            sip: None,
            xmpp: None,
        };
        let (tx, mut rx) = oneshot::channel();
        let Input::Admin { id, .. } = l.pending_admin.register(AdminCall {
            command: crate::core::modules::admin::AdminCommand::Health,
            reply: tx,
        }) else {
            panic!("register gives an admin input")
        };
        let (mut engine, _, _seen) = fake_engine(vec![Output::AdminReply {
            id,
            reply: health.clone(),
        }]);
        let mut store = FakeStore {
            rows: Vec::new(),
            journal: Default::default(),
            fail_on: None,
        };
        l.drain(&mut engine, &mut store).unwrap();
        assert_eq!(rx.try_recv().ok(), Some(health));
        assert!(l.pending_admin.is_empty());
    }
}
