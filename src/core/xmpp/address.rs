//! Address mapping between SIP URIs and JIDs (RFC 7247 §6, XEP-0106, product.md
//! "Address mapping").
//!
//! Localparts are escaped with the full XEP-0106 table in both directions, beyond
//! RFC 7247 §6.4 step 5 (standards.md §3.3 pitfall), so every SIP user part maps to a
//! valid XMPP localpart and back.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Why an address cannot be mapped. Answered as SIP 404 / XMPP `jid-malformed`
/// (product.md), or 416 for a `sips:` target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("not a SIP URI: {0}")]
    NotSip(String),
    #[error("sips: targets are never translated (RFC 7247 §8)")]
    Sips,
    #[error("no user part in {0}")]
    NoUser(String),
    #[error("user part is not UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("localpart invalid after escaping: {0}")]
    InvalidLocalpart(String),
    #[error("JID invalid: {0}")]
    InvalidJid(String),
    #[error("domain {0} is not served by this gateway")]
    UnservedDomain(String),
}

/// XEP-0106 §4 escape table: character → sequence.
const ESCAPES: [(char, &str); 10] = [
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
    ('\\', "\\5c"),
];

/// The escape sequence starting at `s`, if `s` starts with one of the ten (lowercase hex,
/// as XEP-0106 writes them; `\41` and partial sequences are not escapes).
fn escape_at(s: &str) -> Option<char> {
    let seq = s.get(..3)?;
    ESCAPES.iter().find(|(_, e)| *e == seq).map(|(c, _)| *c)
}

/// Escapes a would-be localpart (XEP-0106 §4.2): a backslash that starts a valid escape
/// sequence is itself escaped to `\5c`; the ten special characters become sequences;
/// every other character, including a lone backslash, is kept.
pub fn escape_localpart(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 8);
    for (i, c) in raw.char_indices() {
        if c == '\\' {
            if escape_at(&raw[i..]).is_some() {
                out.push_str("\\5c");
            } else {
                out.push('\\');
            }
            continue;
        }
        match ESCAPES.iter().find(|(ch, _)| *ch == c) {
            Some((_, seq)) => out.push_str(seq),
            None => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_localpart`]: only the exact ten sequences are unescaped, left to
/// right, each once (XEP-0106 §4.3).
pub fn unescape_localpart(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let rest = &escaped[i..];
        if rest.starts_with('\\') {
            if let Some(c) = escape_at(rest) {
                out.push(c);
                i += 3;
                continue;
            }
        }
        let c = rest.chars().next().expect("i is on a char boundary");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// A JID split into its parts (RFC 7622). Parts are kept as given (escaped localpart).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JidParts {
    pub local: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

/// RFC 7622 §3: each part at most 1023 octets.
const MAX_PART: usize = 1023;

impl JidParts {
    /// Splits `local@domain/resource` (the resource may contain `@` and `/`).
    pub fn parse(jid: &str) -> Result<JidParts, MapError> {
        let (bare, resource) = match jid.find('/') {
            Some(i) => (&jid[..i], Some(&jid[i + 1..])),
            None => (jid, None),
        };
        let (local, domain) = match bare.find('@') {
            Some(i) => (Some(&bare[..i]), &bare[i + 1..]),
            None => (None, bare),
        };
        let parts = JidParts {
            local: local.map(str::to_string),
            domain: domain.to_ascii_lowercase(),
            resource: resource.map(str::to_string),
        };
        parts.validate()?;
        Ok(parts)
    }

    fn validate(&self) -> Result<(), MapError> {
        if self.domain.is_empty() || self.domain.len() > MAX_PART || self.domain.contains('@') {
            return Err(MapError::InvalidJid(format!(
                "bad domainpart {:?}",
                self.domain
            )));
        }
        if let Some(l) = &self.local {
            validate_localpart(l)?;
        }
        if let Some(r) = &self.resource {
            if r.is_empty() || r.len() > MAX_PART || r.chars().any(char::is_control) {
                return Err(MapError::InvalidJid("bad resourcepart".into()));
            }
        }
        Ok(())
    }

    pub fn bare(&self) -> String {
        match &self.local {
            Some(l) => format!("{l}@{}", self.domain),
            None => self.domain.clone(),
        }
    }
}

impl fmt::Display for JidParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bare())?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

/// RFC 7622 §3.3 / RFC 7247 Table 1: no `" & ' / : < > @`, space or controls, 1..=1023
/// octets, and `\20` neither first nor last (XEP-0106 §4.2).
fn validate_localpart(l: &str) -> Result<(), MapError> {
    if l.is_empty() || l.len() > MAX_PART {
        return Err(MapError::InvalidLocalpart(format!("length {}", l.len())));
    }
    if let Some(c) = l.chars().find(|c| {
        matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@' | ' ') || c.is_control()
    }) {
        return Err(MapError::InvalidLocalpart(format!(
            "forbidden character {c:?}"
        )));
    }
    if l.starts_with("\\20") || l.ends_with("\\20") {
        return Err(MapError::InvalidLocalpart("\\20 at an end".into()));
    }
    Ok(())
}

/// The parts of a `sip:`/`pres:`/`im:` URI the mapping needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriParts {
    /// Percent-decoded user part.
    pub user: String,
    pub host: String,
    /// The `gr` URI parameter (a GRUU), if any.
    pub gr: Option<String>,
}

/// Splits a SIP-family URI (RFC 7247 §6.4 steps 1–4). `sips:` is refused (§3.7).
pub fn split_uri(uri: &str) -> Result<UriParts, MapError> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = uri.to_ascii_lowercase();
    let rest = if lower.starts_with("sips:") {
        return Err(MapError::Sips);
    } else if lower.starts_with("sip:") {
        &uri[4..]
    } else if lower.starts_with("pres:") || lower.starts_with("im:") {
        &uri[uri.find(':').map_or(0, |i| i + 1)..]
    } else {
        return Err(MapError::NotSip(uri.to_string()));
    };
    // Headers (`?…`) never take part in the address.
    let rest = rest.split('?').next().unwrap_or("");
    let at = rest
        .find('@')
        .ok_or_else(|| MapError::NoUser(uri.to_string()))?;
    let user_enc = &rest[..at];
    // A password (`user:pw@`) is not part of the identity.
    let user_enc = user_enc.split(':').next().unwrap_or("");
    let mut host_params = rest[at + 1..].split(';');
    let hostport = host_params.next().unwrap_or("");
    let host = strip_port(hostport).to_ascii_lowercase();
    let mut gr = None;
    for p in host_params {
        let (name, value) = match p.find('=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        if name.eq_ignore_ascii_case("gr") {
            gr = value
                .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
                .filter(|v| !v.is_empty());
        }
    }
    let user = percent_decode_str(user_enc)
        .decode_utf8()
        .map_err(|_| MapError::NotUtf8)?
        .into_owned();
    if user.is_empty() {
        return Err(MapError::NoUser(uri.to_string()));
    }
    if host.is_empty() {
        return Err(MapError::NotSip(uri.to_string()));
    }
    Ok(UriParts { user, host, gr })
}

fn strip_port(hostport: &str) -> &str {
    if hostport.starts_with('[') {
        return match hostport.find(']') {
            Some(i) => &hostport[..=i],
            None => hostport,
        };
    }
    match hostport.rfind(':') {
        Some(i) if hostport[i + 1..].chars().all(|c| c.is_ascii_digit()) => &hostport[..i],
        _ => hostport,
    }
}

/// Characters percent-encoded in a SIP user part (RFC 3261 §25.1 `user`: unreserved and
/// `& = + $ , ; ? /` stay; RFC 7247 §6.5 step 5 adds `# % [ \ ] ^ ` { | }`).
const SIP_USER_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'@')
    .add(b':')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters percent-encoded in a `gr` parameter value (RFC 3261 `paramchar`).
const PARAM_ENCODE: &AsciiSet = &SIP_USER_ENCODE
    .add(b';')
    .add(b'=')
    .add(b'?')
    .add(b',')
    .add(b'&');

/// Percent-encodes a raw user part for a SIP URI.
pub fn encode_sip_user(user: &str) -> String {
    utf8_percent_encode(user, SIP_USER_ENCODE).to_string()
}

/// RFC 7247 §6.4 with full XEP-0106: `sip:user@host;gr=x` → `escaped(user)@host/x`.
pub fn sip_uri_to_jid(uri: &str) -> Result<JidParts, MapError> {
    let parts = split_uri(uri)?;
    let local = escape_localpart(&parts.user);
    let jid = JidParts {
        local: Some(local),
        domain: parts.host,
        resource: parts.gr,
    };
    jid.validate()?;
    Ok(jid)
}

/// RFC 7247 §6.5 with full XEP-0106: `local@domain/res` → `sip:unescaped(local)@domain;gr=res`.
pub fn jid_to_sip_uri(jid: &JidParts) -> String {
    let mut uri = String::from("sip:");
    if let Some(l) = &jid.local {
        uri.push_str(&encode_sip_user(&unescape_localpart(l)));
        uri.push('@');
    }
    uri.push_str(&jid.domain);
    if let Some(r) = &jid.resource {
        uri.push_str(";gr=");
        uri.push_str(&utf8_percent_encode(r, PARAM_ENCODE).to_string());
    }
    uri
}

/// How SIP users appear as JIDs under a component domain (product.md "Address mapping").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingScheme {
    /// `bob@sip.example.org` ↔ `sip:bob@example.org` (RFC 7247, OpenSIPS "transparent").
    Domain,
    /// `bob\40example.org@sip.example.org` ↔ any `sip:bob@example.org` (XEP-0100 style).
    Escaped,
    /// `bob*example.org@sip.example.org` ↔ `sip:bob@example.org` (Kamailio `domain_separator`).
    Delimiter(char),
}

/// One `[[bridge.domains]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainMap {
    /// The XMPP server's users' domain (`xmpp.example.org`).
    pub xmpp_domain: String,
    /// The component's domain, where SIP users live as JIDs (`sip.example.org`).
    pub component_domain: String,
    /// The SIP domain mapped to the component domain (`example.org`); for `escaped` and
    /// `delimiter` the SIP domain travels inside the localpart instead.
    pub sip_domain: String,
    /// The gateway's own SIP host, under which `delimiter` puts XMPP users
    /// (`sip:alice*xmpp.example.org@gw.example.org`).
    pub gateway_sip_host: String,
    pub scheme: MappingScheme,
}

impl DomainMap {
    /// The JID under which the SIP user of `uri` appears to XMPP users.
    pub fn sip_user_to_jid(&self, uri: &str) -> Result<JidParts, MapError> {
        let p = split_uri(uri)?;
        let raw_local = match &self.scheme {
            MappingScheme::Domain => {
                if p.host != self.sip_domain {
                    return Err(MapError::UnservedDomain(p.host));
                }
                p.user.clone()
            }
            MappingScheme::Escaped => format!("{}@{}", p.user, p.host),
            MappingScheme::Delimiter(d) => {
                if p.user.contains(*d) {
                    // The delimiter would be ambiguous on the way back.
                    return Err(MapError::InvalidLocalpart(format!(
                        "user contains delimiter {d:?}"
                    )));
                }
                format!("{}{d}{}", p.user, p.host)
            }
        };
        let jid = JidParts {
            local: Some(escape_localpart(&raw_local)),
            domain: self.component_domain.clone(),
            resource: p.gr,
        };
        jid.validate()?;
        Ok(jid)
    }

    /// The SIP URI of the SIP user a component JID stands for (the resource becomes `gr`).
    pub fn jid_to_sip_user(&self, jid: &JidParts) -> Result<String, MapError> {
        if !jid.domain.eq_ignore_ascii_case(&self.component_domain) {
            return Err(MapError::UnservedDomain(jid.domain.clone()));
        }
        let local = jid
            .local
            .as_deref()
            .ok_or_else(|| MapError::NoUser(jid.to_string()))?;
        let raw = unescape_localpart(local);
        let (user, host) = match &self.scheme {
            MappingScheme::Domain => (raw, self.sip_domain.clone()),
            MappingScheme::Escaped => match raw.rfind('@') {
                Some(i) if i > 0 && i + 1 < raw.len() => {
                    (raw[..i].to_string(), raw[i + 1..].to_ascii_lowercase())
                }
                _ => {
                    return Err(MapError::InvalidJid(format!(
                        "{local} carries no SIP domain"
                    )))
                }
            },
            MappingScheme::Delimiter(d) => match raw.rfind(*d) {
                Some(i) if i > 0 && i + d.len_utf8() < raw.len() => (
                    raw[..i].to_string(),
                    raw[i + d.len_utf8()..].to_ascii_lowercase(),
                ),
                _ => {
                    return Err(MapError::InvalidJid(format!(
                        "{local} carries no SIP domain"
                    )))
                }
            },
        };
        let mut uri = format!("sip:{}@{}", encode_sip_user(&user), host);
        if let Some(r) = &jid.resource {
            uri.push_str(";gr=");
            uri.push_str(&utf8_percent_encode(r, PARAM_ENCODE).to_string());
        }
        Ok(uri)
    }

    /// The SIP URI under which an XMPP user of this domain appears to SIP users.
    pub fn xmpp_user_to_sip_uri(&self, jid: &JidParts) -> Result<String, MapError> {
        if !jid.domain.eq_ignore_ascii_case(&self.xmpp_domain) {
            return Err(MapError::UnservedDomain(jid.domain.clone()));
        }
        let local = jid
            .local
            .as_deref()
            .ok_or_else(|| MapError::NoUser(jid.to_string()))?;
        let raw = unescape_localpart(local);
        Ok(match &self.scheme {
            MappingScheme::Delimiter(d) => format!(
                "sip:{}{d}{}@{}",
                encode_sip_user(&raw),
                self.xmpp_domain,
                self.gateway_sip_host
            ),
            _ => format!("sip:{}@{}", encode_sip_user(&raw), self.xmpp_domain),
        })
    }

    /// The XMPP user (bare JID) a SIP Request-URI addresses, if it is one of ours.
    pub fn sip_uri_to_xmpp_user(&self, uri: &str) -> Result<JidParts, MapError> {
        let p = split_uri(uri)?;
        let (user, domain) = match &self.scheme {
            MappingScheme::Delimiter(d) if p.host == self.gateway_sip_host => {
                match p.user.rfind(*d) {
                    Some(i) => (
                        p.user[..i].to_string(),
                        p.user[i + d.len_utf8()..].to_ascii_lowercase(),
                    ),
                    None => {
                        return Err(MapError::InvalidJid(format!(
                            "{} carries no XMPP domain",
                            p.user
                        )))
                    }
                }
            }
            _ => (p.user, p.host),
        };
        if domain != self.xmpp_domain {
            return Err(MapError::UnservedDomain(domain));
        }
        let jid = JidParts {
            local: Some(escape_localpart(&user)),
            domain,
            resource: None,
        };
        jid.validate()?;
        Ok(jid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> JidParts {
        JidParts::parse(s).unwrap()
    }

    /// standards.md §16 case 6.
    #[test]
    fn apostrophe_in_sip_user_is_escaped() {
        assert_eq!(
            sip_uri_to_jid("sip:o'malley@sip.example")
                .unwrap()
                .to_string(),
            "o\\27malley@sip.example"
        );
    }

    /// Case 7.
    #[test]
    fn percent_encoded_utf8_user_is_decoded() {
        assert_eq!(
            sip_uri_to_jid("sip:f%C3%BC@sip.example")
                .unwrap()
                .to_string(),
            "fü@sip.example"
        );
    }

    /// Case 8.
    #[test]
    fn gruu_becomes_resource() {
        assert_eq!(
            sip_uri_to_jid("sip:ben@sip.example;gr=ph7")
                .unwrap()
                .to_string(),
            "ben@sip.example/ph7"
        );
    }

    /// Case 9.
    #[test]
    fn escaped_ampersand_is_unescaped_for_sip() {
        assert_eq!(
            jid_to_sip_uri(&jid("m\\26m@xmpp.example")),
            "sip:m&m@xmpp.example"
        );
    }

    /// Case 10.
    #[test]
    fn non_ascii_localpart_is_percent_encoded() {
        assert_eq!(
            jid_to_sip_uri(&jid("tschüss@xmpp.example")),
            "sip:tsch%C3%BCss@xmpp.example"
        );
    }

    /// Case 11.
    #[test]
    fn resource_becomes_gr_parameter() {
        assert_eq!(
            jid_to_sip_uri(&jid("anna@xmpp.example/desk")),
            "sip:anna@xmpp.example;gr=desk"
        );
    }

    /// Case 12: full XEP-0106, beyond RFC 7247 step 5.
    #[test]
    fn percent_encoded_at_sign_is_fully_escaped() {
        assert_eq!(
            sip_uri_to_jid("sip:a%40b@sip.example").unwrap().to_string(),
            "a\\40b@sip.example"
        );
    }

    /// Case 13.
    #[test]
    fn existing_escape_sequence_is_pre_escaped_and_round_trips() {
        assert_eq!(escape_localpart("c:\\5commas"), "c\\3a\\5c5commas");
        assert_eq!(unescape_localpart("c\\3a\\5c5commas"), "c:\\5commas");
        assert_eq!(escape_localpart("foob\\41r"), "foob\\41r");
        assert_eq!(unescape_localpart("foob\\41r"), "foob\\41r");
    }

    /// Case 14 (address part): a sips: target is refused, never translated.
    #[test]
    fn sips_uri_is_refused() {
        assert_eq!(
            sip_uri_to_jid("sips:anna@xmpp.example"),
            Err(MapError::Sips)
        );
    }

    #[test]
    fn leading_space_after_decoding_is_rejected() {
        assert!(matches!(
            sip_uri_to_jid("sip:%20bob@sip.example"),
            Err(MapError::InvalidLocalpart(_))
        ));
    }

    #[test]
    fn maximum_length_jid_is_handled() {
        let local = "a".repeat(1023);
        let res = "r".repeat(1023);
        let j = JidParts::parse(&format!("{local}@{}/{res}", "d".repeat(1023))).unwrap();
        assert_eq!(j.to_string().len(), 3071);
        assert!(JidParts::parse(&format!("{}@x", "a".repeat(1024))).is_err());
    }
}
