//! The XEP-0114 component link to the XMPP server, on tokio-xmpp's `xmlstream` API.
//!
//! The link only moves stanzas: it frames elements, converts them to the core's
//! [`Element`] tree and back, and leaves meaning to the core ([`Stanza::from_element`],
//! `core::xmpp::disco`). Its own duties (architecture.md, product.md "What peers taught"):
//!
//! - **Handshake** (XEP-0114 §3; standards.md §2, §16 cases 1–2): stream header in
//!   `jabber:component:accept` with `to` = the component name, then
//!   `<handshake>` lowercase-hex SHA-1(stream id ‖ secret), then wait for `<handshake/>`.
//! - **Fail fast**: if the very first handshake of the process is refused (a stream error
//!   such as `<not-authorized/>`, or the stream closed after our `<handshake>`), [`run`]
//!   returns [`LinkError::HandshakeRefused`] so the daemon exits with a clear message.
//!   TCP errors (server not up yet) and timeouts are retried even at start.
//! - **Reconnect forever** after that, with exponential back-off and jitter
//!   ([`backoff_delay`]).
//! - **A bad stanza is bounced, not fatal**: an element that fails
//!   [`Stanza::from_element`] gets the mapped error back ([`Stanza::bounce`], never for an
//!   error stanza, RFC 6120 §8.3.1) and the link stays up.
//! - **Keepalive**: after `keepalive` without receiving anything, a XEP-0199 ping goes to
//!   the server; if nothing at all arrives within `ping_timeout` after that, the link is
//!   declared lost and reconnected.
//! - **Bounded queue while down**: outbound stanzas are kept up to `queue_limit`; when
//!   full, the **oldest** is dropped with a warning (presence is state: the newest is the
//!   one worth delivering). The queue is flushed, in order, right after `Up`.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sha1::{Digest, Sha1};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::minidom;
use tokio_xmpp::minidom::rxml::{Namespace, NcName};
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};
use tracing::{debug, error, info, warn};

use crate::core::xmpp::stanza::{Condition, Element, Node, Stanza, NS_COMPONENT};

/// Stream namespace of the XMPP stream header (RFC 6120 §4.8.1).
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Namespace of stream error conditions (RFC 6120 §4.9.3).
const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const NS_PING: &str = "urn:xmpp:ping";
/// How long a graceful close may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Xml = XmlStream<BufReader<TcpStream>, minidom::Element>;

/// Settings of the component link (validated by `config`).
#[derive(Clone, Debug)]
pub struct XmppLinkConfig {
    /// `host:port` of the server's component listener (usually port 5347).
    pub server: String,
    /// The component name (a bare domain, e.g. `sip.example.org`).
    pub component_jid: String,
    pub secret: String,
    /// Silence on the stream after which a XEP-0199 ping is sent.
    pub keepalive: Duration,
    /// Further silence after the ping after which the link is declared lost.
    pub ping_timeout: Duration,
    /// Bound on TCP connect + stream header + handshake.
    pub handshake_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Stanzas kept while the link is down (0: drop everything while down).
    pub queue_limit: usize,
    /// Where keepalive pings go; `None`: the component name minus its first label
    /// (`sip.example.org` → `example.org`), the usual server host.
    pub ping_to: Option<String>,
}

impl XmppLinkConfig {
    /// A configuration with the defaults for everything but the three required values.
    pub fn new(
        server: impl Into<String>,
        component_jid: impl Into<String>,
        secret: impl Into<String>,
    ) -> XmppLinkConfig {
        XmppLinkConfig {
            server: server.into(),
            component_jid: component_jid.into(),
            secret: secret.into(),
            keepalive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            queue_limit: 1000,
            ping_to: None,
        }
    }

    fn ping_target(&self) -> String {
        match &self.ping_to {
            Some(t) => t.clone(),
            None => match self.component_jid.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => parent.to_string(),
                _ => self.component_jid.clone(),
            },
        }
    }
}

/// What the link reports to the daemon.
// Nearly every event is a `Stanza`; boxing it would add an allocation per stanza to
// save space only on the rare control events.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum LinkEvent {
    /// Handshake accepted; stanzas flow (queued ones are sent first).
    Up,
    /// The link was lost after being up; a reconnect follows.
    Down(String),
    /// A well-formed stanza from the server, for the engine.
    Stanza(Stanza),
    /// An element that was not an acceptable stanza. When `bounced`, the error reply has
    /// already been sent; the link stays up.
    Bad {
        condition: Condition,
        reason: String,
        bounced: bool,
    },
    /// A connection attempt failed (TCP, timeout, or a refusal after the link had been
    /// up); the next one follows after `retry_in` (the jittered back-off).
    ConnectFailed {
        attempt: u32,
        reason: String,
        retry_in: Duration,
    },
    /// The first handshake of the process was refused; [`run`] returns an error next.
    FirstHandshakeRefused { reason: String },
}

/// Why [`run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "the XMPP server refused the component handshake for {component}: {reason} \
         (check the component name and secret in the server's configuration)"
    )]
    HandshakeRefused { component: String, reason: String },
}

/// The XEP-0114 §3 handshake value: lowercase hex of SHA-1(stream id ‖ secret)
/// (standards.md §16 case 1).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(stream_id.as_bytes());
    sha.update(secret.as_bytes());
    hex::encode(sha.finalize())
}

/// Delay before reconnect attempt number `attempt` (0-based): `min · 2^attempt` capped at
/// `max`, then "equal jitter": half of it fixed, half scaled by `unit` ∈ [0, 1), so
/// many gateways restarted together do not reconnect in lockstep.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration, unit: f64) -> Duration {
    let base = min
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max);
    let half = base / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// Runs the link until `shutdown` is cancelled (or every `outbound` sender is dropped),
/// reconnecting forever. Returns `Err` only when the very first handshake is refused.
pub async fn run(
    cfg: XmppLinkConfig,
    events: mpsc::Sender<LinkEvent>,
    mut outbound: mpsc::Receiver<Stanza>,
    shutdown: CancellationToken,
) -> Result<(), LinkError> {
    let mut queue = Queue::new(cfg.queue_limit);
    let mut ever_up = false;
    let mut attempt: u32 = 0;
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(cfg.handshake_timeout, connect(&cfg)) => r,
        };
        // Why this attempt failed; `None` after a session that was up and then lost.
        let mut failure = None;
        match connected {
            Ok(Ok(stream)) => {
                ever_up = true;
                attempt = 0;
                info!(component = %cfg.component_jid, server = %cfg.server, "XMPP link up");
                if events.send(LinkEvent::Up).await.is_err() {
                    return Ok(());
                }
                let mut session = Session {
                    cfg: &cfg,
                    stream,
                    events: &events,
                    pending_pings: HashSet::new(),
                    next_ping: 0,
                };
                match session.run(&mut queue, &mut outbound, &shutdown).await {
                    End::Shutdown => {
                        session.close().await;
                        return Ok(());
                    }
                    End::Lost(reason) => {
                        warn!(component = %cfg.component_jid, %reason, "XMPP link down");
                        if events.send(LinkEvent::Down(reason)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            Ok(Err(Attempt::Refused(reason))) if !ever_up => {
                error!(component = %cfg.component_jid, %reason, "first component handshake refused");
                let _ = events
                    .send(LinkEvent::FirstHandshakeRefused {
                        reason: reason.clone(),
                    })
                    .await;
                return Err(LinkError::HandshakeRefused {
                    component: cfg.component_jid.clone(),
                    reason,
                });
            }
            Ok(Err(Attempt::Refused(reason))) => {
                error!(component = %cfg.component_jid, %reason, attempt, "component handshake refused; retrying");
                failure = Some(reason);
            }
            Ok(Err(Attempt::Failed(reason))) => {
                warn!(server = %cfg.server, %reason, attempt, "XMPP connection failed");
                failure = Some(reason);
            }
            Err(_) => {
                warn!(server = %cfg.server, attempt, "XMPP connect/handshake timed out");
                failure = Some("connect/handshake timed out".into());
            }
        }
        let delay = backoff_delay(
            attempt,
            cfg.backoff_min,
            cfg.backoff_max,
            rand::random::<f64>(),
        );
        if let Some(reason) = failure {
            let event = LinkEvent::ConnectFailed {
                attempt,
                reason,
                retry_in: delay,
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
        attempt = attempt.saturating_add(1);
        debug!(?delay, attempt, "XMPP reconnect back-off");
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(deadline) => break,
                msg = outbound.recv() => match msg {
                    Some(stanza) => queue.push(stanza),
                    None => return Ok(()),
                },
            }
        }
    }
}

/// Why one connection attempt did not produce a live stream.
enum Attempt {
    /// The server refused the handshake (stream error, or closed after `<handshake>`).
    Refused(String),
    /// Anything else (TCP, protocol); always retried.
    Failed(String),
}

async fn connect(cfg: &XmppLinkConfig) -> Result<Xml, Attempt> {
    let tcp = TcpStream::connect(&cfg.server)
        .await
        .map_err(|e| Attempt::Failed(format!("connect {}: {e}", cfg.server)))?;
    let _ = tcp.set_nodelay(true);
    let header = StreamHeader {
        from: None,
        to: Some(Cow::Borrowed(cfg.component_jid.as_str())),
        id: None,
    };
    let timeouts = Timeouts {
        read_timeout: cfg.keepalive,
        response_timeout: cfg.ping_timeout,
    };
    let mut pending = initiate_stream(BufReader::new(tcp), NS_COMPONENT, header, timeouts)
        .await
        .map_err(|e| Attempt::Failed(format!("stream header: {e}")))?;
    let stream_id = pending.take_header().id.map(Cow::into_owned);
    let mut stream: Xml = pending.skip_features();
    let Some(stream_id) = stream_id else {
        // A header error (host-unknown…) comes as header without id + stream error.
        return Err(match next_element(&mut stream).await {
            Ok(el) if is_stream_error(&el) => refusal(&el),
            _ => Attempt::Failed("server stream header has no id".into()),
        });
    };
    let handshake = minidom::Element::builder("handshake", NS_COMPONENT)
        .append(handshake_digest(&stream_id, &cfg.secret))
        .build();
    stream
        .send(&handshake)
        .await
        .map_err(|e| Attempt::Failed(format!("sending handshake: {e}")))?;
    match next_element(&mut stream).await {
        Ok(el) if el.name() == "handshake" && el.ns() == NS_COMPONENT => Ok(stream),
        Ok(el) if is_stream_error(&el) => Err(refusal(&el)),
        Ok(el) => Err(Attempt::Refused(format!(
            "unexpected <{}/> instead of <handshake/>",
            el.name()
        ))),
        Err(Some(reason)) => Err(Attempt::Refused(format!(
            "{reason} before the handshake succeeded"
        ))),
        Err(None) => Err(Attempt::Failed("timed out waiting for <handshake/>".into())),
    }
}

/// The next element during setup; `Err(Some(reason))` when the stream or connection
/// ended, `Err(None)` on a read timeout.
///
/// Servers end the connection after a bad handshake (XEP-0114 §3) with or without a
/// footer, and tokio-xmpp reports a bare EOF as `InvalidData`, so every hard end but a
/// timeout counts as "closed".
async fn next_element(stream: &mut Xml) -> Result<minidom::Element, Option<String>> {
    loop {
        match stream.next().await {
            Some(Ok(el)) => return Ok(el),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(Some("stream closed".into()))
            }
            Some(Err(ReadError::HardError(e))) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(None)
            }
            Some(Err(e)) => return Err(Some(e.to_string())),
        }
    }
}

/// A refusal, except `conflict`: another session of this component is still registered
/// (a restart racing the old connection's teardown), which resolves by itself.
fn refusal(el: &minidom::Element) -> Attempt {
    let text = stream_error_text(el);
    if stream_error_condition(el) == "conflict" {
        Attempt::Failed(text)
    } else {
        Attempt::Refused(text)
    }
}

fn is_stream_error(el: &minidom::Element) -> bool {
    el.name() == "error" && el.ns() == NS_STREAMS
}

fn stream_error_condition(el: &minidom::Element) -> String {
    el.children()
        .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined-condition".into())
}

/// `condition: text` of a `<stream:error/>` (RFC 6120 §4.9).
fn stream_error_text(el: &minidom::Element) -> String {
    let condition = stream_error_condition(el);
    match el
        .children()
        .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() == "text")
    {
        Some(t) => format!("stream error {condition}: {}", t.text()),
        None => format!("stream error {condition}"),
    }
}

enum End {
    Shutdown,
    Lost(String),
}

struct Session<'a> {
    cfg: &'a XmppLinkConfig,
    stream: Xml,
    events: &'a mpsc::Sender<LinkEvent>,
    /// Ids of our keepalive pings still unanswered; their answers are consumed here.
    pending_pings: HashSet<String>,
    next_ping: u64,
}

impl Session<'_> {
    async fn run(
        &mut self,
        queue: &mut Queue,
        outbound: &mut mpsc::Receiver<Stanza>,
        shutdown: &CancellationToken,
    ) -> End {
        while let Some(stanza) = queue.pop() {
            if let Err(reason) = self.send(&stanza).await {
                queue.push_front(stanza);
                return End::Lost(reason);
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                item = self.stream.next() => {
                    if let Some(end) = self.on_read(item).await {
                        return end;
                    }
                }
                msg = outbound.recv() => match msg {
                    Some(stanza) => {
                        if let Err(reason) = self.send(&stanza).await {
                            queue.push_front(stanza);
                            return End::Lost(reason);
                        }
                    }
                    None => return End::Shutdown,
                },
            }
        }
    }

    /// Handles one read result; `Some` ends the session.
    async fn on_read(&mut self, item: Option<Result<minidom::Element, ReadError>>) -> Option<End> {
        let el = match item {
            Some(Ok(el)) => el,
            Some(Err(ReadError::SoftTimeout)) => {
                return self.send_keepalive().await.err().map(End::Lost);
            }
            Some(Err(ReadError::ParseError(e))) => {
                // Not produced for minidom elements; logged rather than fatal if it is.
                warn!(error = %e, "unparsable element on the XMPP stream");
                return None;
            }
            Some(Err(ReadError::HardError(e))) if e.kind() == io::ErrorKind::TimedOut => {
                return Some(End::Lost("keepalive ping unanswered".into()));
            }
            Some(Err(ReadError::HardError(e))) => return Some(End::Lost(e.to_string())),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Some(End::Lost("stream closed by the server".into()));
            }
        };
        if is_stream_error(&el) {
            return Some(End::Lost(stream_error_text(&el)));
        }
        if el.name() == "iq" {
            if let Some(id) = el.attr("id") {
                if matches!(el.attr("type"), Some("result" | "error"))
                    && self.pending_pings.remove(id)
                {
                    debug!(id, "keepalive answered");
                    return None;
                }
            }
        }
        let core_el = from_minidom(&el);
        match Stanza::from_element(core_el.clone()) {
            Ok(stanza) => {
                if self.events.send(LinkEvent::Stanza(stanza)).await.is_err() {
                    return Some(End::Shutdown);
                }
            }
            Err(err) => {
                let reply = Stanza::bounce(&core_el, &err, &self.cfg.component_jid);
                let bounced = reply.is_some();
                warn!(
                    condition = %err.condition,
                    reason = %err.reason,
                    bounced,
                    from = core_el.attr("from").unwrap_or(""),
                    element = %core_el.name,
                    "bad stanza from the XMPP server"
                );
                if let Some(reply) = reply {
                    if let Err(reason) = self.send_element(&reply).await {
                        return Some(End::Lost(reason));
                    }
                }
                let event = LinkEvent::Bad {
                    condition: err.condition,
                    reason: err.reason,
                    bounced,
                };
                if self.events.send(event).await.is_err() {
                    return Some(End::Shutdown);
                }
            }
        }
        None
    }

    async fn send_keepalive(&mut self) -> Result<(), String> {
        self.next_ping += 1;
        let id = format!("xsg-ka-{}", self.next_ping);
        let ping = Element::new("iq", NS_COMPONENT)
            .with_attr("from", self.cfg.component_jid.clone())
            .with_attr("to", self.cfg.ping_target())
            .with_attr("id", id.clone())
            .with_attr("type", "get")
            .with_child(Element::new("ping", NS_PING));
        debug!(%id, "stream idle; sending keepalive ping");
        self.pending_pings.insert(id);
        self.send_element(&ping).await
    }

    /// Sends a stanza from the engine, unless it breaks XEP-0114 §3 addressing (no `to`,
    /// or a `from` outside the component domain): Prosody answers that by closing the
    /// whole stream (`invalid-from`), so such a stanza is dropped here with an error log
    /// (standards.md §16 case 3 as a last line of defence).
    async fn send(&mut self, stanza: &Stanza) -> Result<(), String> {
        let from_ok = stanza
            .from()
            .is_some_and(|f| f.domain.eq_ignore_ascii_case(&self.cfg.component_jid));
        if !from_ok || stanza.to().is_none() {
            let el = stanza.to_element();
            error!(
                from = el.attr("from").unwrap_or(""),
                to = el.attr("to").unwrap_or(""),
                component = %self.cfg.component_jid,
                "dropping an outbound stanza without a valid to or with a from outside the component domain"
            );
            return Ok(());
        }
        self.send_element(&stanza.to_element()).await
    }

    /// Sends one element; `Err` only for a broken stream (an element that cannot be
    /// expressed in XML is logged and dropped, the link stays up).
    async fn send_element(&mut self, el: &Element) -> Result<(), String> {
        let el = match to_minidom(el) {
            Ok(el) => el,
            Err(reason) => {
                warn!(%reason, "dropping an outbound stanza that cannot be serialised");
                return Ok(());
            }
        };
        self.stream.send(&el).await.map_err(|e| e.to_string())
    }

    /// Sends the stream footer and closes, bounded by [`CLOSE_GRACE`].
    async fn close(&mut self) {
        let _ = tokio::time::timeout(
            CLOSE_GRACE,
            SinkExt::<&minidom::Element>::close(&mut self.stream),
        )
        .await;
    }
}

/// The outbound queue used while the link is down (drop-oldest when full).
struct Queue {
    items: VecDeque<Stanza>,
    limit: usize,
}

impl Queue {
    fn new(limit: usize) -> Queue {
        Queue {
            items: VecDeque::new(),
            limit,
        }
    }

    fn push(&mut self, stanza: Stanza) {
        if self.limit == 0 {
            warn!("XMPP link down and queue_limit is 0: stanza dropped");
            return;
        }
        if self.items.len() >= self.limit {
            self.items.pop_front();
            warn!(
                limit = self.limit,
                "XMPP link down and queue full: oldest stanza dropped"
            );
        }
        self.items.push_back(stanza);
    }

    /// Puts back a stanza whose send failed; it stays first in line.
    fn push_front(&mut self, stanza: Stanza) {
        if self.limit == 0 {
            return;
        }
        if self.items.len() >= self.limit {
            self.items.pop_back();
        }
        self.items.push_front(stanza);
    }

    fn pop(&mut self) -> Option<Stanza> {
        self.items.pop_front()
    }
}

/// minidom → core tree. Unqualified attributes keep their name, `xml:*` attributes are
/// named `xml:<local>`, attributes in other namespaces are dropped (stanzas carry none).
pub fn from_minidom(el: &minidom::Element) -> Element {
    let mut out = Element::new(el.name(), el.ns());
    for ((ns, name), value) in el.attrs().iter() {
        if ns.is_none() {
            out.attrs.push((name.to_string(), value.clone()));
        } else if ns == Namespace::xml() {
            out.attrs.push((format!("xml:{name}"), value.clone()));
        } else {
            debug!(ns = %ns.as_str(), %name, "dropping a namespaced attribute");
        }
    }
    for node in el.nodes() {
        match node {
            minidom::Node::Element(child) => out.children.push(Node::Element(from_minidom(child))),
            minidom::Node::Text(text) => out.children.push(Node::Text(text.clone())),
        }
    }
    out
}

/// core tree → minidom; fails on names that are not XML NCNames.
pub fn to_minidom(el: &Element) -> Result<minidom::Element, String> {
    let mut builder = minidom::Element::builder(&el.name, el.ns.clone());
    for (name, value) in &el.attrs {
        builder = match name.strip_prefix("xml:") {
            Some(local) => builder.attr_ns(
                Namespace::xml().clone(),
                NcName::try_from(local).map_err(|e| format!("attribute {name:?}: {e}"))?,
                value.clone(),
            ),
            None => builder.attr(
                NcName::try_from(name.as_str()).map_err(|e| format!("attribute {name:?}: {e}"))?,
                value.clone(),
            ),
        };
    }
    for child in &el.children {
        builder = match child {
            Node::Element(c) => builder.append(to_minidom(c)?),
            Node::Text(t) => builder.append(t.clone()),
        };
    }
    NcName::try_from(el.name.as_str()).map_err(|e| format!("element {:?}: {e}", el.name))?;
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// standards.md §16 case 1.
    #[test]
    fn handshake_digest_matches_the_case_1_vector() {
        assert_eq!(
            handshake_digest("3BF96D32", "secret"),
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"
        );
    }

    #[test]
    fn backoff_doubles_from_min_and_caps_at_max() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        // unit 1.0 (upper edge) exposes the un-jittered base.
        assert_eq!(backoff_delay(0, min, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, min, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(10, min, max, 1.0), max);
        assert_eq!(backoff_delay(u32::MAX, min, max, 1.0), max);
    }

    #[test]
    fn backoff_jitter_stays_within_half_to_full_base() {
        let min = Duration::from_secs(4);
        let max = Duration::from_secs(60);
        assert_eq!(backoff_delay(0, min, max, 0.0), Duration::from_secs(2));
        let mid = backoff_delay(0, min, max, 0.5);
        assert_eq!(mid, Duration::from_secs(3));
    }

    #[test]
    fn queue_drops_the_oldest_when_full() {
        let mk = |id: &str| {
            Stanza::Message(
                Element::new("message", NS_COMPONENT)
                    .with_attr("from", "a@sip.example")
                    .with_attr("to", "b@xmpp.example")
                    .with_attr("id", id),
            )
        };
        let mut q = Queue::new(2);
        q.push(mk("1"));
        q.push(mk("2"));
        q.push(mk("3"));
        assert_eq!(q.pop(), Some(mk("2")));
        assert_eq!(q.pop(), Some(mk("3")));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn ping_target_defaults_to_the_parent_domain() {
        let cfg = XmppLinkConfig::new("127.0.0.1:5347", "sip.xmpp.test", "s");
        assert_eq!(cfg.ping_target(), "xmpp.test");
        let cfg = XmppLinkConfig::new("127.0.0.1:5347", "localhost", "s");
        assert_eq!(cfg.ping_target(), "localhost");
    }

    #[test]
    fn element_conversion_round_trips_xml_lang_and_text() {
        let el = Element::new("presence", NS_COMPONENT)
            .with_attr("from", "a@b")
            .with_attr("xml:lang", "de")
            .with_child(
                Element::new("status", NS_COMPONENT)
                    .with_attr("xml:lang", "en")
                    .with_text("a < b"),
            );
        let back = from_minidom(&to_minidom(&el).unwrap());
        assert_eq!(back.attr("xml:lang"), Some("de"));
        assert_eq!(back.attr("from"), Some("a@b"));
        assert_eq!(back.children, el.children);
    }

    #[test]
    fn invalid_element_name_is_refused_not_panicking() {
        assert!(to_minidom(&Element::new("bad name", NS_COMPONENT)).is_err());
    }
}
