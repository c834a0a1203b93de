//! The core's own SIP message vocabulary (RFC 3261 §7).
//!
//! Drivers turn wire bytes into these types (with rsipstack's parser, see `io::sip_codec`)
//! and the core turns them back into bytes with [`SipMessage::to_bytes`]. Header values
//! are kept as text; typed views of the values the presence machinery needs live in
//! [`super::headers`]. Header names are stored in canonical long form, so the compact
//! forms (RFC 3261 §7.3.3, RFC 6665 `o`/`u`) are equal to their long names here.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

/// SIP request methods. Unknown methods are kept by name so they can be answered 501.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Subscribe,
    Notify,
    Publish,
    Message,
    Info,
    Refer,
    Update,
    Prack,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Expands a compact header name (RFC 3261 §7.3.3 and later registrations) and gives
/// well-known names their canonical spelling; other names are kept as received.
pub fn canonical_header_name(name: &str) -> String {
    canonical_name(name).to_string()
}

/// [`canonical_header_name`] without allocating: the canonical spelling, or `name` itself.
pub fn canonical_name(name: &str) -> &str {
    known_header_name(name).unwrap_or(name)
}

/// The canonical spelling of a well-known header name (compact forms expanded), `None`
/// for any other name. Header lookups run per message on the hot path: the name is
/// compared in place, case-insensitively, against the few known names of its length.
fn known_header_name(name: &str) -> Option<&'static str> {
    if let [letter] = name.as_bytes() {
        // Compact forms (RFC 3261 §7.3.3 and later registrations).
        return match letter.to_ascii_lowercase() {
            b'i' => Some("Call-ID"),
            b'm' => Some("Contact"),
            b'e' => Some("Content-Encoding"),
            b'l' => Some("Content-Length"),
            b'c' => Some("Content-Type"),
            b'f' => Some("From"),
            b's' => Some("Subject"),
            b'k' => Some("Supported"),
            b't' => Some("To"),
            b'v' => Some("Via"),
            b'o' => Some("Event"),
            b'u' => Some("Allow-Events"),
            b'r' => Some("Refer-To"),
            b'b' => Some("Referred-By"),
            b'x' => Some("Session-Expires"),
            _ => None,
        };
    }
    let same_length: &[&'static str] = match name.len() {
        2 => &["To"],
        3 => &["Via"],
        4 => &["From", "CSeq"],
        5 => &["Event", "Route", "Allow"],
        6 => &["Accept", "Server"],
        7 => &[
            "Call-ID", "Contact", "Expires", "Require", "Warning", "Subject",
        ],
        8 => &["SIP-ETag", "Refer-To"],
        9 => &["Supported"],
        10 => &["User-Agent"],
        11 => &["Unsupported", "Min-Expires", "Retry-After", "Referred-By"],
        12 => &[
            "Max-Forwards",
            "Content-Type",
            "SIP-If-Match",
            "Record-Route",
            "Allow-Events",
        ],
        13 => &["Authorization"],
        14 => &["Content-Length"],
        15 => &["Session-Expires"],
        16 => &["Content-Encoding", "Content-Language", "WWW-Authenticate"],
        18 => &["Subscription-State", "Proxy-Authenticate"],
        19 => &["Proxy-Authorization"],
        _ => &[],
    };
    // Names usually arrive in their canonical spelling: an exact comparison first.
    same_length
        .iter()
        .find(|known| **known == name)
        .or_else(|| {
            same_length
                .iter()
                .find(|known| known.eq_ignore_ascii_case(name))
        })
        .copied()
}

/// Canonical spellings of the header names [`canonical_name`] knows (the lookup in
/// [`known_header_name`] lists them again by length; a test keeps the two in step).
#[cfg(test)]
const KNOWN_HEADER_NAMES: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Type",
    "Content-Length",
    "Event",
    "Subscription-State",
    "Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Route",
    "Record-Route",
    "Accept",
    "Allow",
    "Allow-Events",
    "Supported",
    "Require",
    "Unsupported",
    "Min-Expires",
    "Retry-After",
    "Content-Encoding",
    "Content-Language",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Authorization",
    "Proxy-Authorization",
    "User-Agent",
    "Server",
    "Warning",
    "Subject",
    "Refer-To",
    "Referred-By",
    "Session-Expires",
];

/// Headers whose rows are comma-separated lists that [`Headers::get_all`] splits
/// (canonical names; RFC 3261 §7.3.1 allows combining these).
pub fn is_list_header(canonical: &str) -> bool {
    matches!(
        canonical,
        "Via"
            | "Route"
            | "Record-Route"
            | "Contact"
            | "Accept"
            | "Allow"
            | "Allow-Events"
            | "Supported"
            | "Require"
            | "Unsupported"
            | "Proxy-Require"
            | "Content-Encoding"
            | "Content-Language"
            | "Path"
            | "Service-Route"
    )
}

/// An ordered header list. Names compare case-insensitively; order is kept because Via,
/// Route and Record-Route order is meaningful (RFC 3261 §7.3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(HeaderName, String)>);

/// A header name as stored: the canonical spelling of a well-known header is static, so
/// parsing a message allocates nothing for its names.
type HeaderName = Cow<'static, str>;

fn header_name(name: &str) -> HeaderName {
    match known_header_name(name) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(name.to_string()),
    }
}

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Headers(Vec::with_capacity(capacity))
    }

    /// Appends a header, canonicalising its name.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((header_name(name), value.into()));
    }

    /// Replaces every header of this name with one value, keeping the first position.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let canon = canonical_name(name);
        let value = value.into();
        match self
            .0
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(canon))
        {
            Some(i) => {
                self.0[i].1 = value;
                let mut j = i + 1;
                while j < self.0.len() {
                    if self.0[j].0.eq_ignore_ascii_case(canon) {
                        self.0.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.0.push((header_name(canon), value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let canon = canonical_name(name);
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(canon));
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        let canon = canonical_name(name);
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(canon))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order; comma-joined header rows are split into
    /// their elements except for headers whose values may contain commas themselves.
    /// Splitting (for the list headers in [`is_list_header`]) respects quoted strings
    /// and `<...>` (RFC 3261 §7.3.1), and elements are trimmed.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.elements(name).collect()
    }

    /// The first element of a header as [`Headers::get_all`] would list it (the top Via).
    pub fn first_element(&self, name: &str) -> Option<&str> {
        self.elements(name).next()
    }

    /// [`Headers::get_all`] without collecting.
    pub fn elements<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s str> + use<'s, 'n> {
        let canon = canonical_name(name);
        let split = is_list_header(canon);
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(canon))
            .flat_map(move |(_, v)| {
                let (whole, parts) = if split {
                    (None, Some(super::headers::unquoted_parts(v, ',')))
                } else {
                    (Some(v.as_str()), None)
                };
                whole.into_iter().chain(
                    parts
                        .into_iter()
                        .flatten()
                        .map(str::trim)
                        .filter(|e| !e.is_empty()),
                )
            })
    }

    /// Inserts a header before every other one (a new top Via, RFC 3261 §8.1.1.7).
    pub fn prepend(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(0, (header_name(name), value.into()));
    }

    /// Removes the first element of a header: the first comma-separated element when
    /// the first row holds several (a proxy popping its Via), else the whole first row.
    pub fn remove_first(&mut self, name: &str) {
        let canon = canonical_name(name);
        if let Some(i) = self
            .0
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(canon))
        {
            let parts = super::headers::split_unquoted(&self.0[i].1, ',');
            if is_list_header(canon) && parts.len() > 1 {
                let rest = parts[1..].join(",").trim().to_string();
                self.0[i].1 = rest;
            } else {
                self.0.remove(i);
            }
        }
    }

    pub fn count(&self, name: &str) -> usize {
        self.elements(name).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as text (`sip:ben@sip.example`).
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl Request {
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Serialises with CRLF line ends and a Content-Length matching the body
    /// (mandatory on stream transports, RFC 3261 §18.3).
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        write_message(start, &self.headers, &self.body)
    }
}

impl Response {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Response {
            status,
            reason: reason.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_message(start, &self.headers, &self.body)
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Starts a response to `request` for the TU (RFC 3261 §8.2.6.2): copies every Via (in
/// order, with the `received`/`rport` the transport added), From, To, Call-ID and CSeq.
/// The TU adds a To tag when the request's To has none (and the status is not 100),
/// plus any other header; the transaction layer's `respond` copies nothing itself.
pub fn response_to(request: &Request, status: u16, reason: &str) -> Response {
    let mut resp = Response::new(status, reason);
    for (name, value) in request.headers.iter() {
        if matches!(name, "Via" | "From" | "To" | "Call-ID" | "CSeq") {
            resp.headers.push(name, value);
        }
    }
    resp
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

fn write_message(start: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(start.len() + 64 * headers.len() + body.len() + 32);
    out.extend_from_slice(start.as_bytes());
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// The transport a message came in on or must leave by.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether the transport is reliable, which zeroes Timers J and K and stops
    /// retransmissions (RFC 3261 §17.1.2.2, §17.2.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

/// A remote SIP hop: where a message came from or goes to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.transport.as_str().to_ascii_lowercase(),
            self.addr
        )
    }
}

/// Adds `received` and fills `rport` in the top Via of a request that arrived from
/// `from` (RFC 3261 §18.2.1, RFC 3581 §4), so responses built with [`response_to`]
/// carry them and route back through NATs. `received` is added when the sent-by host
/// is not the source IP. An unparseable top Via is left alone (the engine answers 400).
pub fn stamp_via_received(request: &mut Request, from: Peer) {
    stamp_via_received_parsed(request, from, None)
}

/// [`stamp_via_received`] for a caller that has already parsed the top Via (what
/// [`super::headers::top_via`] returns for this request), so it is not parsed twice.
pub fn stamp_via_received_parsed(
    request: &mut Request,
    from: Peer,
    top: Option<super::headers::Via>,
) {
    let Some(pos) = request.headers.0.iter().position(|(n, _)| n == "Via") else {
        return;
    };
    let mut parts = super::headers::unquoted_parts(&request.headers.0[pos].1, ',');
    let Some(first) = parts.next() else { return };
    // A non-empty first element of the first Via row is the top Via.
    let parsed = match top {
        Some(via) if !first.trim().is_empty() => Ok(via),
        _ => super::headers::Via::parse(first),
    };
    let Ok(mut via) = parsed else {
        return;
    };
    let ip = from.addr.ip();
    let host_is_source = via.host.parse::<std::net::IpAddr>().is_ok_and(|h| h == ip);
    let wants_rport = via.params.get("rport") == Some(None);
    if host_is_source && !wants_rport {
        return;
    }
    // RFC 3581 §4: with rport, `received` is added even when it equals the sent-by.
    let mut value = String::with_capacity(39);
    super::headers::push_ip(&mut value, ip);
    via.params.set("received", Some(&value));
    if wants_rport {
        value.clear();
        super::headers::push_decimal(&mut value, u32::from(from.addr.port()));
        via.params.set("rport", Some(&value));
    }
    let mut new_row = String::with_capacity(request.headers.0[pos].1.len() + 32);
    via.write_to(&mut new_row);
    for rest in parts {
        new_row.push(',');
        new_row.push_str(rest);
    }
    request.headers.0[pos].1 = new_row;
}

/// The headers needed to answer a request that failed to parse (RFC 3261 §8.2.6.2),
/// read leniently by [`salvage_for_reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salvaged {
    /// The request method as written on the start line.
    pub method: String,
    /// Every Via value, top first (rows as received, not split).
    pub vias: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

impl Salvaged {
    /// The top Via value (the first row), for `TransactionLayer::respond_stateless`.
    pub fn top_via(&self) -> Option<&str> {
        self.vias.first().map(String::as_str)
    }

    /// A response carrying the salvaged Via, From, To, Call-ID and CSeq; the caller
    /// adds a To tag if it wants one.
    pub fn response(&self, status: u16, reason: &str) -> Response {
        let mut r = Response::new(status, reason);
        for v in &self.vias {
            r.headers.push("Via", v.clone());
        }
        r.headers.push("From", self.from.clone());
        r.headers.push("To", self.to.clone());
        r.headers.push("Call-ID", self.call_id.clone());
        r.headers.push("CSeq", self.cseq.clone());
        r
    }
}

/// Scans raw message bytes leniently (any line ending, invalid UTF-8 replaced, folded
/// lines joined, compact names understood) for the headers a 400/513 answer needs.
/// `None` when the bytes are a response (responses are never answered), an ACK (never
/// answered, RFC 3261 §17.1.1.3), or lack a start line, Via, From, To, Call-ID or CSeq.
/// Values holding control characters count as missing. Pure; never panics.
pub fn salvage_for_reply(raw: &[u8]) -> Option<Salvaged> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.by_ref().find(|l| !l.trim().is_empty())?;
    let start = start.trim();
    if start.starts_with("SIP/") {
        return None;
    }
    let method = start.split_whitespace().next()?.to_string();
    if method == "ACK" || !super::headers::is_token(&method) {
        return None;
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = rows.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            rows.push((canonical_header_name(n.trim()), v.trim().to_string()));
        }
    }
    let usable = |v: &str| !v.is_empty() && !v.chars().any(|c| c.is_control() && c != '\t');
    let first = |name: &str| {
        rows.iter()
            .find(|(n, v)| n == name && usable(v))
            .map(|(_, v)| v.clone())
    };
    let vias: Vec<String> = rows
        .iter()
        .filter(|(n, _)| n == "Via")
        .map(|(_, v)| v.clone())
        .collect();
    if vias.is_empty() || !vias.iter().all(|v| usable(v)) {
        return None;
    }
    Some(Salvaged {
        method,
        vias,
        from: first("From")?,
        to: first("To")?,
        call_id: first("Call-ID")?,
        cseq: first("CSeq")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_get_their_canonical_spelling_whatever_the_case_or_form() {
        for known in KNOWN_HEADER_NAMES {
            assert_eq!(canonical_name(&known.to_ascii_lowercase()), *known);
            assert_eq!(canonical_name(&known.to_ascii_uppercase()), *known);
        }
        for (compact, full) in [("i", "Call-ID"), ("V", "Via"), ("l", "Content-Length")] {
            assert_eq!(canonical_name(compact), full);
        }
        // Unknown names, and letters that are not compact forms, are kept as received.
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        assert_eq!(canonical_name("z"), "z");
        assert_eq!(canonical_name("Vias"), "Vias");
        let mut h = Headers::new();
        h.push("cSeQ", "1 NOTIFY");
        h.push("x-custom", "1");
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["CSeq", "x-custom"]);
        assert_eq!(h.get("X-CUSTOM"), Some("1"));
    }

    #[test]
    fn get_all_splits_list_headers_but_not_others() {
        let mut h = Headers::new();
        h.push(
            "Via",
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        );
        h.push("v", "SIP/2.0/UDP c;branch=z9hG4bK3");
        h.push("Contact", r#""Doe, J" <sip:a@b>, <sip:c@d>"#);
        h.push("WWW-Authenticate", r#"Digest realm="r", nonce="n""#);
        assert_eq!(h.get_all("Via").len(), 3);
        assert_eq!(h.get_all("Via")[1], "SIP/2.0/UDP b;branch=z9hG4bK2");
        assert_eq!(
            h.get_all("Contact"),
            vec![r#""Doe, J" <sip:a@b>"#, "<sip:c@d>"]
        );
        assert_eq!(h.count("WWW-Authenticate"), 1);
    }

    #[test]
    fn prepend_puts_the_header_first_and_remove_first_pops_one_element() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c");
        h.prepend("Via", "SIP/2.0/UDP a");
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP a"));
        h.remove_first("Via");
        h.remove_first("Via");
        assert_eq!(h.get_all("Via"), vec!["SIP/2.0/UDP c"]);
    }

    #[test]
    fn response_to_copies_the_dialog_headers_only() {
        let mut r = Request::new(Method::Notify, "sip:a@b");
        r.headers
            .push("Via", "SIP/2.0/UDP x;branch=z9hG4bK1;received=1.2.3.4");
        r.headers.push("Via", "SIP/2.0/UDP y;branch=z9hG4bK2");
        r.headers.push("From", "<sip:b@c>;tag=1");
        r.headers.push("To", "<sip:a@b>;tag=2");
        r.headers.push("Call-ID", "id");
        r.headers.push("CSeq", "7 NOTIFY");
        r.headers.push("Event", "presence");
        r.headers.push("Contact", "<sip:b@c>");
        let resp = response_to(&r, 200, "OK");
        assert_eq!(resp.status, 200);
        let names: Vec<&str> = resp.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
        assert_eq!(resp.headers.get("To"), Some("<sip:a@b>;tag=2"));
    }

    #[test]
    fn salvage_reads_compact_and_folded_headers() {
        let raw = b"SUBSCRIBE sip:a@b SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@y>\r\n ;tag=1\r\nt: <sip:a@b>\r\ni: cid\r\nCSeq: 1 SUBSCRIBE\r\nExpires: x\xff\r\n\r\nbody";
        let s = salvage_for_reply(raw).unwrap();
        assert_eq!(s.method, "SUBSCRIBE");
        assert_eq!(s.top_via(), Some("SIP/2.0/UDP h;branch=z9hG4bK1"));
        assert_eq!(s.from, "<sip:x@y> ;tag=1");
        assert_eq!(s.call_id, "cid");
        let r = s.response(400, "Bad Expires");
        assert_eq!(r.headers.get("CSeq"), Some("1 SUBSCRIBE"));
        assert_eq!(r.headers.len(), 5);
    }

    #[test]
    fn salvage_refuses_responses_acks_and_missing_essentials() {
        let full = "NOTIFY sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\n\r\n";
        assert!(salvage_for_reply(full.as_bytes()).is_some());
        assert!(salvage_for_reply(
            full.replace("NOTIFY sip", "SIP/2.0 200 OK\r\nX: sip")
                .as_bytes()
        )
        .is_none());
        assert!(salvage_for_reply(full.replace("NOTIFY sip", "ACK sip").as_bytes()).is_none());
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let cut: String = full
                .lines()
                .filter(|l| !l.starts_with(&format!("{h}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert!(salvage_for_reply(cut.as_bytes()).is_none(), "{h}");
        }
        assert!(salvage_for_reply(b"").is_none());
    }

    #[test]
    fn stamping_adds_received_and_fills_rport() {
        let mut r = Request::new(Method::Notify, "sip:a@b");
        r.headers.push(
            "Via",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP p;branch=z9hG4bK0",
        );
        let from = Peer {
            transport: Transport::Udp,
            addr: "192.0.2.1:4000".parse().unwrap(),
        };
        stamp_via_received(&mut r, from);
        assert_eq!(
            r.headers.get("Via"),
            Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=4000;received=192.0.2.1, SIP/2.0/UDP p;branch=z9hG4bK0")
        );
    }

    #[test]
    fn stamping_leaves_a_via_matching_the_source_alone() {
        let mut r = Request::new(Method::Notify, "sip:a@b");
        r.headers
            .push("Via", "SIP/2.0/UDP 192.0.2.1:4000;branch=z9hG4bK1");
        let before = r.clone();
        let from = Peer {
            transport: Transport::Udp,
            addr: "192.0.2.1:4000".parse().unwrap(),
        };
        stamp_via_received(&mut r, from);
        assert_eq!(r, before);
    }

    #[test]
    fn compact_names_equal_long_names() {
        let mut h = Headers::new();
        h.push("i", "abc@host");
        h.push("o", "presence");
        assert_eq!(h.get("Call-ID"), Some("abc@host"));
        assert_eq!(h.get("event"), Some("presence"));
    }

    #[test]
    fn serialised_request_carries_matching_content_length() {
        let mut r = Request::new(Method::Notify, "sip:a@b");
        r.headers.push("Content-Length", "999");
        r.body = b"hello".to_vec();
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("NOTIFY sip:a@b SIP/2.0\r\n"));
        assert!(text.contains("Content-Length: 5\r\n\r\nhello"));
        assert!(!text.contains("999"));
    }
}
