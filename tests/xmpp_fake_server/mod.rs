//! A scripted XMPP server for loopback tests of the component link: plain tokio TCP, the
//! test decides every byte the "server" sends (after biboumi's end-to-end scenarios).
//! Every wait is bounded by [`WAIT`]; nothing sleeps blindly.

#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::minidom;
use xmpp_sip_gateway::core::xmpp::stanza::Stanza;
use xmpp_sip_gateway::io::xmpp_link::{self, LinkError, LinkEvent, XmppLinkConfig};

pub const WAIT: Duration = Duration::from_secs(5);
pub const COMPONENT: &str = "sip.example";
pub const SECRET: &str = "secret";
pub const STREAM_ID: &str = "3BF96D32";
/// standards.md §16 case 1.
pub const EXPECTED_HASH: &str = "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136";

pub struct FakeServer {
    pub listener: TcpListener,
}

impl FakeServer {
    pub async fn bind() -> FakeServer {
        FakeServer {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn addr(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    pub async fn accept(&self) -> Conn {
        let (sock, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("the link did not connect in time")
            .unwrap();
        Conn {
            sock,
            buf: String::new(),
            pos: 0,
        }
    }

    /// Accepts, answers the header and checks the case 1 handshake, then accepts it.
    pub async fn accept_authenticated(&self) -> Conn {
        let mut c = self.accept().await;
        c.read_header().await;
        c.send_header(STREAM_ID).await;
        let hs = c.next_element().await;
        assert_eq!(hs.name(), "handshake");
        assert_eq!(hs.text(), EXPECTED_HASH);
        c.send("<handshake/>").await;
        c
    }
}

/// One accepted connection: what the component sent, consumed element by element.
pub struct Conn {
    pub sock: TcpStream,
    buf: String,
    pos: usize,
}

impl Conn {
    async fn read_more(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.sock.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("nothing more from the link; got so far: {}", self.buf))
            .unwrap();
        self.buf.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        n
    }

    /// Reads the component's stream header (after the XML declaration) and returns it.
    pub async fn read_header(&mut self) -> String {
        loop {
            if let Some(start) = find_start_tag(&self.buf) {
                if let Some(end) = self.buf[start..].find('>') {
                    let header = self.buf[start..start + end + 1].to_string();
                    self.pos = start + end + 1;
                    return header;
                }
            }
            assert!(self.read_more().await > 0, "closed before a stream header");
        }
    }

    pub async fn send_header(&mut self, id: &str) {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' from='{COMPONENT}' id='{id}'>"
        ))
        .await;
    }

    pub async fn send(&mut self, xml: &str) {
        self.sock.write_all(xml.as_bytes()).await.unwrap();
        self.sock.flush().await.unwrap();
    }

    /// The next complete top-level element the component sent.
    pub async fn next_element(&mut self) -> minidom::Element {
        loop {
            if let Some((el, used)) = first_element(&self.buf[self.pos..]) {
                self.pos += used;
                return el;
            }
            assert!(
                self.read_more().await > 0,
                "closed while waiting for an element; got: {}",
                &self.buf[self.pos..]
            );
        }
    }

    /// Waits for the component to close the connection (EOF), returning what was left.
    pub async fn until_closed(&mut self) -> String {
        while self.read_more().await > 0 {}
        self.buf[self.pos..].to_string()
    }
}

fn find_start_tag(buf: &str) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].find('<') {
        let at = i + off;
        if !buf[at..].starts_with("<?") {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Parses the first complete element of `rest` (leading whitespace allowed), returning it
/// and the bytes it used. Uses a namespace wrapper because the stream header declared the
/// default namespace.
fn first_element(rest: &str) -> Option<(minidom::Element, usize)> {
    let trimmed = rest.trim_start();
    let lead = rest.len() - trimmed.len();
    if !trimmed.starts_with('<') || trimmed.starts_with("</") {
        return None;
    }
    // Try every '>' as the end of the first element; the shortest well-formed prefix wins.
    let mut end = 0;
    while let Some(off) = trimmed[end..].find('>') {
        end += off + 1;
        let candidate = &trimmed[..end];
        let wrapped = format!(
            "<w xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams'>{candidate}</w>"
        );
        if let Ok(w) = wrapped.parse::<minidom::Element>() {
            if w.children().count() == 1 {
                return Some((w.children().next().unwrap().clone(), lead + end));
            }
        }
    }
    None
}

/// A running link under test.
pub struct Link {
    pub events: mpsc::Receiver<LinkEvent>,
    pub outbound: mpsc::Sender<Stanza>,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), LinkError>>,
}

impl Link {
    pub fn start(cfg: XmppLinkConfig) -> Link {
        let (ev_tx, events) = mpsc::channel(64);
        let (outbound, out_rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(xmpp_link::run(cfg, ev_tx, out_rx, shutdown.clone()));
        Link {
            events,
            outbound,
            shutdown,
            handle,
        }
    }

    pub async fn next_event(&mut self) -> LinkEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no link event in time")
            .expect("event channel closed")
    }

    /// The next event that is not a [`LinkEvent::ConnectFailed`] retry report.
    pub async fn next_event_after_retries(&mut self) -> LinkEvent {
        loop {
            match self.next_event().await {
                LinkEvent::ConnectFailed { .. } => continue,
                other => return other,
            }
        }
    }

    pub async fn stop(self) -> Result<(), LinkError> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("link did not stop in time")
            .unwrap()
    }
}

/// Short timers so the scenarios run in milliseconds.
pub fn config(server: &FakeServer) -> XmppLinkConfig {
    let mut cfg = XmppLinkConfig::new(server.addr(), COMPONENT, SECRET);
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    cfg.handshake_timeout = Duration::from_secs(3);
    cfg.ping_to = Some("example".into());
    cfg
}
