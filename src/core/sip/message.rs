//! The core's own SIP message vocabulary (RFC 3261 §7).
//!
//! Drivers turn wire bytes into these types (with rsipstack's parser, see `io::sip_codec`)
//! and the core turns them back into bytes with [`SipMessage::to_bytes`]. Header values
//! are kept as text; typed views of the values the presence machinery needs live in
//! [`super::headers`]. Header names are stored in canonical long form, so the compact
//! forms (RFC 3261 §7.3.3, RFC 6665 `o`/`u`) are equal to their long names here.

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
    let lower = name.to_ascii_lowercase();
    let canon = match lower.as_str() {
        "i" | "call-id" => "Call-ID",
        "m" | "contact" => "Contact",
        "e" | "content-encoding" => "Content-Encoding",
        "l" | "content-length" => "Content-Length",
        "c" | "content-type" => "Content-Type",
        "f" | "from" => "From",
        "s" | "subject" => "Subject",
        "k" | "supported" => "Supported",
        "t" | "to" => "To",
        "v" | "via" => "Via",
        "o" | "event" => "Event",
        "u" | "allow-events" => "Allow-Events",
        "r" | "refer-to" => "Refer-To",
        "b" | "referred-by" => "Referred-By",
        "x" | "session-expires" => "Session-Expires",
        "cseq" => "CSeq",
        "max-forwards" => "Max-Forwards",
        "expires" => "Expires",
        "min-expires" => "Min-Expires",
        "subscription-state" => "Subscription-State",
        "sip-etag" => "SIP-ETag",
        "sip-if-match" => "SIP-If-Match",
        "accept" => "Accept",
        "allow" => "Allow",
        "route" => "Route",
        "record-route" => "Record-Route",
        "retry-after" => "Retry-After",
        "content-language" => "Content-Language",
        "www-authenticate" => "WWW-Authenticate",
        "proxy-authenticate" => "Proxy-Authenticate",
        "authorization" => "Authorization",
        "proxy-authorization" => "Proxy-Authorization",
        "user-agent" => "User-Agent",
        "server" => "Server",
        "require" => "Require",
        "unsupported" => "Unsupported",
        "warning" => "Warning",
        _ => return name.to_string(),
    };
    canon.to_string()
}

/// An ordered header list. Names compare case-insensitively; order is kept because Via,
/// Route and Record-Route order is meaningful (RFC 3261 §7.3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header, canonicalising its name.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((canonical_header_name(name), value.into()));
    }

    /// Replaces every header of this name with one value, keeping the first position.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let canon = canonical_header_name(name);
        let value = value.into();
        match self
            .0
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&canon))
        {
            Some(i) => {
                self.0[i].1 = value;
                let mut j = i + 1;
                while j < self.0.len() {
                    if self.0[j].0.eq_ignore_ascii_case(&canon) {
                        self.0.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.0.push((canon, value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let canon = canonical_header_name(name);
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(&canon));
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        let canon = canonical_header_name(name);
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&canon))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order; comma-joined header rows are split into
    /// their elements except for headers whose values may contain commas themselves.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let canon = canonical_header_name(name);
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&canon))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
