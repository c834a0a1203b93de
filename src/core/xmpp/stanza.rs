//! Typed XMPP stanzas for the component stream (XEP-0114, RFC 6120 §8, RFC 6121 §4).
//!
//! The driver hands the core a generic [`Element`] tree (it owns the XML parser); this
//! module turns it into a typed [`Stanza`] with a strict conversion that rejects bad
//! input with the RFC 6120 §8.3.3 condition the bounce must carry, and turns typed
//! stanzas back into elements. Unknown presence payloads are kept raw (`extra`), and the
//! absence of a presence `type` is its own variant ([`PresenceType::Available`]).
//!
//! Pure: no I/O, no clock; the XML text form ([`Element::to_xml`]) is for logs and tests.

use std::fmt;

use crate::core::presence::Show;
use crate::core::xmpp::address::JidParts;

/// Default namespace of stanzas on a component stream (XEP-0114 §3; standards.md §2).
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// Stanza namespaces accepted on input besides [`NS_COMPONENT`] (RFC 6120 §4.8.3).
pub const NS_CLIENT: &str = "jabber:client";
pub const NS_SERVER: &str = "jabber:server";
/// Namespace of stanza error conditions and `<text/>` (RFC 6120 §8.3.3).
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0319 last user interaction in presence.
pub const NS_IDLE: &str = "urn:xmpp:idle:1";
/// The attribute name under which `xml:lang` is kept in [`Element::attrs`].
pub const XML_LANG: &str = "xml:lang";

/// A node of the generic element tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// A namespaced XML element, independent of any XML library. Attributes keep their order;
/// `xml:lang` is stored under the name [`XML_LANG`], other attributes are unqualified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) an attribute, keeping the position of an existing one.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Child elements, in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The concatenated direct text content.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Serialises the element with every namespace declared where it changes (the root
    /// always declares its own), attribute values and text escaped.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(None, &mut out);
        out
    }

    fn write_xml(&self, parent_ns: Option<&str>, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        if parent_ns != Some(self.ns.as_str()) {
            out.push_str(" xmlns='");
            escape_into(&self.ns, true, out);
            out.push('\'');
        }
        for (name, value) in &self.attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("='");
            escape_into(value, true, out);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_xml(Some(&self.ns), out),
                Node::Text(t) => escape_into(t, false, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml())
    }
}

fn escape_into(s: &str, attr: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if attr => out.push_str("&apos;"),
            '"' if attr => out.push_str("&quot;"),
            // Keeps attribute-value normalisation from turning these into spaces.
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

/// Stanza error `type` (RFC 6120 §8.3.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    Cancel,
    Modify,
    Auth,
    Wait,
    Continue,
}

impl ErrorType {
    pub fn parse(s: &str) -> Option<ErrorType> {
        Some(match s {
            "cancel" => ErrorType::Cancel,
            "modify" => ErrorType::Modify,
            "auth" => ErrorType::Auth,
            "wait" => ErrorType::Wait,
            "continue" => ErrorType::Continue,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Auth => "auth",
            ErrorType::Wait => "wait",
            ErrorType::Continue => "continue",
        }
    }
}

/// Defined stanza error conditions (RFC 6120 §8.3.3), all 22 of them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    pub const ALL: [Condition; 22] = [
        Condition::BadRequest,
        Condition::Conflict,
        Condition::FeatureNotImplemented,
        Condition::Forbidden,
        Condition::Gone,
        Condition::InternalServerError,
        Condition::ItemNotFound,
        Condition::JidMalformed,
        Condition::NotAcceptable,
        Condition::NotAllowed,
        Condition::NotAuthorized,
        Condition::PolicyViolation,
        Condition::RecipientUnavailable,
        Condition::Redirect,
        Condition::RegistrationRequired,
        Condition::RemoteServerNotFound,
        Condition::RemoteServerTimeout,
        Condition::ResourceConstraint,
        Condition::ServiceUnavailable,
        Condition::SubscriptionRequired,
        Condition::UndefinedCondition,
        Condition::UnexpectedRequest,
    ];

    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::Gone => "gone",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::Redirect => "redirect",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::SubscriptionRequired => "subscription-required",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::UnexpectedRequest => "unexpected-request",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The error `type` RFC 6120 §8.3.3 gives as the usual one for the condition
    /// (standards.md §4.1; RFC 7247 leaves the choice open).
    pub fn default_type(self) -> ErrorType {
        match self {
            Condition::BadRequest
            | Condition::JidMalformed
            | Condition::NotAcceptable
            | Condition::PolicyViolation
            | Condition::Redirect => ErrorType::Modify,
            Condition::Forbidden
            | Condition::NotAuthorized
            | Condition::RegistrationRequired
            | Condition::SubscriptionRequired => ErrorType::Auth,
            Condition::RecipientUnavailable
            | Condition::RemoteServerTimeout
            | Condition::ResourceConstraint
            | Condition::UnexpectedRequest => ErrorType::Wait,
            Condition::Conflict
            | Condition::FeatureNotImplemented
            | Condition::Gone
            | Condition::InternalServerError
            | Condition::ItemNotFound
            | Condition::NotAllowed
            | Condition::RemoteServerNotFound
            | Condition::ServiceUnavailable
            | Condition::UndefinedCondition => ErrorType::Cancel,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `<error/>` child (RFC 6120 §8.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: Condition,
    pub text: Option<String>,
    /// The alternate address carried as the character data of `<gone/>` or `<redirect/>`
    /// (RFC 6120 §8.3.3.5, §8.3.3.14); ignored for other conditions.
    pub gone_uri: Option<String>,
}

impl StanzaError {
    /// An error with the condition's default type and no text.
    pub fn new(condition: Condition) -> StanzaError {
        StanzaError {
            kind: condition.default_type(),
            condition,
            text: None,
            gone_uri: None,
        }
    }

    pub fn to_element(&self, stanza_ns: &str) -> Element {
        let mut cond = Element::new(self.condition.as_str(), NS_STANZAS);
        if matches!(self.condition, Condition::Gone | Condition::Redirect) {
            if let Some(uri) = &self.gone_uri {
                cond = cond.with_text(uri.clone());
            }
        }
        let mut el = Element::new("error", stanza_ns)
            .with_attr("type", self.kind.as_str())
            .with_child(cond);
        if let Some(text) = &self.text {
            el = el.with_child(Element::new("text", NS_STANZAS).with_text(text.clone()));
        }
        el
    }

    /// Lenient on purpose: errors are never answered (RFC 6120 §8.3.1), so a sloppy
    /// `<error/>` is read as well as it can be (missing type → the condition's default,
    /// unknown condition → `undefined-condition`).
    pub fn from_element(el: &Element) -> StanzaError {
        let condition = el
            .elements()
            .filter(|c| c.ns == NS_STANZAS && c.name != "text")
            .find_map(|c| Condition::parse(&c.name))
            .unwrap_or(Condition::UndefinedCondition);
        let kind = el
            .attr("type")
            .and_then(ErrorType::parse)
            .unwrap_or_else(|| condition.default_type());
        let text = el
            .elements()
            .find(|c| c.is("text", NS_STANZAS))
            .map(Element::text);
        let gone_uri = el
            .elements()
            .find(|c| c.ns == NS_STANZAS && (c.name == "gone" || c.name == "redirect"))
            .map(|c| c.text().trim().to_string())
            .filter(|t| !t.is_empty());
        StanzaError {
            kind,
            condition,
            text,
            gone_uri,
        }
    }
}

/// Why an element is not an acceptable stanza, with the condition of the bounce.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{condition}: {reason}")]
pub struct StanzaParseError {
    pub condition: Condition,
    pub reason: String,
}

/// Largest stanza accepted (serialised size, estimated from names, attributes and text).
/// Presence stanzas are small; anything near this is hostile (issue: limits on sizes).
pub const MAX_STANZA_BYTES: usize = 64 * 1024;
/// Largest attribute value: a JID is at most 3071 bytes (RFC 7622 §3.1), ids are short.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;
/// Deepest element nesting accepted below the stanza.
pub const MAX_DEPTH: usize = 32;

/// Refuses stanzas over the size, attribute and depth limits with `policy-violation`
/// (RFC 6120 §8.3.3.12), before any of their content is interpreted.
fn check_limits(el: &Element) -> Result<(), StanzaParseError> {
    let mut total = 0usize;
    let mut stack: Vec<(&Element, usize)> = vec![(el, 0)];
    while let Some((e, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(bad(Condition::PolicyViolation, "elements nested too deep"));
        }
        total += e.name.len() + e.ns.len() + 5;
        for (k, v) in &e.attrs {
            if v.len() > MAX_ATTRIBUTE_BYTES {
                return Err(bad(
                    Condition::PolicyViolation,
                    format!("attribute {k} longer than {MAX_ATTRIBUTE_BYTES} bytes"),
                ));
            }
            total += k.len() + v.len() + 4;
        }
        for c in &e.children {
            match c {
                Node::Element(child) => stack.push((child, depth + 1)),
                Node::Text(t) => total += t.len(),
            }
        }
        if total > MAX_STANZA_BYTES {
            return Err(bad(
                Condition::PolicyViolation,
                format!("stanza larger than {MAX_STANZA_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

fn bad(condition: Condition, reason: impl Into<String>) -> StanzaParseError {
    StanzaParseError {
        condition,
        reason: reason.into(),
    }
}

/// Presence `type` (RFC 6121 §4.7.1); no attribute is [`PresenceType::Available`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PresenceType {
    Available,
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
    Error,
}

impl PresenceType {
    /// `None` means "no type attribute"; an unknown value is `Err` (standards.md §5.1).
    fn parse(attr: Option<&str>) -> Result<PresenceType, StanzaParseError> {
        Ok(match attr {
            None => PresenceType::Available,
            Some("unavailable") => PresenceType::Unavailable,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some("probe") => PresenceType::Probe,
            Some("error") => PresenceType::Error,
            Some(other) => {
                return Err(bad(
                    Condition::BadRequest,
                    format!("unknown presence type {other:?}"),
                ))
            }
        })
    }

    /// The attribute value, `None` for available.
    pub fn as_attr(self) -> Option<&'static str> {
        Some(match self {
            PresenceType::Available => return None,
            PresenceType::Unavailable => "unavailable",
            PresenceType::Subscribe => "subscribe",
            PresenceType::Subscribed => "subscribed",
            PresenceType::Unsubscribe => "unsubscribe",
            PresenceType::Unsubscribed => "unsubscribed",
            PresenceType::Probe => "probe",
            PresenceType::Error => "error",
        })
    }
}

/// A presence stanza (RFC 6121 §4.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub from: JidParts,
    pub to: JidParts,
    pub id: Option<String>,
    pub kind: PresenceType,
    pub show: Option<Show>,
    /// `<status/>` texts with their `xml:lang` (RFC 6121 §4.7.2.2).
    pub statuses: Vec<(Option<String>, String)>,
    /// −128..=127 (RFC 6121 §4.7.2.3); `None` when absent (counts as 0).
    pub priority: Option<i8>,
    /// The stanza's `xml:lang`.
    pub lang: Option<String>,
    /// XEP-0319 `<idle since>`, kept as the timestamp text.
    pub idle_since: Option<String>,
    pub error: Option<StanzaError>,
    /// Children we do not interpret (caps, vcard-update, delay, …), kept as received.
    pub extra: Vec<Element>,
}

impl Presence {
    /// A presence of `kind` with nothing but addresses.
    pub fn new(from: JidParts, to: JidParts, kind: PresenceType) -> Presence {
        Presence {
            from,
            to,
            id: None,
            kind,
            show: None,
            statuses: Vec::new(),
            priority: None,
            lang: None,
            idle_since: None,
            error: None,
            extra: Vec::new(),
        }
    }
}

/// IQ `type` (RFC 6120 §8.2.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

impl IqType {
    pub fn as_str(self) -> &'static str {
        match self {
            IqType::Get => "get",
            IqType::Set => "set",
            IqType::Result => "result",
            IqType::Error => "error",
        }
    }
}

/// An IQ stanza (RFC 6120 §8.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iq {
    pub from: JidParts,
    pub to: JidParts,
    /// Mandatory and non-empty.
    pub id: String,
    pub kind: IqType,
    /// The one child of a get/set; the optional child of a result; for an error, the
    /// original payload if the sender included it.
    pub payload: Option<Element>,
    /// The `<error/>` of a `type='error'` IQ.
    pub error: Option<StanzaError>,
}

impl Iq {
    /// The `result` answering this request, from its `to` to its `from`.
    pub fn result(&self, payload: Option<Element>) -> Iq {
        Iq {
            from: self.to.clone(),
            to: self.from.clone(),
            id: self.id.clone(),
            kind: IqType::Result,
            payload,
            error: None,
        }
    }
}

/// A stanza on the component stream. Messages are not interpreted by the gateway (RFC 8048
/// maps presence only); they are kept raw so they can be bounced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stanza {
    Presence(Presence),
    Iq(Iq),
    Message(Element),
}

fn jid_attr(el: &Element, name: &str) -> Result<JidParts, StanzaParseError> {
    let raw = el
        .attr(name)
        .ok_or_else(|| bad(Condition::JidMalformed, format!("missing '{name}'")))?;
    JidParts::parse(raw).map_err(|e| bad(Condition::JidMalformed, format!("'{name}' {raw:?}: {e}")))
}

fn is_stanza_ns(ns: &str) -> bool {
    ns == NS_COMPONENT || ns == NS_CLIENT || ns == NS_SERVER
}

impl Stanza {
    /// Strict conversion from the wire element (RFC 6120 §8, RFC 6121 §4.7). Every stanza
    /// must carry valid `from` and `to` on a component stream (XEP-0114 §3), else
    /// `jid-malformed`; other violations are `bad-request`.
    pub fn from_element(el: Element) -> Result<Stanza, StanzaParseError> {
        check_limits(&el)?;
        if !is_stanza_ns(&el.ns) {
            return Err(bad(
                Condition::BadRequest,
                format!("not a stanza: {{{}}}{}", el.ns, el.name),
            ));
        }
        match el.name.as_str() {
            "presence" => parse_presence(el).map(Stanza::Presence),
            "iq" => parse_iq(el).map(Stanza::Iq),
            "message" => {
                jid_attr(&el, "from")?;
                jid_attr(&el, "to")?;
                Ok(Stanza::Message(el))
            }
            other => Err(bad(
                Condition::BadRequest,
                format!("not a stanza: <{other}/>"),
            )),
        }
    }

    /// The wire element, in the component namespace.
    pub fn to_element(&self) -> Element {
        match self {
            Stanza::Presence(p) => presence_to_element(p),
            Stanza::Iq(iq) => iq_to_element(iq),
            Stanza::Message(el) => el.clone(),
        }
    }

    /// Whether this is an error stanza (never to be answered with an error).
    pub fn is_error(&self) -> bool {
        match self {
            Stanza::Presence(p) => p.kind == PresenceType::Error,
            Stanza::Iq(iq) => iq.kind == IqType::Error,
            Stanza::Message(el) => el.attr("type") == Some("error"),
        }
    }

    /// The error stanza answering this one (RFC 6120 §8.3.1): same kind and id, `from`
    /// and `to` swapped, the condition with its default type. `None` for an error stanza
    /// (standards.md §16 case 5) and for an IQ result, which must not be answered either
    /// (RFC 6120 §8.2.3).
    pub fn error_reply(&self, condition: Condition, text: Option<String>) -> Option<Stanza> {
        if self.is_error() {
            return None;
        }
        let error = StanzaError {
            text,
            ..StanzaError::new(condition)
        };
        match self {
            Stanza::Presence(p) => {
                let mut reply = Presence::new(p.to.clone(), p.from.clone(), PresenceType::Error);
                reply.id = p.id.clone();
                reply.error = Some(error);
                Some(Stanza::Presence(reply))
            }
            Stanza::Iq(iq) => {
                if iq.kind == IqType::Result {
                    return None;
                }
                Some(Stanza::Iq(Iq {
                    from: iq.to.clone(),
                    to: iq.from.clone(),
                    id: iq.id.clone(),
                    kind: IqType::Error,
                    payload: None,
                    error: Some(error),
                }))
            }
            Stanza::Message(el) => {
                let mut reply = Element::new("message", NS_COMPONENT);
                copy_swapped_addresses(el, &mut reply);
                reply.set_attr("type", "error");
                reply
                    .children
                    .push(Node::Element(error.to_element(NS_COMPONENT)));
                Some(Stanza::Message(reply))
            }
        }
    }

    /// The bounce of an element that failed [`Stanza::from_element`] with `err`: an error
    /// stanza of the same name and id, `from` = the offending `to` when it is a valid JID
    /// in `component_domain` (else the domain itself, so standards.md §16 case 3 holds),
    /// `to` = the offending `from`. `None` when the element is not a stanza, is itself an
    /// error (case 5) or an IQ result, or has no usable `from` to answer to.
    pub fn bounce(el: &Element, err: &StanzaParseError, component_domain: &str) -> Option<Element> {
        if !is_stanza_ns(&el.ns) || !matches!(el.name.as_str(), "presence" | "iq" | "message") {
            return None;
        }
        if matches!(el.attr("type"), Some("error")) {
            return None;
        }
        if el.name == "iq" && el.attr("type") == Some("result") {
            return None;
        }
        let to = JidParts::parse(el.attr("from")?).ok()?;
        let from = el
            .attr("to")
            .and_then(|t| JidParts::parse(t).ok())
            .filter(|j| j.domain.eq_ignore_ascii_case(component_domain))
            .map(|j| j.to_string())
            .unwrap_or_else(|| component_domain.to_ascii_lowercase());
        let mut reply = Element::new(el.name.clone(), NS_COMPONENT)
            .with_attr("from", from)
            .with_attr("to", to.to_string());
        if let Some(id) = el.attr("id") {
            reply.set_attr("id", id);
        }
        reply.set_attr("type", "error");
        let error = StanzaError {
            text: Some(err.reason.clone()),
            ..StanzaError::new(err.condition)
        };
        reply
            .children
            .push(Node::Element(error.to_element(NS_COMPONENT)));
        Some(reply)
    }

    pub fn from(&self) -> Option<JidParts> {
        match self {
            Stanza::Presence(p) => Some(p.from.clone()),
            Stanza::Iq(iq) => Some(iq.from.clone()),
            Stanza::Message(el) => el.attr("from").and_then(|f| JidParts::parse(f).ok()),
        }
    }

    pub fn to(&self) -> Option<JidParts> {
        match self {
            Stanza::Presence(p) => Some(p.to.clone()),
            Stanza::Iq(iq) => Some(iq.to.clone()),
            Stanza::Message(el) => el.attr("to").and_then(|t| JidParts::parse(t).ok()),
        }
    }
}

fn copy_swapped_addresses(src: &Element, dst: &mut Element) {
    if let Some(to) = src.attr("to") {
        dst.set_attr("from", to);
    }
    if let Some(from) = src.attr("from") {
        dst.set_attr("to", from);
    }
    if let Some(id) = src.attr("id") {
        dst.set_attr("id", id);
    }
}

fn parse_presence(el: Element) -> Result<Presence, StanzaParseError> {
    let kind = PresenceType::parse(el.attr("type"))?;
    let from = jid_attr(&el, "from")?;
    let to = jid_attr(&el, "to")?;
    let mut p = Presence::new(from, to, kind);
    p.id = el.attr("id").map(str::to_string);
    p.lang = el.attr(XML_LANG).map(str::to_string);
    let stanza_ns = el.ns.clone();
    for node in el.children {
        let child = match node {
            Node::Element(child) => child,
            // Whitespace between children carries no meaning.
            Node::Text(_) => continue,
        };
        if child.ns == stanza_ns {
            match child.name.as_str() {
                "show" => {
                    if p.show.is_some() {
                        return Err(bad(Condition::BadRequest, "more than one <show/>"));
                    }
                    let text = child.text();
                    p.show = Some(Show::parse(&text).ok_or_else(|| {
                        bad(Condition::BadRequest, format!("bad <show/> {text:?}"))
                    })?);
                }
                "status" => {
                    let lang = child.attr(XML_LANG).map(str::to_string);
                    p.statuses.push((lang, child.text()));
                }
                "priority" => {
                    if p.priority.is_some() {
                        return Err(bad(Condition::BadRequest, "more than one <priority/>"));
                    }
                    let text = child.text();
                    p.priority = Some(text.trim().parse::<i8>().map_err(|_| {
                        bad(
                            Condition::BadRequest,
                            format!("<priority/> {text:?} is not an integer in -128..127"),
                        )
                    })?);
                }
                "error" if kind == PresenceType::Error => {
                    p.error = Some(StanzaError::from_element(&child));
                }
                _ => p.extra.push(child),
            }
        } else if child.is("idle", NS_IDLE) && child.attr("since").is_some() {
            p.idle_since = child.attr("since").map(str::to_string);
        } else {
            p.extra.push(child);
        }
    }
    Ok(p)
}

fn parse_iq(el: Element) -> Result<Iq, StanzaParseError> {
    let id = el
        .attr("id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(Condition::BadRequest, "<iq/> without id"))?
        .to_string();
    let kind = match el.attr("type") {
        Some("get") => IqType::Get,
        Some("set") => IqType::Set,
        Some("result") => IqType::Result,
        Some("error") => IqType::Error,
        Some(other) => {
            return Err(bad(
                Condition::BadRequest,
                format!("unknown iq type {other:?}"),
            ))
        }
        None => return Err(bad(Condition::BadRequest, "<iq/> without type")),
    };
    let from = jid_attr(&el, "from")?;
    let to = jid_attr(&el, "to")?;
    let stanza_ns = el.ns.clone();
    let mut payloads = Vec::new();
    let mut error = None;
    for child in el.elements() {
        if kind == IqType::Error && child.is("error", &stanza_ns) {
            error = Some(StanzaError::from_element(child));
        } else {
            payloads.push(child.clone());
        }
    }
    let n = payloads.len();
    match kind {
        IqType::Get | IqType::Set if n != 1 => {
            return Err(bad(
                Condition::BadRequest,
                format!("iq {} must have exactly one child, has {n}", kind.as_str()),
            ))
        }
        IqType::Result if n > 1 => {
            return Err(bad(
                Condition::BadRequest,
                format!("iq result has {n} children"),
            ))
        }
        _ => {}
    }
    if kind == IqType::Error && error.is_none() {
        error = Some(StanzaError::new(Condition::UndefinedCondition));
    }
    Ok(Iq {
        from,
        to,
        id,
        kind,
        payload: payloads.into_iter().next(),
        error,
    })
}

fn presence_to_element(p: &Presence) -> Element {
    let ns = NS_COMPONENT;
    let mut el = Element::new("presence", ns)
        .with_attr("from", p.from.to_string())
        .with_attr("to", p.to.to_string());
    if let Some(id) = &p.id {
        el.set_attr("id", id.clone());
    }
    if let Some(t) = p.kind.as_attr() {
        el.set_attr("type", t);
    }
    if let Some(lang) = &p.lang {
        el.set_attr(XML_LANG, lang.clone());
    }
    if let Some(show) = p.show {
        el = el.with_child(Element::new("show", ns).with_text(show.as_str()));
    }
    for (lang, text) in &p.statuses {
        let mut status = Element::new("status", ns).with_text(text.clone());
        if let Some(lang) = lang {
            status.set_attr(XML_LANG, lang.clone());
        }
        el = el.with_child(status);
    }
    if let Some(prio) = p.priority {
        el = el.with_child(Element::new("priority", ns).with_text(prio.to_string()));
    }
    if let Some(since) = &p.idle_since {
        el = el.with_child(Element::new("idle", NS_IDLE).with_attr("since", since.clone()));
    }
    if let Some(err) = &p.error {
        el = el.with_child(err.to_element(ns));
    }
    for extra in &p.extra {
        el = el.with_child(extra.clone());
    }
    el
}

fn iq_to_element(iq: &Iq) -> Element {
    let mut el = Element::new("iq", NS_COMPONENT)
        .with_attr("from", iq.from.to_string())
        .with_attr("to", iq.to.to_string())
        .with_attr("id", iq.id.clone())
        .with_attr("type", iq.kind.as_str());
    if let Some(payload) = &iq.payload {
        el = el.with_child(payload.clone());
    }
    if let Some(err) = &iq.error {
        el = el.with_child(err.to_element(NS_COMPONENT));
    }
    el
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn presence_with(attr_len: usize, status_len: usize) -> Element {
        Element::new("presence", "jabber:component:accept")
            .with_attr("from", "anna@xmpp.example/desk")
            .with_attr("to", "ben@sip.example")
            .with_attr("id", "x".repeat(attr_len))
            .with_child(
                Element::new("status", "jabber:component:accept").with_text("s".repeat(status_len)),
            )
    }

    #[test]
    fn huge_attribute_is_refused_with_policy_violation() {
        let err = Stanza::from_element(presence_with(MAX_ATTRIBUTE_BYTES + 1, 1)).unwrap_err();
        assert_eq!(err.condition, Condition::PolicyViolation);
    }

    #[test]
    fn huge_stanza_is_refused_with_policy_violation() {
        let err = Stanza::from_element(presence_with(4, MAX_STANZA_BYTES + 1)).unwrap_err();
        assert_eq!(err.condition, Condition::PolicyViolation);
    }

    #[test]
    fn ordinary_presence_is_within_limits() {
        assert!(Stanza::from_element(presence_with(8, 200)).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut e = Element::new("x", "urn:x");
        for _ in 0..(MAX_DEPTH + 2) {
            e = Element::new("x", "urn:x").with_child(e);
        }
        let p = Element::new("presence", "jabber:component:accept")
            .with_attr("from", "anna@xmpp.example/desk")
            .with_attr("to", "ben@sip.example")
            .with_child(e);
        assert_eq!(
            Stanza::from_element(p).unwrap_err().condition,
            Condition::PolicyViolation
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const C: &str = NS_COMPONENT;

    fn jid(s: &str) -> JidParts {
        JidParts::parse(s).unwrap()
    }

    fn presence_el(attrs: &[(&str, &str)]) -> Element {
        let mut el = Element::new("presence", C);
        el.set_attr("from", "anna@xmpp.example/desk");
        el.set_attr("to", "ben@sip.example");
        for (k, v) in attrs {
            el.set_attr(*k, *v);
        }
        el
    }

    fn parse_err(el: Element) -> StanzaParseError {
        Stanza::from_element(el).unwrap_err()
    }

    #[test]
    fn to_xml_escapes_attributes_and_text_and_declares_changed_namespaces() {
        let el = Element::new("presence", C)
            .with_attr("from", "a'b\"<&>")
            .with_child(Element::new("status", C).with_text("1 < 2 & 3 > 0"))
            .with_child(Element::new("idle", NS_IDLE).with_attr("since", "x"));
        assert_eq!(
            el.to_xml(),
            "<presence xmlns='jabber:component:accept' from='a&apos;b&quot;&lt;&amp;&gt;'>\
             <status>1 &lt; 2 &amp; 3 &gt; 0</status>\
             <idle xmlns='urn:xmpp:idle:1' since='x'/></presence>"
        );
    }

    #[test]
    fn presence_without_type_parses_as_available_with_all_children() {
        let el = presence_el(&[("id", "p1"), (XML_LANG, "en")])
            .with_child(Element::new("show", C).with_text("dnd"))
            .with_child(Element::new("status", C).with_text("busy"))
            .with_child(
                Element::new("status", C)
                    .with_attr(XML_LANG, "de")
                    .with_text("beschäftigt"),
            )
            .with_child(Element::new("priority", C).with_text("-5"))
            .with_child(Element::new("idle", NS_IDLE).with_attr("since", "2026-01-01T00:00:00Z"))
            .with_child(
                Element::new("c", "http://jabber.org/protocol/caps").with_attr("node", "n"),
            );
        let Stanza::Presence(p) = Stanza::from_element(el).unwrap() else {
            panic!("not a presence")
        };
        assert_eq!(p.kind, PresenceType::Available);
        assert_eq!(p.from, jid("anna@xmpp.example/desk"));
        assert_eq!(p.id.as_deref(), Some("p1"));
        assert_eq!(p.lang.as_deref(), Some("en"));
        assert_eq!(p.show, Some(Show::Dnd));
        assert_eq!(
            p.statuses,
            vec![
                (None, "busy".to_string()),
                (Some("de".to_string()), "beschäftigt".to_string())
            ]
        );
        assert_eq!(p.priority, Some(-5));
        assert_eq!(p.idle_since.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(p.extra.len(), 1);
        assert_eq!(p.extra[0].name, "c");
    }

    #[test]
    fn every_defined_presence_type_parses() {
        for (attr, kind) in [
            ("unavailable", PresenceType::Unavailable),
            ("subscribe", PresenceType::Subscribe),
            ("subscribed", PresenceType::Subscribed),
            ("unsubscribe", PresenceType::Unsubscribe),
            ("unsubscribed", PresenceType::Unsubscribed),
            ("probe", PresenceType::Probe),
            ("error", PresenceType::Error),
        ] {
            let Stanza::Presence(p) = Stanza::from_element(presence_el(&[("type", attr)])).unwrap()
            else {
                panic!("not a presence")
            };
            assert_eq!(p.kind, kind, "{attr}");
        }
    }

    /// standards.md §5.1: any other type → bad-request.
    #[test]
    fn unknown_presence_type_is_bad_request() {
        let err = parse_err(presence_el(&[("type", "available")]));
        assert_eq!(err.condition, Condition::BadRequest);
    }

    #[test]
    fn unknown_show_value_is_bad_request() {
        let el = presence_el(&[]).with_child(Element::new("show", C).with_text("busy"));
        assert_eq!(parse_err(el).condition, Condition::BadRequest);
    }

    #[test]
    fn two_show_elements_are_bad_request() {
        let el = presence_el(&[])
            .with_child(Element::new("show", C).with_text("away"))
            .with_child(Element::new("show", C).with_text("xa"));
        assert_eq!(parse_err(el).condition, Condition::BadRequest);
    }

    #[test]
    fn priority_out_of_range_is_bad_request() {
        for bad_prio in ["128", "-129", "high", ""] {
            let el = presence_el(&[]).with_child(Element::new("priority", C).with_text(bad_prio));
            assert_eq!(parse_err(el).condition, Condition::BadRequest, "{bad_prio}");
        }
    }

    #[test]
    fn priority_bounds_are_accepted() {
        for (text, value) in [("127", 127i8), ("-128", -128)] {
            let el = presence_el(&[]).with_child(Element::new("priority", C).with_text(text));
            let Stanza::Presence(p) = Stanza::from_element(el).unwrap() else {
                panic!()
            };
            assert_eq!(p.priority, Some(value));
        }
    }

    #[test]
    fn missing_from_is_jid_malformed() {
        let mut el = presence_el(&[]);
        el.attrs.retain(|(n, _)| n != "from");
        assert_eq!(parse_err(el).condition, Condition::JidMalformed);
    }

    #[test]
    fn invalid_to_is_jid_malformed() {
        let el = presence_el(&[("to", "a b@sip.example")]);
        assert_eq!(parse_err(el).condition, Condition::JidMalformed);
    }

    #[test]
    fn iq_without_id_is_bad_request() {
        let el = Element::new("iq", C)
            .with_attr("from", "anna@xmpp.example/desk")
            .with_attr("to", "sip.example")
            .with_attr("type", "get")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        assert_eq!(parse_err(el).condition, Condition::BadRequest);
    }

    #[test]
    fn iq_get_without_payload_is_bad_request() {
        let el = Element::new("iq", C)
            .with_attr("from", "anna@xmpp.example/desk")
            .with_attr("to", "sip.example")
            .with_attr("id", "q1")
            .with_attr("type", "get");
        assert_eq!(parse_err(el).condition, Condition::BadRequest);
    }

    #[test]
    fn iq_with_unknown_type_is_bad_request() {
        let el = Element::new("iq", C)
            .with_attr("from", "anna@xmpp.example/desk")
            .with_attr("to", "sip.example")
            .with_attr("id", "q1")
            .with_attr("type", "query")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        assert_eq!(parse_err(el).condition, Condition::BadRequest);
    }

    #[test]
    fn iq_error_keeps_its_condition() {
        let el = Element::new("iq", C)
            .with_attr("from", "xmpp.example")
            .with_attr("to", "sip.example")
            .with_attr("id", "ka-1")
            .with_attr("type", "error")
            .with_child(
                Element::new("error", C)
                    .with_attr("type", "cancel")
                    .with_child(Element::new("service-unavailable", NS_STANZAS))
                    .with_child(Element::new("text", NS_STANZAS).with_text("no")),
            );
        let Stanza::Iq(iq) = Stanza::from_element(el).unwrap() else {
            panic!()
        };
        let e = iq.error.unwrap();
        assert_eq!(e.condition, Condition::ServiceUnavailable);
        assert_eq!(e.kind, ErrorType::Cancel);
        assert_eq!(e.text.as_deref(), Some("no"));
        assert_eq!(iq.payload, None);
    }

    #[test]
    fn non_stanza_element_is_rejected() {
        let el = Element::new("handshake", C);
        assert!(Stanza::from_element(el).is_err());
    }

    #[test]
    fn message_is_kept_raw() {
        let el = Element::new("message", C)
            .with_attr("from", "anna@xmpp.example/desk")
            .with_attr("to", "ben@sip.example")
            .with_child(Element::new("body", C).with_text("hi"));
        assert_eq!(
            Stanza::from_element(el.clone()).unwrap(),
            Stanza::Message(el)
        );
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let s = Stanza::from_element(presence_el(&[("id", "p9"), ("type", "subscribe")])).unwrap();
        let Some(Stanza::Presence(r)) =
            s.error_reply(Condition::ItemNotFound, Some("no such user".into()))
        else {
            panic!()
        };
        assert_eq!(r.from, jid("ben@sip.example"));
        assert_eq!(r.to, jid("anna@xmpp.example/desk"));
        assert_eq!(r.id.as_deref(), Some("p9"));
        assert_eq!(r.kind, PresenceType::Error);
        let e = r.error.unwrap();
        assert_eq!(e.condition, Condition::ItemNotFound);
        assert_eq!(e.kind, ErrorType::Cancel);
        assert_eq!(e.text.as_deref(), Some("no such user"));
    }

    /// standards.md §16 case 5: an error stanza is never answered with an error.
    #[test]
    fn error_stanzas_get_no_error_reply_case_5() {
        let presence = Stanza::from_element(presence_el(&[("type", "error")])).unwrap();
        assert_eq!(presence.error_reply(Condition::BadRequest, None), None);
        let iq = Stanza::Iq(Iq {
            from: jid("anna@xmpp.example"),
            to: jid("sip.example"),
            id: "x".into(),
            kind: IqType::Error,
            payload: None,
            error: Some(StanzaError::new(Condition::BadRequest)),
        });
        assert_eq!(iq.error_reply(Condition::BadRequest, None), None);
        let msg = Stanza::Message(
            Element::new("message", C)
                .with_attr("from", "anna@xmpp.example")
                .with_attr("to", "ben@sip.example")
                .with_attr("type", "error"),
        );
        assert_eq!(msg.error_reply(Condition::BadRequest, None), None);
    }

    #[test]
    fn iq_result_gets_no_error_reply() {
        let iq = Stanza::Iq(Iq {
            from: jid("anna@xmpp.example"),
            to: jid("sip.example"),
            id: "x".into(),
            kind: IqType::Result,
            payload: None,
            error: None,
        });
        assert_eq!(iq.error_reply(Condition::BadRequest, None), None);
    }

    /// standards.md §16 case 5, for input that does not even parse.
    #[test]
    fn malformed_error_stanza_is_not_bounced_case_5() {
        let el = presence_el(&[("type", "error"), ("to", "bad jid@sip.example")]);
        let err = parse_err(el.clone());
        assert_eq!(Stanza::bounce(&el, &err, "sip.example"), None);
    }

    #[test]
    fn malformed_presence_is_bounced_with_its_condition() {
        let el = presence_el(&[("id", "b1")]).with_child(Element::new("show", C).with_text("busy"));
        let err = parse_err(el.clone());
        let bounce = Stanza::bounce(&el, &err, "sip.example").unwrap();
        assert_eq!(bounce.name, "presence");
        assert_eq!(bounce.attr("type"), Some("error"));
        assert_eq!(bounce.attr("id"), Some("b1"));
        assert_eq!(bounce.attr("from"), Some("ben@sip.example"));
        assert_eq!(bounce.attr("to"), Some("anna@xmpp.example/desk"));
        let error = bounce.elements().next().unwrap();
        assert_eq!(error.attr("type"), Some("modify"));
        assert!(error.elements().any(|c| c.is("bad-request", NS_STANZAS)));
    }

    #[test]
    fn bounce_of_bad_to_comes_from_the_component_domain() {
        let el = presence_el(&[("to", "a b@sip.example")]);
        let err = parse_err(el.clone());
        let bounce = Stanza::bounce(&el, &err, "sip.example").unwrap();
        assert_eq!(bounce.attr("from"), Some("sip.example"));
    }

    #[test]
    fn unanswerable_bounce_without_from_is_none() {
        let mut el = presence_el(&[]);
        el.attrs.retain(|(n, _)| n != "from");
        let err = parse_err(el.clone());
        assert_eq!(Stanza::bounce(&el, &err, "sip.example"), None);
    }

    #[test]
    fn gone_uri_round_trips() {
        let e = StanzaError {
            gone_uri: Some("xmpp:new@example".into()),
            ..StanzaError::new(Condition::Gone)
        };
        assert_eq!(StanzaError::from_element(&e.to_element(C)), e);
    }

    #[test]
    fn condition_names_round_trip() {
        for c in Condition::ALL {
            assert_eq!(Condition::parse(c.as_str()), Some(c));
        }
    }

    fn arb_jid() -> impl Strategy<Value = JidParts> {
        (
            proptest::option::of("[a-z0-9]{1,8}"),
            "[a-z]{1,6}\\.example",
            proptest::option::of("[A-Za-z0-9 ]{1,8}"),
        )
            .prop_map(|(l, d, r)| JidParts {
                local: l,
                domain: d,
                resource: r,
            })
    }

    fn arb_presence() -> impl Strategy<Value = Presence> {
        (
            arb_jid(),
            arb_jid(),
            proptest::option::of("[a-z0-9]{1,6}"),
            prop_oneof![
                Just(PresenceType::Available),
                Just(PresenceType::Unavailable),
                Just(PresenceType::Subscribe),
                Just(PresenceType::Probe),
            ],
            proptest::option::of(prop_oneof![
                Just(Show::Away),
                Just(Show::Chat),
                Just(Show::Dnd),
                Just(Show::Xa)
            ]),
            proptest::collection::vec(
                (proptest::option::of("[a-z]{2}"), "[^\\x00-\\x1f]{0,12}"),
                0..3,
            ),
            proptest::option::of(any::<i8>()),
            proptest::option::of("[0-9T:Z-]{5,20}"),
        )
            .prop_map(|(from, to, id, kind, show, statuses, priority, idle)| {
                let mut p = Presence::new(from, to, kind);
                p.id = id;
                p.show = show;
                p.statuses = statuses;
                p.priority = priority;
                p.idle_since = idle;
                p
            })
    }

    proptest! {
        #[test]
        fn presence_round_trips_through_element(p in arb_presence()) {
            let s = Stanza::Presence(p);
            prop_assert_eq!(Stanza::from_element(s.to_element()).unwrap(), s);
        }

        /// standards.md §16 case 3: an error reply to a stanza addressed into the
        /// component domain comes from that domain and goes to the sender.
        #[test]
        fn error_reply_is_from_the_addressed_component_jid_case_3(
            p in arb_presence(), local in proptest::option::of("[a-z]{1,5}")
        ) {
            let mut p = p;
            p.to = JidParts { local, domain: "sip.example".into(), resource: None };
            let sender = p.from.clone();
            let s = Stanza::Presence(p);
            let r = s.error_reply(Condition::BadRequest, None).unwrap();
            prop_assert_eq!(r.from().unwrap().domain, "sip.example");
            prop_assert_eq!(r.to().unwrap(), sender);
        }
    }
}
