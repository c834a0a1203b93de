//! SIP URIs (RFC 3261 §19.1), owner: sip-stack.
//!
//! [`SipUri`] is a structural view: scheme, user (percent-decoded), password, host, port,
//! URI parameters and headers. `sip:`/`sips:` and other `scheme:user@host` URIs (`pres:`,
//! `im:`) share that shape; `tel:` keeps the number in `user` and an empty host
//! (RFC 3966 has no host part). Display writes the user back percent-encoded with the
//! RFC 3261 §25.1 `user` character set, so `parse` ∘ `to_string` is stable.

use std::fmt;
use std::net::IpAddr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::headers::{bracket_host, parse_host_port, Params};

/// Characters left as they are in the user part: `unreserved` and `user-unreserved`
/// (RFC 3261 §25.1); everything else is escaped.
const USER_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b',')
    .remove(b';')
    .remove(b'?')
    .remove(b'/');

/// Password characters: `unreserved` and `& = + $ ,` (RFC 3261 §25.1).
const PASSWORD_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b',');

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other scheme, lowercased (`pres`, `im`, `xmpp`…).
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad URI: {0}")]
pub struct UriError(pub String);

/// A parsed SIP (or SIP-like) URI. `host` is stored without IPv6 brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: Scheme,
    /// The user part, percent-decoded.
    pub user: Option<String>,
    /// The password, percent-decoded (deprecated by RFC 3261 §19.1.1 but parsed).
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`), values verbatim.
    pub params: Params,
    /// URI headers (`?Subject=x&Priority=y`), verbatim (still escaped).
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    /// A `sip:` URI with the given user and host.
    pub fn sip(user: Option<&str>, host: &str) -> Self {
        SipUri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            password: None,
            host: host.to_string(),
            port: None,
            params: Params::default(),
            headers: Vec::new(),
        }
    }

    /// Parses `scheme:[user[:password]@]host[:port][;params][?headers]` (RFC 3261 §19.1.1),
    /// or `tel:number[;params]` (RFC 3966). Surrounding `<>` are not accepted: strip them
    /// first (see `NameAddr`).
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let text = text.trim();
        let (scheme_text, rest) = text
            .split_once(':')
            .ok_or_else(|| UriError(format!("no scheme in {text}")))?;
        if scheme_text.is_empty()
            || !scheme_text.as_bytes()[0].is_ascii_alphabetic()
            || !scheme_text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(UriError(format!("bad scheme in {text}")));
        }
        if rest.is_empty() {
            return Err(UriError("nothing after the scheme".into()));
        }
        if rest.contains(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>') {
            return Err(UriError("URI contains spaces or brackets".into()));
        }
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "sip" => Scheme::Sip,
            "sips" => Scheme::Sips,
            "tel" => Scheme::Tel,
            other => Scheme::Other(other.to_string()),
        };

        if scheme == Scheme::Tel {
            let (number, params) = match rest.split_once(';') {
                Some((n, p)) => (n, Params::parse(p)),
                None => (rest, Params::default()),
            };
            if number.is_empty() {
                return Err(UriError("empty telephone number".into()));
            }
            return Ok(SipUri {
                scheme,
                user: Some(decode(number)?),
                password: None,
                host: String::new(),
                port: None,
                params,
                headers: Vec::new(),
            });
        }

        // '@' never appears unescaped after the userinfo, which itself may hold ';' and '?'.
        let (userinfo, hostpart) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(UriError("empty user before '@'".into()));
                }
                (Some(decode(u)?), p.map(decode).transpose()?)
            }
        };
        let (hostpart, headers_text) = match hostpart.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (hostpart, None),
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, Params::parse(p)),
            None => (hostpart, Params::default()),
        };
        let (host, port) = parse_host_port(hostport).map_err(UriError)?;
        let headers = headers_text
            .map(|q| {
                q.split('&')
                    .filter(|h| !h.is_empty())
                    .map(|h| match h.split_once('=') {
                        Some((n, v)) => (n.to_string(), v.to_string()),
                        None => (h.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(SipUri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// `host[:port]`, IPv6 hosts bracketed.
    pub fn host_port(&self) -> String {
        let host = bracket_host(&self.host);
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// The host as an IP address when it is a numeric IPv4 or IPv6 literal.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether the host is a numeric IP (RFC 3263 §4.1: then no NAPTR/SRV lookup).
    pub fn is_numeric_host(&self) -> bool {
        self.host_ip().is_some()
    }

    /// The `transport` URI parameter, lowercased.
    pub fn transport(&self) -> Option<String> {
        self.params.value("transport").map(str::to_ascii_lowercase)
    }

    /// `user@host` (no port, params or scheme), the address-of-record key this gateway
    /// uses; just the host when there is no user.
    pub fn user_host(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

fn decode(s: &str) -> Result<String, UriError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| UriError("percent-escapes are not UTF-8".into()))
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if self.scheme == Scheme::Tel {
            if let Some(u) = &self.user {
                write!(f, "{}", utf8_percent_encode(u, USER_ENCODE))?;
            }
            return write!(f, "{}", self.params);
        }
        if let Some(u) = &self.user {
            write!(f, "{}", utf8_percent_encode(u, USER_ENCODE))?;
            if let Some(p) = &self.password {
                write!(f, ":{}", utf8_percent_encode(p, PASSWORD_ENCODE))?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}{}", self.host_port(), self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl std::str::FromStr for SipUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SipUri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_host_port_params_and_headers() {
        let u = SipUri::parse("sip:ben@sip.example:5070;transport=TCP;lr?Subject=hi&X=1").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("ben"));
        assert_eq!(u.host, "sip.example");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert!(u.params.has("lr"));
        assert_eq!(
            u.headers,
            vec![("Subject".into(), "hi".into()), ("X".into(), "1".into())]
        );
    }

    #[test]
    fn user_is_percent_decoded_and_reencoded() {
        let u = SipUri::parse("sip:anna%20b%40x@gw.example").unwrap();
        assert_eq!(u.user.as_deref(), Some("anna b@x"));
        assert_eq!(u.to_string(), "sip:anna%20b%40x@gw.example");
    }

    #[test]
    fn user_unreserved_characters_are_not_escaped() {
        let u = SipUri::sip(Some("+1;phone=x&y?z/w"), "h");
        assert_eq!(u.to_string(), "sip:+1;phone=x&y?z/w@h");
    }

    #[test]
    fn password_is_parsed() {
        let u = SipUri::parse("sips:alice:se%2Fcret@h").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.password.as_deref(), Some("se/cret"));
        assert_eq!(u.to_string(), "sips:alice:se%2Fcret@h");
    }

    #[test]
    fn ipv6_host_keeps_brackets_in_host_port() {
        let u = SipUri::parse("sip:ben@[2001:db8::1]:5060").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.host_port(), "[2001:db8::1]:5060");
        assert!(u.is_numeric_host());
        assert_eq!(u.to_string(), "sip:ben@[2001:db8::1]:5060");
    }

    #[test]
    fn numeric_ipv4_is_detected_and_names_are_not() {
        assert!(SipUri::parse("sip:10.0.0.1").unwrap().is_numeric_host());
        assert!(!SipUri::parse("sip:sip.example").unwrap().is_numeric_host());
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(SipUri::parse("SIP:a@b").unwrap().scheme, Scheme::Sip);
    }

    #[test]
    fn tel_uri_keeps_number_as_user() {
        let u = SipUri::parse("tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(u.to_string(), "tel:+1-201-555-0123;phone-context=x");
    }

    #[test]
    fn other_schemes_parse_like_sip() {
        let u = SipUri::parse("pres:anna@xmpp.example").unwrap();
        assert_eq!(u.scheme, Scheme::Other("pres".into()));
        assert_eq!(u.user_host(), "anna@xmpp.example");
    }

    #[test]
    fn rejects_missing_scheme_bad_port_and_empty_host() {
        assert!(SipUri::parse("ben@sip.example").is_err());
        assert!(SipUri::parse("sip:ben@h:99999").is_err());
        assert!(SipUri::parse("sip:ben@").is_err());
        assert!(SipUri::parse("sip:").is_err());
        assert!(SipUri::parse("sip:a b@h").is_err());
    }

    #[test]
    fn display_round_trips() {
        for t in [
            "sip:ben@sip.example",
            "sip:h:5060;lr",
            "sip:a@b;transport=udp?h=v",
        ] {
            assert_eq!(SipUri::parse(t).unwrap().to_string(), t);
        }
    }
}
