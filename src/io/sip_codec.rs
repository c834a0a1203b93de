//! SIP wire codec: bytes ⇄ the core's `SipMessage`, using rsipstack's parser (kept here,
//! behind `io`, per architecture.md) and a Content-Length framer for stream transports
//! (RFC 3261 §18.3).
//!
//! Owner: sip-stack. Signatures fixed here for the transport driver.
//!
//! # How rsipstack is used
//! The header section is parsed here, and rsipstack only validates the start line: its
//! URI parser reads a request's Request-URI (method and version are checked here first,
//! as its request-line parser does), its `parse_message` a response's status line
//! (version, status code). Converting rsipstack's parsed
//! message would lose information this gateway needs to answer correctly: its parser
//! silently skips header lines without a colon, stops reading headers at the first line
//! that is not UTF-8, reads a bad Content-Length as 0, truncates a body shorter than its
//! Content-Length without complaint, and rejects extension methods (which must reach
//! the core to be answered 501, RFC 3261 §8.2.1). Its headers are untyped strings, so
//! it validates nothing more than the start line anyway.
//!
//! On top of parsing, [`decode_message`] checks the headers every message must carry
//! (RFC 3261 §8.1.1: Via, From, To, Call-ID, CSeq) with the core's typed parsers, so a
//! message that reaches the core as `Input::Sip` can be matched to a transaction, and
//! stamps `received`/`rport` into a request's top Via (§18.2.1, RFC 3581).

use std::borrow::Cow;

use crate::core::engine::Input;
use crate::core::sip::headers::{has_control, top_via, CSeq, NameAddr, Via};
use crate::core::sip::message::stamp_via_received_parsed;
use crate::core::sip::{Headers, Method, Peer, Request, Response, SipMessage};

/// Turns one datagram (or one framed stream message) into an engine input:
/// `Input::Sip` when it parses, `Input::SipMalformed` when it does not,
/// `Input::SipOversized` when it exceeds `max_size`. Keep-alive CRLFs give `None`.
///
/// CRLFs before the start line are ignored (RFC 3261 §7.5). Bare-LF line ends are
/// tolerated. Without Content-Length the body is the rest of the datagram; with one, a
/// shorter body is malformed and extra bytes are discarded (§18.3).
pub fn decode_message(from: Peer, bytes: &[u8], max_size: usize) -> Option<Input> {
    let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    if bytes.len() > max_size {
        let head = match find_head_end(bytes) {
            Some((end, _)) => &bytes[..end.min(max_size)],
            None => &bytes[..max_size],
        };
        tracing::warn!(peer = %from, size = bytes.len(), max_size, "oversized SIP message");
        return Some(Input::SipOversized {
            from,
            head: head.to_vec(),
        });
    }
    match parse(&bytes[start..]) {
        Ok((mut message, top_via)) => {
            if let SipMessage::Request(r) = &mut message {
                stamp_via_received_parsed(r, from, Some(top_via));
            }
            Some(Input::Sip { from, message })
        }
        Err(error) => {
            tracing::info!(peer = %from, %error, "malformed SIP message");
            Some(Input::SipMalformed {
                from,
                raw: bytes.to_vec(),
                error,
            })
        }
    }
}

/// Finds the blank line ending the header section: `(head_end, body_start)`, where
/// `head_end` excludes the blank line. The first blank line wins, written CRLF CRLF or
/// bare LF LF. One memchr pass over the head: the body is never scanned.
fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    memchr::memchr_iter(b'\n', bytes).find_map(|k| {
        let next = &bytes[k + 1..];
        if next.first() == Some(&b'\n') {
            Some((k, k + 2))
        } else if k > 0 && bytes[k - 1] == b'\r' && next.starts_with(b"\r\n") {
            Some((k - 1, k + 3))
        } else {
            None
        }
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Parses one message; the error names the problem in a few words (it may end up in a
/// 400 reason phrase, so it carries no raw input beyond short tokens).
/// The message's top Via comes back parsed with it.
fn parse(bytes: &[u8]) -> Result<(SipMessage, Via), String> {
    let (head_end, body_start) = find_head_end(bytes).ok_or("no blank line after the headers")?;
    let head =
        std::str::from_utf8(&bytes[..head_end]).map_err(|_| "header section is not UTF-8")?;
    let mut lines = head_lines(head);
    let start_line = lines.next().ok_or("empty message")?;
    if has_control(start_line) {
        return Err("control character in the start line".into());
    }

    // Values borrow from the datagram until a folded line (RFC 3261 §7.3.1) extends them.
    let mut headers = Headers::with_capacity(16);
    let mut pending: Option<(&str, Cow<str>)> = None;
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Folded continuation: joins the previous value.
            let (_, v) = pending
                .as_mut()
                .ok_or("continuation line before any header")?;
            let v = v.to_mut();
            v.push(' ');
            v.push_str(line.trim_matches([' ', '\t']));
            continue;
        }
        if let Some((n, v)) = pending.take() {
            headers.push(n, v.into_owned());
        }
        let colon = line
            .bytes()
            .position(|b| b == b':')
            .ok_or("header line without a colon")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // Only SP and HTAB are linear white space (RFC 3261 §25.1): other white space at
        // the edges stays in the value, and control characters are refused below.
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err("bad header name".into());
        }
        pending = Some((name, Cow::Borrowed(value.trim_matches([' ', '\t']))));
    }
    if let Some((n, v)) = pending.take() {
        headers.push(n, v.into_owned());
    }
    if headers.iter().any(|(_, v)| has_control(v)) {
        return Err("control character in a header value".into());
    }

    let rest = &bytes[body_start..];
    let body = match content_length(&headers)? {
        Some(len) if len > rest.len() => return Err("body shorter than Content-Length".into()),
        Some(len) => rest[..len].to_vec(),
        None => rest.to_vec(),
    };

    let message = if let Some(status_line) = start_line.strip_prefix("SIP/") {
        parse_status_line(start_line, status_line, headers, body)?
    } else {
        parse_request_line(start_line, headers, body)?
    };
    let top_via = check_mandatory(&message)?;
    Ok((message, top_via))
}

/// The lines of a header section, split at LF with a CR before it dropped (bare-LF line
/// ends are tolerated, RFC 3261 §7.5 asks for CRLF).
fn head_lines(head: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', head.as_bytes())
        .chain(std::iter::once(head.len()))
        .map(move |end| {
            let line = &head[start..end];
            start = end + 1;
            line.strip_suffix('\r').unwrap_or(line)
        })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn content_length(headers: &Headers) -> Result<Option<usize>, String> {
    let mut found: Option<usize> = None;
    for v in headers.elements("Content-Length") {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err("bad Content-Length".into());
        }
        let n = v.parse::<usize>().map_err(|_| "bad Content-Length")?;
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length headers".into());
        }
        found = Some(n);
    }
    Ok(found)
}

fn parse_request_line(line: &str, headers: Headers, body: Vec<u8>) -> Result<SipMessage, String> {
    let mut parts = line.split(' ');
    let (method, uri, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v), None) => (m, u, v),
        _ => return Err("bad request line".into()),
    };
    if !is_token(method) {
        return Err("bad method".into());
    }
    if version != "SIP/2.0" {
        return Err("unsupported SIP version".into());
    }
    let method = Method::parse(method);
    // rsipstack validates the Request-URI (its request-line parser does exactly this
    // after the method and version checks above; called directly, no message is built).
    if let Err(e) = rsipstack::sip::uri::parse_uri(uri) {
        tracing::debug!(error = %e, "rsipstack rejected the Request-URI");
        return Err("bad Request-URI".into());
    }
    Ok(SipMessage::Request(Request {
        method,
        uri: uri.to_string(),
        headers,
        body,
    }))
}

fn parse_status_line(
    line: &str,
    after_sip: &str,
    headers: Headers,
    body: Vec<u8>,
) -> Result<SipMessage, String> {
    let mut parts = after_sip.splitn(3, ' ');
    let (version, code, reason) = match (parts.next(), parts.next(), parts.next()) {
        (Some(v), Some(c), r) => (v, c, r.unwrap_or("")),
        _ => return Err("bad status line".into()),
    };
    if version != "2.0" {
        return Err("unsupported SIP version".into());
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad status code".into());
    }
    let status: u16 = code.parse().map_err(|_| "bad status code")?;
    if !(100..700).contains(&status) {
        return Err("status code out of range".into());
    }
    let mut probe = String::with_capacity(line.len() + 4);
    probe.push_str(line);
    probe.push_str("\r\n\r\n");
    if let Err(e) = rsipstack::sip::parser::parse_message(probe.as_bytes()) {
        tracing::debug!(error = %e, "rsipstack rejected the status line");
        return Err("bad status line".into());
    }
    Ok(SipMessage::Response(Response {
        status,
        reason: reason.trim().to_string(),
        headers,
        body,
    }))
}

/// RFC 3261 §8.1.1: Via, From, To, Call-ID and CSeq are mandatory, and From/To/Call-ID/
/// CSeq appear once. A request's CSeq method must be its own method (§8.2 / §20.16).
/// Gives back the parsed top Via.
fn check_mandatory(message: &SipMessage) -> Result<Via, String> {
    let h = message.headers();
    let via = top_via(h).map_err(|e| e.to_string())?;
    // One pass over the rows: known names are stored in their canonical spelling, and
    // none of these four is a list header, so a row is one value.
    const ONCE: [&str; 4] = ["From", "To", "Call-ID", "CSeq"];
    let mut values: [Option<&str>; 4] = [None; 4];
    for (name, value) in h.iter() {
        if let Some(i) = ONCE.iter().position(|n| *n == name) {
            if values[i].replace(value).is_some() {
                return Err(format!("more than one {} header", ONCE[i]));
            }
        }
    }
    let [from, to, call_id, cseq] = match values {
        [Some(f), Some(t), Some(i), Some(c)] => [f, t, i, c],
        _ => {
            let i = values.iter().position(Option::is_none).unwrap_or(0);
            return Err(format!("missing {} header", ONCE[i]));
        }
    };
    NameAddr::parse("From", from).map_err(|e| e.to_string())?;
    NameAddr::parse("To", to).map_err(|e| e.to_string())?;
    if call_id.trim().is_empty() {
        return Err("empty Call-ID header".into());
    }
    let cseq = CSeq::parse(cseq).map_err(|e| e.to_string())?;
    if let SipMessage::Request(r) = message {
        if cseq.method != r.method {
            return Err("CSeq method does not match the request method".into());
        }
    }
    Ok(via)
}

/// Splits a TCP byte stream into messages by Content-Length.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

/// One item cut from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete message (head and body).
    Message(Vec<u8>),
    /// The head or announced body exceeds the limit; the connection should be closed
    /// after answering (the head is given for a 513 answer).
    Oversized(Vec<u8>),
    /// Framing is impossible (no or bad Content-Length on a stream): close the connection.
    Broken(String),
}

impl StreamFramer {
    pub fn new() -> Self {
        StreamFramer { buf: Vec::new() }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet cut.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Cuts the next complete item, if any.
    ///
    /// Leading CRLFs (RFC 5626 keep-alives, RFC 3261 §7.5) are skipped. The head ends at
    /// CRLF CRLF; Content-Length (or `l`) is mandatory on streams (§18.3). A head longer
    /// than `max_size`, or a head plus announced body longer than it, gives `Oversized`
    /// at once (without waiting for the body) and discards the buffer, since the stream
    /// cannot be resynchronised; so does `Broken`.
    pub fn next_item(&mut self, max_size: usize) -> Option<Framed> {
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.buf.drain(..skip);
        if self.buf.is_empty() {
            return None;
        }
        let Some(sep) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > max_size {
                let head = self.buf[..max_size].to_vec();
                self.buf.clear();
                return Some(Framed::Oversized(head));
            }
            return None;
        };
        let head_len = sep + 4;
        if head_len > max_size {
            let head = self.buf[..sep.min(max_size)].to_vec();
            self.buf.clear();
            return Some(Framed::Oversized(head));
        }
        let body_len = match stream_content_length(&self.buf[..sep]) {
            Ok(n) => n,
            Err(e) => {
                self.buf.clear();
                return Some(Framed::Broken(e));
            }
        };
        let total = match head_len.checked_add(body_len) {
            Some(t) if t <= max_size => t,
            _ => {
                let head = self.buf[..head_len].to_vec();
                self.buf.clear();
                return Some(Framed::Oversized(head));
            }
        };
        if self.buf.len() < total {
            return None;
        }
        let message: Vec<u8> = self.buf.drain(..total).collect();
        Some(Framed::Message(message))
    }
}

/// Reads Content-Length (or compact `l`) from a raw head, bytewise so a non-UTF-8 head
/// still frames (decode_message then reports it).
fn stream_content_length(head: &[u8]) -> Result<usize, String> {
    let mut found: Option<usize> = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
            return Err("bad Content-Length on a stream".into());
        }
        let n: usize = value
            .iter()
            .fold(0, |acc, d| acc * 10 + usize::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length on a stream".into());
        }
        found = Some(n);
    }
    found.ok_or_else(|| "no Content-Length on a stream".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The blank line that ends a head, found the slow obvious way: the first CRLF CRLF,
    /// unless a bare LF LF comes earlier.
    fn head_end_by_search(bytes: &[u8]) -> Option<(usize, usize)> {
        let at = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle);
        match (at(b"\r\n\r\n"), at(b"\n\n")) {
            (Some(i), Some(j)) if j < i => Some((j, j + 2)),
            (Some(i), _) => Some((i, i + 4)),
            (None, Some(j)) => Some((j, j + 2)),
            (None, None) => None,
        }
    }

    proptest! {
        #[test]
        fn head_end_is_the_first_blank_line_in_either_form(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..40)
        ) {
            prop_assert_eq!(find_head_end(&bytes), head_end_by_search(&bytes));
        }
    }

    #[test]
    fn head_lines_split_at_lf_and_drop_the_cr() {
        let lines: Vec<&str> = head_lines("A\r\nB\nC\r\n").collect();
        assert_eq!(lines, vec!["A", "B", "C", ""]);
        assert_eq!(head_lines("").collect::<Vec<_>>(), vec![""]);
    }

    #[test]
    fn head_end_prefers_an_earlier_bare_lf_blank_line() {
        assert_eq!(find_head_end(b"A\n\nB\r\n\r\n"), Some((1, 3)));
        assert_eq!(find_head_end(b"A\r\n\r\nB\n\n"), Some((1, 5)));
        assert_eq!(find_head_end(b"A\n\r\nB"), None);
    }
}
