//! Typed views of the header values the presence machinery reads and writes.
//!
//! Owner: sip-stack. Signatures fixed here; bodies filled by the sip-stack work.
//! Every parser returns a [`HeaderError`] naming the header and the problem, which the
//! engine turns into `400 Bad <Header>` (RFC 3261 §21.4.1).

use std::fmt;

use super::message::Method;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad {header} header: {detail}")]
pub struct HeaderError {
    pub header: &'static str,
    pub detail: String,
}

/// Generic `;name[=value]` parameters, order kept, names compared case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn set(&mut self, name: &str, value: Option<&str>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value.map(str::to_string),
            None => self.0.push((name.to_string(), value.map(str::to_string))),
        }
    }

    /// Removes every parameter of this name.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `name[=value]` items separated by `;` (the text *after* the first `;`).
    /// Whitespace around names, `=` and values is dropped (RFC 3261 §7.3.1 allows LWS
    /// around SEMI and EQUAL); values are kept verbatim, quotes included, so they print
    /// back unchanged. Empty items (`;;`, a trailing `;`) are skipped.
    pub fn parse(text: &str) -> Params {
        let mut out = Vec::new();
        for item in unquoted_parts(text, ';') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((n, v)) => out.push((n.trim().to_string(), Some(v.trim().to_string()))),
                None => out.push((item.to_string(), None)),
            }
        }
        Params(out)
    }
}

impl Params {
    /// Appends `;name=value;flag` (nothing when there are none): the [`fmt::Display`]
    /// form, without the formatting machinery (this runs per received request).
    pub fn write_to(&self, out: &mut String) {
        for (n, v) in &self.0 {
            out.push(';');
            out.push_str(n);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
        }
    }
}

impl fmt::Display for Params {
    /// Writes `;name=value;flag` (empty when there are none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_to(&mut out);
        f.write_str(&out)
    }
}

/// Whether `s` holds a control character other than tab (what `char::is_control` finds:
/// C0, DEL and the C1 range U+0080–U+009F, which UTF-8 writes as 0xC2 0x80–0x9F).
/// Checked bytewise, with a branch-free pass first that clears the usual printable
/// ASCII text at once.
pub(crate) fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    let suspicious = b.iter().fold(false, |acc, &c| {
        acc | ((c < 0x20 && c != b'\t') || c >= 0x7f)
    });
    suspicious
        && b.iter().enumerate().any(|(i, &c)| {
            (c < 0x20 && c != b'\t')
                || c == 0x7f
                || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
        })
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[i..] {
        out.push(char::from(*d));
    }
}

/// Appends an IP address as `Display` writes it (IPv6 unbracketed).
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, u32::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

fn err(header: &'static str, detail: impl Into<String>) -> HeaderError {
    HeaderError {
        header,
        detail: detail.into(),
    }
}

/// Splits `text` at `sep` where it is outside a quoted string (with `\` escapes) and
/// outside `<...>`, so commas or semicolons inside a display name or a bracketed URI do
/// not split (RFC 3261 §7.3.1, §25.1).
pub(crate) fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    unquoted_parts(text, sep).collect()
}

/// [`split_unquoted`] as an iterator, for callers that want the first part only or do
/// not keep the list. `sep` must be ASCII (every SIP list separator is).
pub(crate) fn unquoted_parts(text: &str, sep: char) -> UnquotedParts<'_> {
    debug_assert!(sep.is_ascii());
    UnquotedParts {
        rest: Some(text),
        sep: sep as u8,
    }
}

/// Iterator behind [`unquoted_parts`]. It scans bytes: every delimiter is ASCII and
/// UTF-8 continuation bytes are never ASCII, so each cut falls on a char boundary.
pub(crate) struct UnquotedParts<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for UnquotedParts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        let b = text.as_bytes();
        // Jumps from one delimiter to the next with memchr: outside quotes and brackets
        // only `"`, `<` and the separator matter; inside `<...>` only `>`; inside a quoted
        // string only `\\` (which skips the next byte) and the closing `"`.
        let mut i = 0;
        while let Some(at) = memchr::memchr3(b'"', b'<', self.sep, &b[i..]) {
            let at = i + at;
            match b[at] {
                b'<' => match memchr::memchr(b'>', &b[at + 1..]) {
                    Some(close) => i = at + 1 + close + 1,
                    None => break,
                },
                b'"' => {
                    let mut q = at + 1;
                    loop {
                        match memchr::memchr2(b'"', b'\\', &b[q..]) {
                            Some(k) if b[q + k] == b'\\' => q += k + 2,
                            Some(k) => {
                                q += k + 1;
                                break;
                            }
                            None => {
                                q = b.len();
                                break;
                            }
                        }
                        if q >= b.len() {
                            break;
                        }
                    }
                    i = q;
                }
                _ => {
                    self.rest = Some(&text[at + 1..]);
                    return Some(&text[..at]);
                }
            }
            if i >= b.len() {
                break;
            }
        }
        self.rest = None;
        Some(text)
    }
}

/// `token` characters (RFC 3261 §25.1).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Reads a quoted string at the start of `s` (which must begin with `"`), returning the
/// unescaped content and the rest after the closing quote.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some((out, &s[i + 1..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// Splits a value at its first top-level `;` into the head and the parameters after it.
fn head_and_params(s: &str) -> (&str, Params) {
    let head = unquoted_parts(s, ';').next().unwrap_or("");
    let rest = &s[head.len()..];
    let rest = rest.strip_prefix(';').unwrap_or(rest);
    (head, Params::parse(rest))
}

/// `name-addr` / `addr-spec` with header parameters: From, To, Contact, Route, Record-Route
/// (RFC 3261 §20.10, §25.1). `uri` excludes the angle brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: impl Into<String>) -> Self {
        NameAddr {
            display: None,
            uri: uri.into(),
            params: Params::default(),
        }
    }

    /// Parses one `name-addr` or `addr-spec` with header parameters (RFC 3261 §20.10):
    /// `"Display Name" <sip:u@h;uriparam>;tag=x`, `Name <sip:u@h>`, or `sip:u@h;tag=x`.
    /// In the addr-spec form everything after the first `;` is a *header* parameter,
    /// so the URI never carries parameters there.
    pub fn parse(header: &'static str, value: &str) -> Result<Self, HeaderError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(err(header, "empty value"));
        }
        if has_control(v) {
            return Err(err(header, "control character"));
        }
        let (display, rest) = if v.starts_with('"') {
            let (d, rest) =
                take_quoted(v).ok_or_else(|| err(header, "unterminated quoted display name"))?;
            let rest = rest.trim_start();
            if !rest.starts_with('<') {
                return Err(err(header, "quoted display name not followed by <uri>"));
            }
            // A tab inside qdtext is linear white space: read it as a space, the form
            // this type writes back (control characters are never written).
            (Some(d.replace('\t', " ")), rest)
        } else if let Some(lt) = v.find('<') {
            let d = v[..lt].trim();
            if d.contains(['>', '"', ';', ',']) {
                return Err(err(header, "bad display name"));
            }
            (
                if d.is_empty() {
                    None
                } else {
                    // Tokens separated by LWS (RFC 3261 §25.1): one space each.
                    Some(d.split_whitespace().collect::<Vec<_>>().join(" "))
                },
                &v[lt..],
            )
        } else {
            (None, v)
        };

        let (uri, params_text) = if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or_else(|| err(header, "missing '>'"))?;
            let after = inner[gt + 1..].trim_start();
            if !after.is_empty() && !after.starts_with(';') {
                return Err(err(header, "unexpected text after '>'"));
            }
            (inner[..gt].trim(), after.strip_prefix(';').unwrap_or(""))
        } else {
            // addr-spec: header params follow the first ';' (RFC 3261 §20.10).
            let (u, p) = match rest.find(';') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            if u.contains(char::is_whitespace) || u.contains(['>', '"', ',']) {
                return Err(err(header, "bad addr-spec"));
            }
            (u.trim(), p)
        };
        if uri.is_empty() {
            return Err(err(header, "empty URI"));
        }
        match uri.split_once(':') {
            Some((scheme, rest))
                if !scheme.is_empty()
                    && !rest.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) => {}
            _ => return Err(err(header, format!("URI without a scheme: {uri}"))),
        }
        let params = Params::parse(params_text);
        if params.0.iter().any(|(n, _)| !is_token(n)) {
            return Err(err(header, "bad parameter name"));
        }
        Ok(NameAddr {
            display,
            uri: uri.to_string(),
            params,
        })
    }

    /// Parses a comma-separated list (Contact, Route, Record-Route), respecting quotes and <>.
    /// Empty elements (`a, ,b`) are skipped; an empty value is an error.
    pub fn parse_list(header: &'static str, value: &str) -> Result<Vec<Self>, HeaderError> {
        let out = split_unquoted(value, ',')
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| NameAddr::parse(header, p))
            .collect::<Result<Vec<_>, _>>()?;
        if out.is_empty() {
            return Err(err(header, "empty value"));
        }
        Ok(out)
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    pub fn with_tag(mut self, tag: &str) -> Self {
        self.params.set("tag", Some(tag));
        self
    }
}

impl fmt::Display for NameAddr {
    /// Always writes the `<uri>` form, so URI parameters never bind to the header.
    /// A display name is written as a quoted string with `"` and `\` escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            f.write_str("\"")?;
            // Control characters are dropped so a display name taken from elsewhere
            // (an XMPP nickname) can never break the header line.
            for c in d.chars().filter(|c| !c.is_control()) {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A Via's `sent-protocol LWS sent-by` with the LWS RFC 3261 §20.42 allows collapsed:
/// `SIP / 2.0 / UDP  host` becomes `SIP/2.0/UDP host`. The usual head, already in that
/// form, is borrowed as is.
fn compact_via_head(head: &str) -> std::borrow::Cow<'_, str> {
    let b = head.as_bytes();
    let mut spaces = b
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_ascii_whitespace());
    if let (Some((i, b' ')), None) = (spaces.next(), spaces.next()) {
        if head.is_ascii() && i > 0 && b[i - 1] != b'/' && b.get(i + 1).is_some_and(|c| *c != b'/')
        {
            return std::borrow::Cow::Borrowed(head);
        }
    }
    std::borrow::Cow::Owned(collapse_via_head(head))
}

/// [`compact_via_head`] without its fast path: every run of white space is dropped next to
/// a `/` and becomes one space elsewhere.
fn collapse_via_head(head: &str) -> String {
    let mut compact = String::with_capacity(head.len());
    let mut pending_space = false;
    for c in head.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && c != '/' && !compact.ends_with('/') {
            compact.push(' ');
        }
        pending_space = false;
        compact.push(c);
    }
    compact
}

/// One Via entry (RFC 3261 §20.42).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`…
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// Parses one via-parm: `SIP/2.0/UDP host[:port][;params]` (RFC 3261 §20.42), with
    /// LWS tolerated around the slashes and IPv6 references (`[2001:db8::1]:5060`,
    /// RFC 5118). The host is stored without brackets; the transport is uppercased.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        const H: &str = "Via";
        let (head, params) = head_and_params(value.trim());
        let compact = compact_via_head(head.trim());
        let (protocol, sent_by) = compact
            .split_once(' ')
            .ok_or_else(|| err(H, "missing sent-by"))?;
        let mut proto = protocol.split('/');
        let (name, version, transport) =
            match (proto.next(), proto.next(), proto.next(), proto.next()) {
                (Some(n), Some(v), Some(t), None) => (n, v, t),
                _ => return Err(err(H, format!("bad sent-protocol {protocol}"))),
            };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || !is_token(transport) {
            return Err(err(H, format!("bad sent-protocol {protocol}")));
        }
        if sent_by.contains(' ') {
            return Err(err(H, "unexpected text after sent-by"));
        }
        let (host, port) = parse_host_port(sent_by).map_err(|d| err(H, d))?;
        for name in ["branch", "received", "rport", "ttl", "maddr"] {
            if let Some(Some(v)) = params.get(name) {
                if v.is_empty() {
                    return Err(err(H, format!("empty {name} parameter")));
                }
            }
        }
        if let Some(Some(rport)) = params.get("rport") {
            rport.parse::<u16>().map_err(|_| err(H, "bad rport"))?;
        }
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    /// Parses a Via row that may hold several comma-separated via-parms.
    pub fn parse_list(value: &str) -> Result<Vec<Self>, HeaderError> {
        let out = split_unquoted(value, ',')
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(Via::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if out.is_empty() {
            return Err(err("Via", "empty value"));
        }
        Ok(out)
    }

    /// Appends the [`fmt::Display`] form, `SIP/2.0/UDP host:port;params`.
    pub fn write_to(&self, out: &mut String) {
        out.push_str("SIP/2.0/");
        out.push_str(&self.transport);
        out.push(' ');
        let v6 = self.host.contains(':') && !self.host.starts_with('[');
        if v6 {
            out.push('[');
        }
        out.push_str(&self.host);
        if v6 {
            out.push(']');
        }
        if let Some(port) = self.port {
            out.push(':');
            push_decimal(out, u32::from(port));
        }
        self.params.write_to(out);
    }

    /// The `sent-by` as `host[:port]`, IPv6 hosts bracketed.
    pub fn sent_by(&self) -> String {
        let host = bracket_host(&self.host);
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// The `received` parameter, if present.
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// `rport`: `Some(None)` when present without a value (a request asking for it),
    /// `Some(Some(port))` when filled in (RFC 3581).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(64);
        self.write_to(&mut out);
        f.write_str(&out)
    }
}

/// The topmost Via of a message (the first element of the first Via row).
pub fn top_via(headers: &super::message::Headers) -> Result<Via, HeaderError> {
    match headers.first_element("Via") {
        Some(v) => Via::parse(v),
        None => Err(err("Via", "missing")),
    }
}

/// Brackets an IPv6 literal for use in a host:port position.
pub(crate) fn bracket_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Parses `host[:port]` or `[v6]:port`; the host comes back without brackets.
pub(crate) fn parse_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or("unterminated IPv6 reference")?;
        let host = &rest[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 address {host}"));
        }
        let after = &rest[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("text after IPv6 reference")?),
        };
        (host, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if !s.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("bad host {host}"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port {p}"))?),
    };
    Ok((host.to_string(), port))
}

/// CSeq (RFC 3261 §20.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// `1*DIGIT LWS Method`; the number must fit 32 bits (RFC 3261 §8.1.1.5 keeps it
    /// below 2**31 on sending; we accept up to 2**32-1 on receipt).
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        const H: &str = "CSeq";
        let mut parts = value.split_whitespace();
        let (seq, method) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(m), None) => (s, m),
            _ => return Err(err(H, "expected '<number> <method>'")),
        };
        if !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(H, format!("bad sequence number {seq}")));
        }
        let seq = seq
            .parse::<u32>()
            .map_err(|_| err(H, "sequence number out of range"))?;
        if !is_token(method) {
            return Err(err(H, format!("bad method {method}")));
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// `Event` (RFC 6665 §8.2.1): package (with template, e.g. `presence.winfo`) and params
/// (e.g. `dialog;sla` has package `dialog`, param `sla`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHeader {
    pub package: String,
    pub params: Params,
}

impl EventHeader {
    /// `event-type *( SEMI event-param )` (RFC 6665 §8.2.1). The package keeps its
    /// template suffix (`presence.winfo`) and is lowercased: tokens compare
    /// case-insensitively unless a spec says otherwise (RFC 3261 §7.3.1).
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        const H: &str = "Event";
        let (head, params) = head_and_params(value.trim());
        let package = head.trim();
        if package.is_empty() {
            return Err(err(H, "missing event package"));
        }
        if !is_token(package) || package.starts_with('.') || package.ends_with('.') {
            return Err(err(H, format!("bad event package {package}")));
        }
        if params.0.iter().any(|(n, _)| !is_token(n)) {
            return Err(err(H, "bad parameter name"));
        }
        Ok(EventHeader {
            package: package.to_ascii_lowercase(),
            params,
        })
    }

    pub fn new(package: &str) -> Self {
        EventHeader {
            package: package.to_string(),
            params: Params::default(),
        }
    }

    /// The deprecated `id` parameter (RFC 6665 §8.2.1), if any.
    pub fn id(&self) -> Option<&str> {
        self.params.value("id")
    }
}

impl fmt::Display for EventHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.package, self.params)
    }
}

impl TerminationReason {
    /// Known reasons case-insensitively; anything else is kept lowercased in `Other`.
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "deactivated" => TerminationReason::Deactivated,
            "probation" => TerminationReason::Probation,
            "rejected" => TerminationReason::Rejected,
            "timeout" => TerminationReason::Timeout,
            "giveup" => TerminationReason::Giveup,
            "noresource" => TerminationReason::Noresource,
            "invariant" => TerminationReason::Invariant,
            other => TerminationReason::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TerminationReason::Deactivated => "deactivated",
            TerminationReason::Probation => "probation",
            TerminationReason::Rejected => "rejected",
            TerminationReason::Timeout => "timeout",
            TerminationReason::Giveup => "giveup",
            TerminationReason::Noresource => "noresource",
            TerminationReason::Invariant => "invariant",
            TerminationReason::Other(s) => s,
        }
    }
}

impl fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Subscription-State` reasons (RFC 6665 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TerminationReason {
    Deactivated,
    Probation,
    Rejected,
    Timeout,
    Giveup,
    Noresource,
    Invariant,
    Other(String),
}

/// `Subscription-State` (RFC 6665 §8.2.3). `expires` is optional on receipt because
/// RFC 3265 notifiers may omit it (§4.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubState {
    Active {
        expires: Option<u32>,
    },
    Pending {
        expires: Option<u32>,
    },
    Terminated {
        reason: Option<TerminationReason>,
        retry_after: Option<u32>,
    },
}

impl SubState {
    /// Parses `active|pending|terminated` with `expires`, `reason` and `retry-after`
    /// (RFC 6665 §8.2.3), case-insensitively and tolerating spaces around `;` and `=`.
    /// `expires` on `terminated` is ignored (RFC 6665 §4.1.3). An extension substate is
    /// an error (400 Bad Subscription-State): this gateway cannot know what it means.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        const H: &str = "Subscription-State";
        let (head, params) = head_and_params(value.trim());
        let num = |name: &str| -> Result<Option<u32>, HeaderError> {
            match params.get(name) {
                None => Ok(None),
                Some(None) => Err(err(H, format!("{name} without a value"))),
                Some(Some(v)) => parse_delta_seconds(H, v).map(Some),
            }
        };
        match head.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(SubState::Active {
                expires: num("expires")?,
            }),
            "pending" => Ok(SubState::Pending {
                expires: num("expires")?,
            }),
            "terminated" => Ok(SubState::Terminated {
                reason: params.value("reason").map(TerminationReason::parse),
                retry_after: num("retry-after")?,
            }),
            "" => Err(err(H, "missing substate")),
            other => Err(err(H, format!("unknown substate {other}"))),
        }
    }
}

impl fmt::Display for SubState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubState::Active { expires } | SubState::Pending { expires } => {
                let name = if matches!(self, SubState::Active { .. }) {
                    "active"
                } else {
                    "pending"
                };
                f.write_str(name)?;
                if let Some(e) = expires {
                    write!(f, ";expires={e}")?;
                }
                Ok(())
            }
            SubState::Terminated {
                reason,
                retry_after,
            } => {
                f.write_str("terminated")?;
                if let Some(r) = reason {
                    write!(f, ";reason={r}")?;
                }
                if let Some(r) = retry_after {
                    write!(f, ";retry-after={r}")?;
                }
                Ok(())
            }
        }
    }
}

/// `Expires`, `Min-Expires`: delta-seconds (RFC 3261 §20.19, §20.23).
/// Values above 2**32-1 are taken as 2**32-1 (RFC 3261 §20.19 treats a too-large
/// Expires as the maximum rather than an error).
pub fn parse_delta_seconds(header: &'static str, value: &str) -> Result<u32, HeaderError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(err(header, "empty value"));
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(header, format!("not delta-seconds: {v}")));
    }
    Ok(v.parse::<u32>().unwrap_or(u32::MAX))
}

/// `Retry-After` (RFC 3261 §20.33): the delta-seconds, ignoring comment and params.
pub fn parse_retry_after(value: &str) -> Result<u32, HeaderError> {
    let v = value.trim();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let rest = v[end..].trim_start();
    if !(rest.is_empty() || rest.starts_with('(') || rest.starts_with(';')) {
        return Err(err("Retry-After", format!("not delta-seconds: {v}")));
    }
    parse_delta_seconds("Retry-After", &v[..end])
}

/// `Accept` media ranges, lowercased, parameters dropped (`application/pidf+xml`, `*/*`).
/// An empty value gives an empty list (RFC 3261 §20.1: no body is acceptable).
pub fn parse_accept(value: &str) -> Result<Vec<String>, HeaderError> {
    let mut out = Vec::new();
    for item in split_unquoted(value, ',') {
        let range = media_type(item);
        if range.is_empty() {
            continue;
        }
        match range.split_once('/') {
            Some((t, s)) if is_token(t.trim()) && is_token(s.trim()) => {
                out.push(format!("{}/{}", t.trim(), s.trim()));
            }
            _ => return Err(err("Accept", format!("bad media range {range}"))),
        }
    }
    Ok(out)
}

/// The media type of a Content-Type, lowercased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`split_unquoted`] does, char by char.
    fn split_by_chars(text: &str, sep: char) -> Vec<&str> {
        let (mut parts, mut start) = (Vec::new(), 0);
        let (mut in_quote, mut escaped, mut angle) = (false, false, false);
        for (i, c) in text.char_indices() {
            if in_quote {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_quote = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' if !angle => in_quote = true,
                '<' => angle = true,
                '>' => angle = false,
                c if c == sep && !angle => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        parts
    }

    #[test]
    fn via_written_by_hand_reads_back_the_same() {
        for text in [
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=4000;received=192.0.2.1",
            "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK2",
            "SIP/2.0/UDP host.example;flag",
        ] {
            let via = Via::parse(text).unwrap();
            assert_eq!(via.to_string(), text);
            assert_eq!(Via::parse(&via.to_string()).unwrap(), via);
        }
    }

    proptest::proptest! {
        #[test]
        fn decimals_and_addresses_print_as_display_prints_them(
            n in proptest::num::u32::ANY,
            ip in proptest::prelude::any::<std::net::IpAddr>(),
        ) {
            let mut out = String::new();
            push_decimal(&mut out, n);
            proptest::prop_assert_eq!(out, n.to_string());
            let mut out = String::new();
            push_ip(&mut out, ip);
            proptest::prop_assert_eq!(out, ip.to_string());
        }

        #[test]
        fn control_characters_are_found_as_char_is_control_finds_them(
            s in proptest::prelude::any::<String>()
        ) {
            let expected = s.chars().any(|c| c.is_control() && c != '\t');
            proptest::prop_assert_eq!(has_control(&s), expected);
        }

        #[test]
        fn bytewise_split_matches_the_char_by_char_split(
            text in "[a-z,;\"\\\\<> é]{0,24}"
        ) {
            proptest::prop_assert_eq!(split_unquoted(&text, ','), split_by_chars(&text, ','));
            proptest::prop_assert_eq!(split_unquoted(&text, ';'), split_by_chars(&text, ';'));
        }

        #[test]
        fn via_head_compaction_keeps_its_meaning(head in "[SIP/2.0UDh \t\u{a0}]{0,16}") {
            let head = head.trim();
            proptest::prop_assert_eq!(compact_via_head(head).into_owned(), collapse_via_head(head));
        }
    }

    #[test]
    fn name_addr_with_quoted_display_and_tag() {
        let n = NameAddr::parse(
            "From",
            r#""Ben \"B\" Smith" <sip:ben@sip.example;transport=tcp>;tag=abc"#,
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Ben "B" Smith"#));
        assert_eq!(n.uri, "sip:ben@sip.example;transport=tcp");
        assert_eq!(n.tag(), Some("abc"));
    }

    #[test]
    fn name_addr_with_token_display() {
        let n = NameAddr::parse("To", "Anna <sip:anna@x>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Anna"));
        assert_eq!(n.uri, "sip:anna@x");
        assert!(n.params.is_empty());
    }

    #[test]
    fn addr_spec_params_bind_to_the_header_not_the_uri() {
        let n = NameAddr::parse("From", "sip:ben@sip.example;tag=1234;transport=udp").unwrap();
        assert_eq!(n.uri, "sip:ben@sip.example");
        assert_eq!(n.tag(), Some("1234"));
        assert_eq!(n.params.value("transport"), Some("udp"));
    }

    #[test]
    fn name_addr_display_always_brackets_and_quotes() {
        let n = NameAddr::parse("From", r#"sip:a@b;tag=x"#).unwrap();
        assert_eq!(n.to_string(), "<sip:a@b>;tag=x");
        let n = NameAddr {
            display: Some(r#"A "q" \ z"#.into()),
            ..NameAddr::new("sip:a@b")
        };
        let text = n.to_string();
        assert_eq!(text, r#""A \"q\" \\ z" <sip:a@b>"#);
        assert_eq!(NameAddr::parse("To", &text).unwrap(), n);
    }

    #[test]
    fn name_addr_rejects_garbage() {
        for bad in [
            "",
            "<sip:a@b",
            "\"unterminated <sip:a@b>",
            "<sip:a@b> junk",
            "<>",
            "nocolon",
            "\"d\" sip:a@b",
        ] {
            let e = NameAddr::parse("To", bad).unwrap_err();
            assert_eq!(e.header, "To", "{bad}");
        }
    }

    #[test]
    fn name_addr_list_respects_quotes_and_brackets() {
        let l = NameAddr::parse_list("Contact", r#""Doe, J" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>"#)
            .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].display.as_deref(), Some("Doe, J"));
        assert_eq!(l[0].uri, "sip:a@b;x=1,2");
        assert_eq!(l[0].params.value("q"), Some("0.5"));
        assert_eq!(l[1].uri, "sip:c@d");
    }

    #[test]
    fn name_addr_never_prints_control_characters() {
        let n = NameAddr {
            display: Some("evil\r\nX-Injected: 1".into()),
            ..NameAddr::new("sip:a@b")
        };
        assert_eq!(n.to_string(), "\"evilX-Injected: 1\" <sip:a@b>");
        assert!(NameAddr::parse("To", "\"a\r\nb\" <sip:a@b>").is_err());
    }

    #[test]
    fn with_tag_replaces_an_existing_tag() {
        let n = NameAddr::new("sip:a@b").with_tag("1").with_tag("2");
        assert_eq!(n.to_string(), "<sip:a@b>;tag=2");
    }

    #[test]
    fn via_parses_transport_host_port_and_params() {
        let v =
            Via::parse("SIP/2.0/udp 192.0.2.1:5070;branch=z9hG4bK776;received=10.0.0.1;rport=4000")
                .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert_eq!(v.received(), Some("10.0.0.1"));
        assert_eq!(v.rport(), Some(Some(4000)));
    }

    #[test]
    fn via_tolerates_spaces_around_slashes_and_params() {
        let v = Via::parse("SIP / 2.0 / TCP   h.example ; branch = z9hG4bKx ; rport").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "h.example");
        assert_eq!(v.port, None);
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert_eq!(v.rport(), Some(None));
    }

    #[test]
    fn via_ipv6_round_trips() {
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKa").unwrap();
        assert_eq!(v.host, "2001:db8::9");
        assert_eq!(v.port, Some(5060));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKa"
        );
    }

    #[test]
    fn via_display_round_trips() {
        let t = "SIP/2.0/UDP gw.example:5060;branch=z9hG4bK1;rport";
        assert_eq!(Via::parse(t).unwrap().to_string(), t);
    }

    #[test]
    fn via_list_splits_rows() {
        let l = Via::parse_list("SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5;branch=z9hG4bK2")
            .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].sent_by(), "b:5");
    }

    #[test]
    fn via_rejects_bad_protocol_port_and_missing_host() {
        for bad in [
            "SIP/2.0/UDP",
            "SIP/3.0/UDP h",
            "HTTP/2.0/UDP h",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0 h",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h;rport=x",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_parses_and_prints() {
        let c = CSeq::parse(" 4711   SUBSCRIBE ").unwrap();
        assert_eq!(
            c,
            CSeq {
                seq: 4711,
                method: Method::Subscribe
            }
        );
        assert_eq!(c.to_string(), "4711 SUBSCRIBE");
    }

    #[test]
    fn cseq_rejects_bad_values() {
        for bad in [
            "",
            "SUBSCRIBE",
            "x NOTIFY",
            "1 NOTIFY extra",
            "99999999999 NOTIFY",
            "-1 NOTIFY",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_keeps_template_package() {
        let e = EventHeader::parse("presence.winfo").unwrap();
        assert_eq!(e.package, "presence.winfo");
        assert!(e.params.is_empty());
    }

    #[test]
    fn event_dialog_sla_has_package_dialog_and_param_sla() {
        let e = EventHeader::parse("dialog;sla").unwrap();
        assert_eq!(e.package, "dialog");
        assert!(e.params.has("sla"));
        assert_eq!(e.to_string(), "dialog;sla");
    }

    #[test]
    fn event_package_is_lowercased_and_id_read() {
        let e = EventHeader::parse("Presence ; id=7").unwrap();
        assert_eq!(e.package, "presence");
        assert_eq!(e.id(), Some("7"));
    }

    #[test]
    fn event_rejects_empty_or_bad_package() {
        for bad in ["", ";sla", "pres ence", "a,b"] {
            assert!(EventHeader::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn substate_active_and_pending_with_expires() {
        assert_eq!(
            SubState::parse("active;expires=600").unwrap(),
            SubState::Active { expires: Some(600) }
        );
        assert_eq!(
            SubState::parse("pending").unwrap(),
            SubState::Pending { expires: None }
        );
        assert_eq!(
            SubState::Active { expires: Some(5) }.to_string(),
            "active;expires=5"
        );
        assert_eq!(
            SubState::Pending { expires: Some(9) }.to_string(),
            "pending;expires=9"
        );
    }

    #[test]
    fn substate_tolerates_spaces_and_case() {
        assert_eq!(
            SubState::parse(" Active ; Expires = 30 ").unwrap(),
            SubState::Active { expires: Some(30) }
        );
        assert_eq!(
            SubState::parse("TERMINATED;REASON=Timeout").unwrap(),
            SubState::Terminated {
                reason: Some(TerminationReason::Timeout),
                retry_after: None
            }
        );
    }

    #[test]
    fn substate_terminated_with_reason_and_retry_after() {
        let s = SubState::parse("terminated;reason=probation;retry-after=120").unwrap();
        assert_eq!(
            s,
            SubState::Terminated {
                reason: Some(TerminationReason::Probation),
                retry_after: Some(120)
            }
        );
        assert_eq!(s.to_string(), "terminated;reason=probation;retry-after=120");
    }

    #[test]
    fn substate_unknown_reason_is_other() {
        let s = SubState::parse("terminated;reason=moved-away").unwrap();
        assert_eq!(
            s,
            SubState::Terminated {
                reason: Some(TerminationReason::Other("moved-away".into())),
                retry_after: None
            }
        );
    }

    #[test]
    fn substate_every_known_reason_parses() {
        for (t, r) in [
            ("deactivated", TerminationReason::Deactivated),
            ("rejected", TerminationReason::Rejected),
            ("giveup", TerminationReason::Giveup),
            ("noresource", TerminationReason::Noresource),
            ("invariant", TerminationReason::Invariant),
        ] {
            assert_eq!(TerminationReason::parse(t), r);
            assert_eq!(r.to_string(), t);
        }
    }

    #[test]
    fn substate_rejects_unknown_state_and_bad_numbers() {
        for bad in [
            "",
            "waiting",
            "active;expires=soon",
            "active;expires",
            "terminated;retry-after=-1",
        ] {
            assert_eq!(
                SubState::parse(bad).unwrap_err().header,
                "Subscription-State",
                "{bad}"
            );
        }
    }

    #[test]
    fn delta_seconds_parses_and_saturates() {
        assert_eq!(parse_delta_seconds("Expires", " 3600 ").unwrap(), 3600);
        assert_eq!(
            parse_delta_seconds("Expires", "99999999999").unwrap(),
            u32::MAX
        );
        let e = parse_delta_seconds("Min-Expires", "1h").unwrap_err();
        assert_eq!(e.header, "Min-Expires");
        assert!(parse_delta_seconds("Expires", "").is_err());
        assert!(parse_delta_seconds("Expires", "-5").is_err());
    }

    #[test]
    fn retry_after_ignores_comment_and_params() {
        assert_eq!(parse_retry_after("120").unwrap(), 120);
        assert_eq!(parse_retry_after("18000;duration=3600").unwrap(), 18000);
        assert_eq!(parse_retry_after("120 (I'm in a meeting)").unwrap(), 120);
        assert!(parse_retry_after("soon").is_err());
        assert!(parse_retry_after("12x").is_err());
    }

    #[test]
    fn accept_lowercases_and_drops_params() {
        let a = parse_accept("Application/PIDF+XML;q=0.9, */*, application/xpidf+xml").unwrap();
        assert_eq!(
            a,
            vec!["application/pidf+xml", "*/*", "application/xpidf+xml"]
        );
        assert_eq!(parse_accept("").unwrap(), Vec::<String>::new());
        assert!(parse_accept("text").is_err());
    }

    #[test]
    fn params_display_and_parse_round_trip() {
        let p = Params::parse("a=1; b ;c=\"x;y\"");
        assert_eq!(p.value("c"), Some("\"x;y\""));
        assert_eq!(p.to_string(), ";a=1;b;c=\"x;y\"");
    }
}
