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

    pub fn parse(header: &'static str, value: &str) -> Result<Self, HeaderError> {
        let _ = (header, value);
        todo!("sip-stack")
    }

    /// Parses a comma-separated list (Contact, Route, Record-Route), respecting quotes and <>.
    pub fn parse_list(header: &'static str, value: &str) -> Result<Vec<Self>, HeaderError> {
        let _ = (header, value);
        todo!("sip-stack")
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("sip-stack")
    }
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
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let _ = value;
        todo!("sip-stack")
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("sip-stack")
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let _ = value;
        todo!("sip-stack")
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
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let _ = value;
        todo!("sip-stack")
    }
}

impl fmt::Display for EventHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("sip-stack")
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
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let _ = value;
        todo!("sip-stack")
    }
}

impl fmt::Display for SubState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("sip-stack")
    }
}

/// `Expires`, `Min-Expires`: delta-seconds (RFC 3261 §20.19, §20.23).
pub fn parse_delta_seconds(header: &'static str, value: &str) -> Result<u32, HeaderError> {
    let _ = (header, value);
    todo!("sip-stack")
}

/// `Retry-After` (RFC 3261 §20.33): the delta-seconds, ignoring comment and params.
pub fn parse_retry_after(value: &str) -> Result<u32, HeaderError> {
    let _ = value;
    todo!("sip-stack")
}

/// `Accept` media ranges, lowercased, parameters dropped (`application/pidf+xml`, `*/*`).
pub fn parse_accept(value: &str) -> Result<Vec<String>, HeaderError> {
    let _ = value;
    todo!("sip-stack")
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
