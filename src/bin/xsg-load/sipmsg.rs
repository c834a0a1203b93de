//! A deliberately small SIP message reader and writer for the load tool's user agents.
//!
//! The tool must be able to measure *any* gateway, so it does not reuse the gateway's own
//! parser: a shared bug would hide itself. It reads the start line, the header fields
//! (compact forms expanded, RFC 3261 §7.3.3) and a body bounded by Content-Length
//! (§18.3), and writes requests and responses with CRLF line ends.

use std::fmt::Write as _;

/// The start line of a message (RFC 3261 §7.1, §7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Request { method: String, uri: String },
    Response { status: u16, reason: String },
}

/// One parsed SIP message. Header names are stored in their long form, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub start: Start,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Expands a compact header name (RFC 3261 §7.3.3, RFC 6665 §8.2.1 for `o`).
fn long_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let long = match lower.as_str() {
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "l" => "content-length",
        "c" => "content-type",
        "m" => "contact",
        "o" => "event",
        "e" => "content-encoding",
        "k" => "supported",
        "s" => "subject",
        "u" => "allow-events",
        _ => return lower,
    };
    long.to_string()
}

impl Msg {
    /// Parses one datagram. Errors are short descriptions; the caller counts them.
    pub fn parse(bytes: &[u8]) -> Result<Msg, String> {
        let start_at = bytes
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .ok_or("empty datagram")?;
        let bytes = &bytes[start_at..];
        let (head_len, sep_len) = find_head_end(bytes).ok_or("no end of header section")?;
        let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| "header not UTF-8")?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().ok_or("no start line")?;
        let start = parse_start(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Header folding (RFC 3261 §7.3.1): continue the previous value.
                let last = headers
                    .last_mut()
                    .ok_or("continuation line before any header")?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':').ok_or("header line without colon")?;
            headers.push((long_name(name), value.trim().to_string()));
        }
        let rest = &bytes[head_len + sep_len..];
        let body = match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, v)) => {
                let len: usize = v.trim().parse().map_err(|_| "bad Content-Length")?;
                if rest.len() < len {
                    return Err("body shorter than Content-Length".into());
                }
                rest[..len].to_vec()
            }
            None => rest.to_vec(),
        };
        Ok(Msg {
            start,
            headers,
            body,
        })
    }

    /// The first value of a header, by long or compact name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = long_name(name);
        self.headers
            .iter()
            .find(|(n, _)| *n == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order (comma-separated lists are not split).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let want = long_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            Start::Request { uri, .. } => Some(uri),
            Start::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            Start::Response { status, .. } => Some(*status),
            Start::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    /// `CSeq: 12 NOTIFY` → `(12, "NOTIFY")`.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("cseq")?;
        let (n, m) = v.trim().split_once(char::is_whitespace)?;
        Some((n.parse().ok()?, m.trim()))
    }

    /// The `expires=` of a Subscription-State, or the Expires header.
    pub fn expires(&self) -> Option<u32> {
        self.header("expires").and_then(|v| v.trim().parse().ok())
    }
}

fn parse_start(line: &str) -> Result<Start, String> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code.parse().map_err(|_| "bad status code")?;
        if !(100..700).contains(&status) {
            return Err("status code out of range".into());
        }
        return Ok(Start::Response {
            status,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let method = parts.next().filter(|m| !m.is_empty()).ok_or("no method")?;
    let uri = parts
        .next()
        .filter(|u| !u.is_empty())
        .ok_or("no Request-URI")?;
    if parts.next() != Some("SIP/2.0") {
        return Err("not SIP/2.0".into());
    }
    Ok(Start::Request {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, 4));
    }
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2))
}

/// The `tag` parameter of a From/To value (outside the `<…>` URI).
pub fn tag_of(name_addr: &str) -> Option<&str> {
    let params = match name_addr.rfind('>') {
        Some(i) => &name_addr[i + 1..],
        None => name_addr.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("tag"))
        .map(|(_, v)| v.trim())
}

/// The URI of a name-addr (`"Bob" <sip:b@x>;tag=1` → `sip:b@x`) or addr-spec.
pub fn uri_of(name_addr: &str) -> &str {
    if let (Some(a), Some(b)) = (name_addr.find('<'), name_addr.find('>')) {
        if a < b {
            return name_addr[a + 1..b].trim();
        }
    }
    name_addr.split(';').next().unwrap_or("").trim()
}

/// The user part of a SIP URI (`sip:p12@sip.test;x=y` → `p12`).
pub fn user_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(';').next().unwrap_or(user))
}

/// Reads `prefix` + decimal index from a user part (`p12` with `p` → 12).
pub fn index_of(user: &str, prefix: &str) -> Option<usize> {
    user.strip_prefix(prefix)?.parse().ok()
}

/// A value of one `;name=value` parameter of a header such as Subscription-State.
pub fn param_of<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Serialises a message: start line, the given headers in order, Content-Length, body.
pub fn build(start: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = String::with_capacity(512 + body.len());
    head.push_str(start);
    head.push_str("\r\n");
    for (n, v) in headers {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response to `req` (RFC 3261 §8.2.6.2): copies every Via, From, To (adding `to_tag`
/// when the request's To has none), Call-ID and CSeq, then `extra` headers.
pub fn response(
    req: &Msg,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut headers: Vec<(&str, String)> = Vec::new();
    for v in req.header_all("via") {
        headers.push(("Via", v.to_string()));
    }
    if let Some(f) = req.header("from") {
        headers.push(("From", f.to_string()));
    }
    if let Some(t) = req.header("to") {
        let t = match (tag_of(t), to_tag) {
            (None, Some(tag)) => format!("{t};tag={tag}"),
            _ => t.to_string(),
        };
        headers.push(("To", t));
    }
    if let Some(c) = req.header("call-id") {
        headers.push(("Call-ID", c.to_string()));
    }
    if let Some(c) = req.header("cseq") {
        headers.push(("CSeq", c.to_string()));
    }
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    all.extend_from_slice(extra);
    build(&format!("SIP/2.0 {status} {reason}"), &all, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &[u8] = b"NOTIFY sip:w3@127.0.0.1:5090 SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\n\
f: <sip:u3@xmpp.test>;tag=gw1\r\n\
t: <sip:w3@sip.test>;tag=w3t\r\n\
i: s2x-3-1@load\r\n\
CSeq: 2 NOTIFY\r\n\
o: presence\r\n\
Subscription-State: active;expires=599\r\n\
l: 5\r\n\r\nhelloEXTRA";

    #[test]
    fn compact_headers_are_expanded() {
        let m = Msg::parse(NOTIFY).expect("parses");
        assert_eq!(m.call_id(), Some("s2x-3-1@load"));
        assert_eq!(m.header("Event"), Some("presence"));
        assert_eq!(m.header_all("via").len(), 2);
    }

    #[test]
    fn body_is_bounded_by_content_length() {
        let m = Msg::parse(NOTIFY).expect("parses");
        assert_eq!(m.body, b"hello");
    }

    #[test]
    fn short_body_is_an_error() {
        let raw = b"NOTIFY sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc";
        assert!(Msg::parse(raw).is_err());
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_to_tag() {
        let raw = b"SUBSCRIBE sip:p1@sip.test SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\
From: <sip:x1@xmpp.test>;tag=f1\r\nTo: <sip:p1@sip.test>\r\nCall-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\n\r\n";
        let req = Msg::parse(raw).expect("parses");
        let resp = Msg::parse(&response(&req, 200, "OK", Some("t9"), &[("Expires", "60")]))
            .expect("response parses");
        assert_eq!(resp.status(), Some(200));
        assert_eq!(resp.header("to").and_then(tag_of), Some("t9"));
        assert_eq!(resp.cseq(), Some((1, "SUBSCRIBE")));
        assert_eq!(resp.expires(), Some(60));
    }

    #[test]
    fn uri_helpers_extract_user_index_and_params() {
        assert_eq!(
            uri_of("\"P\" <sip:p12@sip.test;gr=x>;tag=a"),
            "sip:p12@sip.test;gr=x"
        );
        assert_eq!(user_of("sip:p12@sip.test"), Some("p12"));
        assert_eq!(index_of("p12", "p"), Some(12));
        assert_eq!(index_of("q12", "p"), None);
        assert_eq!(param_of("active;expires=30", "expires"), Some("30"));
        assert_eq!(tag_of("<sip:a@b>;tag=xyz"), Some("xyz"));
        assert_eq!(tag_of("<sip:a@b;tag=no>"), None);
    }
}
