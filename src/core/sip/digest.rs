//! Digest authentication for outbound requests (RFC 3261 §22, RFC 7616 for SHA-256),
//! owner: sip-stack.
//!
//! [`DigestChallenge::parse`] reads a `WWW-Authenticate` / `Proxy-Authenticate` value and
//! [`authorization`] computes the matching `Authorization` / `Proxy-Authorization` value.
//! `qop=auth` is used when offered (RFC 2617 §3.2.2); a challenge without qop is answered
//! RFC 2069 style (no cnonce/nc unless a `-sess` algorithm needs the cnonce). A challenge
//! offering only `auth-int` is answered without qop, since the body is not part of this
//! API; the server will most likely refuse it.

use std::fmt;

use md5::{Digest as _, Md5};
use sha2::Sha256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// The lowercase hex digest of `data` (RFC 7616 §3.4 `H`).
    pub fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                hex::encode(Sha256::digest(data.as_bytes()))
            }
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad digest challenge: {0}")]
pub struct DigestError(pub String);

/// A `Digest` challenge (RFC 7616 §3.3, RFC 3261 §22.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `MD5` when the challenge names none.
    pub algorithm: Algorithm,
    /// Offered qop values, lowercased (`auth`, `auth-int`); empty when none was offered.
    pub qop: Vec<String>,
    /// `stale=true`: the nonce expired but the credentials were right (retry at once).
    pub stale: bool,
}

impl DigestChallenge {
    /// Parses `Digest realm="…", nonce="…", …`. Parameter names and the scheme are
    /// case-insensitive; unknown parameters are ignored. Errors: another scheme, a
    /// missing realm or nonce, an unsupported algorithm, broken quoting.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, rest) = match value.find(char::is_whitespace) {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError(format!("scheme {scheme:?} is not Digest")));
        }
        let params = parse_auth_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or_else(|| DigestError("missing realm".into()))?;
        let nonce = get("nonce").ok_or_else(|| DigestError("missing nonce".into()))?;
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a)
                .ok_or_else(|| DigestError(format!("unsupported algorithm {a}")))?,
        };
        let qop = get("qop")
            .map(|q| {
                q.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(DigestChallenge {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: get("opaque").map(str::to_string),
            algorithm,
            qop,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Parses `name=token` / `name="quoted"` pairs separated by commas (RFC 7235 §2.1); used by
/// both the client side here and the verifier (`digest_server`).
pub(crate) fn parse_auth_params(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            continue;
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| DigestError("parameter without '='".into()))?;
        let name = rest[..eq].trim();
        if name.is_empty() || name.contains([',', '"', ' ', '\t']) {
            return Err(DigestError("bad parameter name".into()));
        }
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in q.char_indices() {
                if escaped {
                    v.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                } else {
                    v.push(c);
                }
            }
            let end = end.ok_or_else(|| DigestError("unterminated quoted string".into()))?;
            (v, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((name.to_string(), value));
        let remaining = remaining.trim_start();
        if !(remaining.is_empty() || remaining.starts_with(',')) {
            return Err(DigestError("text after a parameter value".into()));
        }
        rest = remaining;
    }
    Ok(out)
}

/// `s` as an RFC 7230 quoted-string (`"` and `\` escaped).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `request-digest` (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1–3.4.3) for `qop=auth`
/// (`Some(nc)`) or no qop (`None`).
pub fn response_digest(
    ch: &DigestChallenge,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: Option<u32>,
) -> String {
    let alg = ch.algorithm;
    let mut ha1 = alg.hash_hex(&format!("{username}:{}:{password}", ch.realm));
    if alg.is_sess() {
        ha1 = alg.hash_hex(&format!("{ha1}:{}:{cnonce}", ch.nonce));
    }
    let ha2 = alg.hash_hex(&format!("{method}:{uri}"));
    match nc {
        Some(nc) => alg.hash_hex(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", ch.nonce)),
        None => alg.hash_hex(&format!("{ha1}:{}:{ha2}", ch.nonce)),
    }
}

/// The `Authorization` / `Proxy-Authorization` value answering `ch` for a request with
/// `method` and Request-URI `uri` (RFC 3261 §22.2: the `uri` is the Request-URI).
/// `nc` is the nonce count for this nonce (1 for its first use); `cnonce` comes from the
/// caller's `IdGenerator`.
pub fn authorization(
    ch: &DigestChallenge,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let use_qop = ch.qop.iter().any(|q| q == "auth");
    let response = response_digest(
        ch,
        method,
        uri,
        username,
        password,
        cnonce,
        use_qop.then_some(nc),
    );
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quote(username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri),
        ch.algorithm
    );
    if use_qop || ch.algorithm.is_sess() {
        out.push_str(&format!(", cnonce={}", quote(cnonce)));
    }
    if let Some(opaque) = &ch.opaque {
        out.push_str(&format!(", opaque={}", quote(opaque)));
    }
    if use_qop {
        out.push_str(&format!(", qop=auth, nc={nc:08x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_challenge() {
        let ch = DigestChallenge::parse(
            r#"Digest realm="sip.example", qop="auth,auth-int", nonce="abc", opaque="xyz", algorithm=SHA-256, stale=TRUE"#,
        )
        .unwrap();
        assert_eq!(ch.realm, "sip.example");
        assert_eq!(ch.nonce, "abc");
        assert_eq!(ch.opaque.as_deref(), Some("xyz"));
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        assert_eq!(ch.qop, vec!["auth", "auth-int"]);
        assert!(ch.stale);
    }

    #[test]
    fn algorithm_defaults_to_md5_and_qop_to_none() {
        let ch = DigestChallenge::parse(r#"digest realm="r",nonce="n""#).unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert!(ch.qop.is_empty());
        assert!(!ch.stale);
    }

    #[test]
    fn rejects_other_schemes_missing_fields_and_unknown_algorithms() {
        for bad in [
            r#"Basic realm="r""#,
            r#"Digest nonce="n""#,
            r#"Digest realm="r""#,
            r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#,
            r#"Digest realm="r, nonce="n""#,
            "Digest realm",
            "",
        ] {
            assert!(DigestChallenge::parse(bad).is_err(), "{bad}");
        }
    }

    /// RFC 2617 §3.5 example.
    #[test]
    fn md5_qop_auth_matches_rfc2617_example() {
        let ch = DigestChallenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let v = authorization(
            &ch,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle Of Life",
            "0a4f113b",
            1,
        );
        assert!(
            v.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{v}"
        );
        assert!(v.contains("qop=auth, nc=00000001"));
        assert!(v.contains(r#"cnonce="0a4f113b""#));
        assert!(v.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
        assert!(v.starts_with(r#"Digest username="Mufasa", realm="testrealm@host.com""#));
    }

    /// RFC 7616 §3.9.1 example (SHA-256 and its MD5 twin).
    #[test]
    fn sha256_qop_auth_matches_rfc7616_example() {
        let base = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let sha = DigestChallenge::parse(&format!("{base}, algorithm=SHA-256")).unwrap();
        let v = authorization(
            &sha,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            cnonce,
            1,
        );
        assert!(
            v.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{v}"
        );
        assert!(v.contains("algorithm=SHA-256"));
        let md5 = DigestChallenge::parse(&format!("{base}, algorithm=MD5")).unwrap();
        let v = authorization(
            &md5,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            cnonce,
            1,
        );
        assert!(
            v.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#),
            "{v}"
        );
    }

    #[test]
    fn without_qop_answers_rfc2069_style() {
        let ch = DigestChallenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        let v = authorization(&ch, "SUBSCRIBE", "sip:ben@r", "anna", "pw", "cn", 1);
        let expected = Algorithm::Md5.hash_hex(&format!(
            "{}:n:{}",
            Algorithm::Md5.hash_hex("anna:r:pw"),
            Algorithm::Md5.hash_hex("SUBSCRIBE:sip:ben@r")
        ));
        assert!(v.contains(&format!(r#"response="{expected}""#)));
        assert!(!v.contains("qop"));
        assert!(!v.contains("cnonce"));
        assert!(!v.contains("nc="));
    }

    #[test]
    fn sess_algorithm_hashes_nonce_and_cnonce_into_ha1() {
        let ch = DigestChallenge::parse(
            r#"Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess"#,
        )
        .unwrap();
        let a = Algorithm::Md5;
        let ha1 = a.hash_hex(&format!("{}:n:cn", a.hash_hex("u:r:p")));
        let ha2 = a.hash_hex("NOTIFY:sip:x@y");
        let want = a.hash_hex(&format!("{ha1}:n:00000002:cn:auth:{ha2}"));
        let v = authorization(&ch, "NOTIFY", "sip:x@y", "u", "p", "cn", 2);
        assert!(v.contains(&format!(r#"response="{want}""#)));
        assert!(v.contains("algorithm=MD5-sess"));
    }

    #[test]
    fn quotes_in_username_are_escaped() {
        let ch = DigestChallenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        let v = authorization(&ch, "PUBLISH", "sip:a@b", r#"a"b"#, "p", "c", 1);
        assert!(v.contains(r#"username="a\"b""#));
    }
}
