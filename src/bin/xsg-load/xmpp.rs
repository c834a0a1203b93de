//! The tool's XMPP server side: it accepts the gateway's XEP-0114 component connection
//! (standards.md §2), checks the handshake, and then reads and writes stanzas.
//!
//! Blocking std threads do the socket work (one reader per connection, one writer), so the
//! measuring loop only sees parsed stanzas stamped with their time of arrival. A new
//! connection (the gateway restarted) replaces the old one for writing.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use sha1::{Digest, Sha1};
use tokio::sync::mpsc::UnboundedSender;

use crate::pidf::escape;

/// One top-level element of the stream, reduced to what the tool needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stanza {
    /// Local name: `presence`, `iq`, `message`, `handshake`, …
    pub name: String,
    pub from: String,
    pub to: String,
    pub typ: Option<String>,
    pub id: Option<String>,
    pub show: Option<String>,
    pub status: Option<String>,
    /// Character data directly inside the element (the handshake digest).
    pub text: String,
}

/// What the stream reader yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `<stream:stream …>` with its `to`, `id` and default namespace.
    Open {
        to: Option<String>,
        id: Option<String>,
        ns: Option<String>,
    },
    Stanza(Stanza),
    /// `</stream:stream>`
    Close,
}

/// Reads stream items one at a time from a byte source.
pub struct StreamReader<R: BufRead> {
    reader: Reader<R>,
    buf: Vec<u8>,
    depth: usize,
    current: Option<Stanza>,
    /// 1 = collecting `<show>`, 2 = `<status>`, 0 = neither.
    child: u8,
    child_text: String,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

impl<R: BufRead> StreamReader<R> {
    pub fn new(source: R) -> Self {
        StreamReader {
            reader: Reader::from_reader(source),
            buf: Vec::new(),
            depth: 0,
            current: None,
            child: 0,
            child_text: String::new(),
        }
    }

    /// The next item; `Ok(None)` at end of input.
    pub fn next_item(&mut self) -> Result<Option<Item>, String> {
        loop {
            self.buf.clear();
            let event = self
                .reader
                .read_event_into(&mut self.buf)
                .map_err(|e| format!("XML error: {e}"))?;
            match event {
                Event::Start(e) => {
                    let depth = self.depth;
                    self.depth += 1;
                    match depth {
                        0 => {
                            return Ok(Some(Item::Open {
                                to: attr(&e, "to"),
                                id: attr(&e, "id"),
                                ns: attr(&e, "xmlns"),
                            }))
                        }
                        1 => self.current = Some(stanza_head(&e)),
                        2 => {
                            self.child = match e.local_name().as_ref() {
                                "show" => 1,
                                "status" => 2,
                                _ => 0,
                            };
                            self.child_text.clear();
                        }
                        _ => {}
                    }
                }
                Event::Empty(e) => match self.depth {
                    0 => return Err("empty stream element".into()),
                    1 => return Ok(Some(Item::Stanza(stanza_head(&e)))),
                    _ => {}
                },
                Event::Text(t) => {
                    let text = t.xml10_content().into_owned();
                    self.push_text(&text);
                }
                Event::CData(c) => {
                    let text = c.xml10_content().into_owned();
                    self.push_text(&text);
                }
                Event::GeneralRef(r) => {
                    let text = match resolve_predefined_entity(&r) {
                        Some(s) => s.to_string(),
                        None => r
                            .resolve_char_ref()
                            .ok()
                            .flatten()
                            .map(String::from)
                            .unwrap_or_default(),
                    };
                    self.push_text(&text);
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    match self.depth {
                        0 => return Ok(Some(Item::Close)),
                        1 => {
                            if let Some(s) = self.current.take() {
                                return Ok(Some(Item::Stanza(s)));
                            }
                        }
                        2 => {
                            if let Some(s) = self.current.as_mut() {
                                let text = std::mem::take(&mut self.child_text);
                                match self.child {
                                    1 => s.show = Some(text),
                                    2 => s.status = Some(text),
                                    _ => {}
                                }
                            }
                            self.child = 0;
                        }
                        _ => {}
                    }
                }
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
    }

    fn push_text(&mut self, text: &str) {
        match self.depth {
            2 => {
                if let Some(s) = self.current.as_mut() {
                    s.text.push_str(text);
                }
            }
            3 if self.child != 0 => self.child_text.push_str(text),
            _ => {}
        }
    }
}

fn stanza_head(e: &BytesStart<'_>) -> Stanza {
    Stanza {
        name: e.local_name().as_ref().to_string(),
        from: attr(e, "from").unwrap_or_default(),
        to: attr(e, "to").unwrap_or_default(),
        typ: attr(e, "type"),
        id: attr(e, "id"),
        ..Stanza::default()
    }
}

/// `lowercase_hex(SHA-1(stream_id ‖ secret))` (XEP-0114 §3, standards.md §2).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut h = Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// `<presence type='…' from='…' to='…'/>`
pub fn presence_typed(typ: &str, from: &str, to: &str) -> String {
    format!(
        "<presence type='{}' from='{}' to='{}'/>",
        escape(typ),
        escape(from),
        escape(to)
    )
}

/// An available presence with `<show>` and `<status>`.
pub fn presence_available(from: &str, to: &str, show: &str, status: &str) -> String {
    format!(
        "<presence from='{}' to='{}'><show>{}</show><status>{}</status></presence>",
        escape(from),
        escape(to),
        escape(show),
        escape(status)
    )
}

/// An IQ error answer (`service-unavailable`, RFC 6120 §8.3.3.19).
pub fn iq_unavailable(s: &Stanza) -> String {
    format!(
        "<iq type='error' id='{}' from='{}' to='{}'><error type='cancel'>\
<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        escape(s.id.as_deref().unwrap_or("")),
        escape(&s.to),
        escape(&s.from)
    )
}

/// The bare part of a JID (`a@b/c` → `a@b`).
pub fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// Events the server reports to the measuring loop.
#[derive(Debug)]
pub enum Ev {
    /// A component connected and passed the handshake.
    Connected,
    Stanza(Stanza),
    /// The connection ended (or the handshake failed), with why.
    Closed(String),
}

enum Out {
    Stanza(String),
    Conn(TcpStream),
}

/// Handle to send stanzas to the currently connected component.
#[derive(Clone)]
pub struct Sender(mpsc::Sender<Out>);

impl Sender {
    pub fn send(&self, stanza: String) {
        // The writer thread lives as long as the process; a send error means it is gone,
        // and the loss then shows in the figures.
        let _ = self.0.send(Out::Stanza(stanza));
    }
}

/// Starts accepting component connections on `listener`.
pub fn serve(
    listener: TcpListener,
    component: String,
    secret: String,
    events: UnboundedSender<(Instant, Ev)>,
) -> Sender {
    let (tx, rx) = mpsc::channel::<Out>();
    std::thread::spawn(move || writer(rx));
    let conn_tx = tx.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let (component, secret, events, conn_tx) = (
                component.clone(),
                secret.clone(),
                events.clone(),
                conn_tx.clone(),
            );
            std::thread::spawn(move || {
                let id = format!("xsgload{}n{}", std::process::id(), n);
                let reason = match session(stream, &component, &secret, &id, &events, &conn_tx) {
                    Ok(()) => "stream closed".to_string(),
                    Err(e) => e,
                };
                let _ = events.send((Instant::now(), Ev::Closed(reason)));
            });
        }
    });
    Sender(tx)
}

fn session(
    stream: TcpStream,
    component: &str,
    secret: &str,
    id: &str,
    events: &UnboundedSender<(Instant, Ev)>,
    out: &mpsc::Sender<Out>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    // The handshake must complete in bounded time; afterwards reads block indefinitely.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut write = stream.try_clone().map_err(|e| e.to_string())?;
    let read = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = StreamReader::new(BufReader::new(read));
    let header = |w: &mut TcpStream| {
        write!(
            w,
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
xmlns='jabber:component:accept' from='{}' id='{}'>",
            escape(component),
            escape(id)
        )
    };
    match reader.next_item()? {
        Some(Item::Open { to, ns, .. }) => {
            header(&mut write).map_err(|e| e.to_string())?;
            if ns.as_deref() != Some("jabber:component:accept") {
                let _ = write.write_all(b"<stream:error><invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
                return Err(format!("component stream namespace {ns:?}"));
            }
            if to.as_deref() != Some(component) {
                let _ = write.write_all(b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
                return Err(format!("component asked for {to:?}, expected {component}"));
            }
        }
        other => return Err(format!("expected a stream header, got {other:?}")),
    }
    match reader.next_item()? {
        Some(Item::Stanza(s)) if s.name == "handshake" => {
            if s.text.trim() != handshake_digest(id, secret) {
                let _ = write.write_all(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
                return Err("handshake digest does not match the secret".into());
            }
        }
        other => return Err(format!("expected <handshake>, got {other:?}")),
    }
    write
        .write_all(b"<handshake/>")
        .map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(None);
    let _ = out.send(Out::Conn(write));
    let _ = events.send((Instant::now(), Ev::Connected));
    loop {
        match reader.next_item()? {
            Some(Item::Stanza(s)) => {
                let _ = events.send((Instant::now(), Ev::Stanza(s)));
            }
            Some(Item::Close) | None => return Ok(()),
            Some(Item::Open { .. }) => return Err("second stream header".into()),
        }
    }
}

fn writer(rx: mpsc::Receiver<Out>) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Batch everything already queued into one flush.
        while let Some(item) = next {
            match item {
                Out::Stanza(s) => {
                    if let Some(w) = conn.as_mut() {
                        if w.write_all(s.as_bytes()).is_err() {
                            conn = None;
                        }
                    }
                }
                Out::Conn(c) => {
                    if let Some(mut old) = conn.take() {
                        let _ = old.flush();
                    }
                    conn = Some(BufWriter::with_capacity(64 * 1024, c));
                }
            }
            next = rx.try_recv().ok();
        }
        if let Some(w) = conn.as_mut() {
            if w.flush().is_err() {
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// standards.md §16 case 1.
    #[test]
    fn handshake_digest_matches_the_standards_example() {
        assert_eq!(
            handshake_digest("3BF96D32", "secret"),
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"
        );
    }

    #[test]
    fn reader_yields_header_then_stanzas_with_show_and_status() {
        let input = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
xmlns:stream='http://etherx.jabber.org/streams' to='sip.xmpp.test'>\
<handshake>abc</handshake>\
<presence from='p1@sip.xmpp.test/r' to='x1@xmpp.test'><show>away</show><status>seq &amp; 3</status><c xmlns='caps'><x>y</x></c></presence>\
<presence type='subscribed' from='p1@sip.xmpp.test' to='x1@xmpp.test'/></stream:stream>";
        let mut r = StreamReader::new(input.as_bytes());
        assert_eq!(
            r.next_item().expect("ok"),
            Some(Item::Open {
                to: Some("sip.xmpp.test".into()),
                id: None,
                ns: Some("jabber:component:accept".into())
            })
        );
        let Some(Item::Stanza(h)) = r.next_item().expect("ok") else {
            panic!("no handshake")
        };
        assert_eq!((h.name.as_str(), h.text.as_str()), ("handshake", "abc"));
        let Some(Item::Stanza(p)) = r.next_item().expect("ok") else {
            panic!("no presence")
        };
        assert_eq!(p.show.as_deref(), Some("away"));
        assert_eq!(p.status.as_deref(), Some("seq & 3"));
        assert_eq!(p.typ, None);
        let Some(Item::Stanza(s)) = r.next_item().expect("ok") else {
            panic!("no subscribed")
        };
        assert_eq!(s.typ.as_deref(), Some("subscribed"));
        assert_eq!(r.next_item().expect("ok"), Some(Item::Close));
    }

    #[test]
    fn built_presence_parses_back() {
        let stanza = presence_available("u1@xmpp.test/r", "w1@sip.xmpp.test", "away", "seq 9");
        let doc = format!("<s>{stanza}</s>");
        let mut r = StreamReader::new(doc.as_bytes());
        let _ = r.next_item();
        let Some(Item::Stanza(p)) = r.next_item().expect("ok") else {
            panic!("no presence")
        };
        assert_eq!(p.from, "u1@xmpp.test/r");
        assert_eq!(p.status.as_deref(), Some("seq 9"));
    }

    #[test]
    fn bare_jid_drops_the_resource() {
        assert_eq!(bare("p1@sip.xmpp.test/res"), "p1@sip.xmpp.test");
        assert_eq!(bare("sip.xmpp.test"), "sip.xmpp.test");
    }
}
