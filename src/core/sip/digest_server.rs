//! Digest authentication of requests from phones: the server side of RFC 3261 §22.4, with
//! RFC 2617 `qop=auth`, RFC 2069 (no qop) and RFC 7616 SHA-256. Pure: time and randomness
//! are inputs.
//!
//! The hashing is [`Algorithm::hash_hex`] from the client side ([`super::digest`]), so both
//! sides compute `H`, `KD` and the request-digest from one definition.
//!
//! # Nonces
//! Stateless and self-verifying: `<issued>.<token>.<mac>`, where `issued` is the issue time
//! (ms since the epoch, lowercase hex), `token` 16 characters from the caller's
//! [`IdGenerator`], and `mac` the first 128 bits (32 hex digits) of
//! HMAC-SHA256(secret, `"<issued>.<token>:<realm>"`) (RFC 2104, written here on `sha2`).
//! The realm is under the MAC so a nonce of one realm is worthless in another. A nonce
//! whose MAC does not verify is treated as unknown (a fresh challenge); one older than
//! `nonce_lifetime_secs`, or issued "in the future" (the clock went back), is stale.
//!
//! Being stateless, the server keeps no nonce counts: a captured request can be replayed
//! while its nonce is fresh (at most `nonce_lifetime_secs`). That is the trade made for
//! surviving restarts and needing no per-phone memory; a short lifetime bounds it.
//!
//! # What a failure says
//! An unknown user, a wrong password, a missing stored form for the algorithm, a foreign
//! realm and a malformed or forged nonce all give the same answer: a fresh challenge with
//! `stale=false`. Only correct credentials on an expired nonce give `stale=true`
//! (RFC 7616 §3.3: "stale … the client's request was valid but the nonce was not"). An
//! unknown user is hashed against a dummy HA1 so the work done does not tell either.

use sha2::{Digest as _, Sha256};

use super::digest::{quote, Algorithm};
use super::message::Request;
use crate::core::ids::IdGenerator;
use crate::core::time::Timestamp;

/// What the server knows of a user's password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredSecret {
    /// The password itself (from the config file).
    Password(String),
    /// `H(username:realm:password)` per algorithm, lowercase hex (RFC 7616 §3.4.2); a
    /// missing form means that algorithm cannot authenticate this user.
    Ha1 {
        md5: Option<String>,
        sha256: Option<String>,
    },
}

impl std::fmt::Debug for StoredSecret {
    /// Never prints the password or the HA1s (they reach logs through `Debug`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredSecret::Password(_) => f.write_str("Password(<redacted>)"),
            StoredSecret::Ha1 { md5, sha256 } => f
                .debug_struct("Ha1")
                .field("md5", &md5.as_ref().map(|_| "<redacted>"))
                .field("sha256", &sha256.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

impl StoredSecret {
    /// `HA1 = H(username:realm:password)` for a non-`-sess` algorithm, `None` when this
    /// secret has no form for it.
    pub fn ha1(&self, alg: Algorithm, username: &str, realm: &str) -> Option<String> {
        let base = base_algorithm(alg);
        match self {
            StoredSecret::Password(p) => Some(base.hash_hex(&format!("{username}:{realm}:{p}"))),
            StoredSecret::Ha1 { md5, sha256 } => match base {
                Algorithm::Sha256 => sha256.as_ref(),
                _ => md5.as_ref(),
            }
            .map(|h| h.trim().to_ascii_lowercase()),
        }
    }

    /// The two HA1 forms of a password, for storing instead of it.
    pub fn ha1_from_password(username: &str, realm: &str, password: &str) -> StoredSecret {
        let input = format!("{username}:{realm}:{password}");
        StoredSecret::Ha1 {
            md5: Some(Algorithm::Md5.hash_hex(&input)),
            sha256: Some(Algorithm::Sha256.hash_hex(&input)),
        }
    }
}

/// Where the server finds users' secrets; the realm is the domain they belong to.
pub trait UserDirectory {
    fn secret(&self, username: &str, realm: &str) -> Option<StoredSecret>;
}

#[derive(Clone, PartialEq, Eq)]
pub struct DigestServerConfig {
    /// Key of the nonce MAC (at least 16 bytes). The caller configures or persists it: a new
    /// key at start makes every outstanding nonce unknown, which only costs phones one
    /// extra challenge.
    pub secret: Vec<u8>,
    /// How long a nonce is accepted (300 s).
    pub nonce_lifetime_secs: u64,
    /// Offered algorithms, most preferred first (RFC 7616 §3.7): SHA-256, then MD5 for the
    /// many phones that know only MD5.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for DigestServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServerConfig")
            .field("secret", &"<redacted>")
            .field("nonce_lifetime_secs", &self.nonce_lifetime_secs)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl DigestServerConfig {
    /// The defaults with this key.
    pub fn with_secret(secret: Vec<u8>) -> Self {
        DigestServerConfig {
            secret,
            nonce_lifetime_secs: 300,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestServerError {
    #[error("the nonce key must have at least 16 bytes")]
    ShortSecret,
    #[error("no digest algorithm offered")]
    NoAlgorithm,
    #[error("nonce lifetime must be above zero")]
    ZeroLifetime,
}

/// The verdict on a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthCheck {
    Authenticated {
        username: String,
    },
    /// Answer 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`) with one header per
    /// value, in order.
    Challenge {
        headers: Vec<String>,
        stale: bool,
    },
    /// Right credentials, wrong identity (RFC 3261 §10.3 step 3: answer 403).
    Forbidden,
}

/// The challenge header that goes with a credentials header: `WWW-Authenticate` for
/// `Authorization` (401), `Proxy-Authenticate` for `Proxy-Authorization` (407).
pub fn challenge_header_for(credentials_header: &str) -> &'static str {
    if credentials_header.eq_ignore_ascii_case("Proxy-Authorization") {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    }
}

#[derive(Clone, Debug)]
pub struct DigestServer {
    cfg: DigestServerConfig,
}

/// Stands in for an unknown user's HA1, so that path hashes as much as a known one.
const DUMMY_SECRET: &str = "\u{0}no such user\u{0}";

impl DigestServer {
    pub fn new(cfg: DigestServerConfig) -> Result<Self, DigestServerError> {
        if cfg.secret.len() < 16 {
            return Err(DigestServerError::ShortSecret);
        }
        if cfg.algorithms.is_empty() {
            return Err(DigestServerError::NoAlgorithm);
        }
        if cfg.nonce_lifetime_secs == 0 {
            return Err(DigestServerError::ZeroLifetime);
        }
        Ok(DigestServer { cfg })
    }

    /// One `WWW-Authenticate` / `Proxy-Authenticate` value per offered algorithm, sharing
    /// one fresh nonce: `Digest realm="…", nonce="…", algorithm=…, qop="auth"[, stale=true]`.
    pub fn challenge(
        &self,
        now: Timestamp,
        ids: &mut IdGenerator,
        realm: &str,
        stale: bool,
    ) -> Vec<String> {
        let nonce = self.nonce(now, ids.token(16).as_str(), realm);
        self.cfg
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm={}, nonce=\"{nonce}\", algorithm={alg}, qop=\"auth\"",
                    quote(realm)
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Checks the `header` credentials (`Authorization` for the 401 flow,
    /// `Proxy-Authorization` for 407) of `req` for `realm`. Among several credentials the
    /// Digest one for `realm` is taken (RFC 3261 §22.3).
    pub fn check(
        &self,
        now: Timestamp,
        ids: &mut IdGenerator,
        req: &Request,
        header: &str,
        realm: &str,
        users: &dyn UserDirectory,
    ) -> AuthCheck {
        match self.verify(now, req, header, realm, users) {
            Verdict::Ok(username) => AuthCheck::Authenticated { username },
            Verdict::Stale => AuthCheck::Challenge {
                headers: self.challenge(now, ids, realm, true),
                stale: true,
            },
            Verdict::Fail => AuthCheck::Challenge {
                headers: self.challenge(now, ids, realm, false),
                stale: false,
            },
        }
    }

    /// [`DigestServer::check`], then `Forbidden` unless the authenticated user is
    /// `expected_user` (RFC 3261 §10.3 step 3: may this user register that AOR).
    #[allow(clippy::too_many_arguments)]
    pub fn check_identity(
        &self,
        now: Timestamp,
        ids: &mut IdGenerator,
        req: &Request,
        header: &str,
        realm: &str,
        users: &dyn UserDirectory,
        expected_user: &str,
    ) -> AuthCheck {
        match self.check(now, ids, req, header, realm, users) {
            AuthCheck::Authenticated { username } if username != expected_user => {
                AuthCheck::Forbidden
            }
            other => other,
        }
    }

    fn verify(
        &self,
        now: Timestamp,
        req: &Request,
        header: &str,
        realm: &str,
        users: &dyn UserDirectory,
    ) -> Verdict {
        let Some(cred) = req
            .headers
            .get_all(header)
            .into_iter()
            .filter_map(Credentials::parse)
            .find(|c| c.realm == realm)
        else {
            return Verdict::Fail;
        };
        let Some(alg) = cred.algorithm else {
            return Verdict::Fail;
        };
        if !self.cfg.algorithms.contains(&alg) || cred.userhash {
            return Verdict::Fail;
        }
        let fresh = match self.nonce_age(now, &cred.nonce, realm) {
            NonceState::Fresh => true,
            NonceState::Expired => false,
            NonceState::Invalid => return Verdict::Fail,
        };
        if !uri_matches(&cred.uri, &req.uri) {
            return Verdict::Fail;
        }
        // qop=auth needs cnonce and nc (RFC 2617 §3.2.2); no qop is RFC 2069; auth-int is
        // never offered.
        let qop = match cred.qop.as_deref() {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => match (&cred.cnonce, &cred.nc) {
                (Some(cn), Some(nc)) if is_nc(nc) => Some((cn.as_str(), nc.as_str())),
                _ => return Verdict::Fail,
            },
            Some(_) => return Verdict::Fail,
        };
        if is_sess(alg) && cred.cnonce.is_none() {
            return Verdict::Fail;
        }

        let stored_ha1 = users
            .secret(&cred.username, realm)
            .and_then(|s| s.ha1(alg, &cred.username, realm));
        let have_ha1 = stored_ha1.is_some();
        let mut ha1 = stored_ha1.unwrap_or_else(|| alg.hash_hex(DUMMY_SECRET));
        if is_sess(alg) {
            let cnonce = cred.cnonce.as_deref().unwrap_or("");
            ha1 = alg.hash_hex(&format!("{ha1}:{}:{cnonce}", cred.nonce));
        }
        let ha2 = alg.hash_hex(&format!("{}:{}", req.method.as_str(), cred.uri));
        let expected = match qop {
            Some((cnonce, nc)) => {
                alg.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", cred.nonce))
            }
            None => alg.hash_hex(&format!("{ha1}:{}:{ha2}", cred.nonce)),
        };
        let matches = constant_time_eq(
            cred.response.to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        );
        // Checked after the comparison, so an unknown user costs the same work; the dummy
        // HA1 is no hash of a `user:realm:password` anyone could send, but the check keeps
        // that from resting on luck.
        match (matches && have_ha1, fresh) {
            (true, true) => Verdict::Ok(cred.username),
            (true, false) => Verdict::Stale,
            (false, _) => Verdict::Fail,
        }
    }

    fn nonce(&self, now: Timestamp, token: &str, realm: &str) -> String {
        let body = format!("{:x}.{token}", now.as_millis());
        let mac = self.mac(&body, realm);
        format!("{body}.{mac}")
    }

    fn mac(&self, body: &str, realm: &str) -> String {
        let tag = hmac_sha256(&self.cfg.secret, format!("{body}:{realm}").as_bytes());
        hex::encode(&tag[..16])
    }

    fn nonce_age(&self, now: Timestamp, nonce: &str, realm: &str) -> NonceState {
        let Some((body, mac)) = nonce.rsplit_once('.') else {
            return NonceState::Invalid;
        };
        let Some((issued, token)) = body.split_once('.') else {
            return NonceState::Invalid;
        };
        if issued.is_empty()
            || issued.len() > 16
            || token.is_empty()
            || !issued.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return NonceState::Invalid;
        }
        if !constant_time_eq(mac.as_bytes(), self.mac(body, realm).as_bytes()) {
            return NonceState::Invalid;
        }
        let Ok(issued) = u64::from_str_radix(issued, 16) else {
            return NonceState::Invalid;
        };
        let lifetime_ms = self.cfg.nonce_lifetime_secs.saturating_mul(1000);
        let now = now.as_millis();
        if issued > now || now - issued > lifetime_ms {
            NonceState::Expired
        } else {
            NonceState::Fresh
        }
    }
}

enum Verdict {
    Ok(String),
    Stale,
    Fail,
}

enum NonceState {
    Fresh,
    Expired,
    Invalid,
}

fn base_algorithm(alg: Algorithm) -> Algorithm {
    match alg {
        Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
        Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
    }
}

fn is_sess(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::Md5Sess | Algorithm::Sha256Sess)
}

/// `nc-value = 8LHEX` (RFC 2617 §3.2.2); upper case accepted, the value is hashed as sent.
fn is_nc(nc: &str) -> bool {
    nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `uri` directive (RFC 2617 §3.2.2.5) should name the Request-URI, but real UAs
/// write what they sent before a proxy rewrote it, or the next hop (SIPp 3.6 writes the
/// remote address): like Kamailio's `auth` module, any SIP or SIPS URI is accepted, and
/// the digest is computed over the directive as sent, so the credentials stay bound to
/// it. Anything that is not a SIP URI is refused.
fn uri_matches(directive: &str, request_uri: &str) -> bool {
    if directive == request_uri {
        return true;
    }
    matches!(
        super::uri::SipUri::parse(directive).map(|u| u.scheme),
        Ok(super::uri::Scheme::Sip | super::uri::Scheme::Sips)
    )
}

/// Equality whose time depends only on the lengths (which are not secret: a digest's
/// length follows from its algorithm).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104 with SHA-256, block size 64).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The Digest `credentials` of an `Authorization` / `Proxy-Authorization` value
/// (RFC 3261 §25.1 `digest-response`, RFC 7616 §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// `None` for an algorithm this code does not know; `MD5` when absent.
    pub algorithm: Option<Algorithm>,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
    pub opaque: Option<String>,
    /// RFC 7616 §3.4.4 `userhash=true` (not supported: always refused).
    pub userhash: bool,
}

impl Credentials {
    /// Parses `Digest username="…", realm="…", …`; `None` for another scheme, a missing
    /// `username`/`realm`/`nonce`/`uri`/`response`, a repeated parameter or broken syntax.
    pub fn parse(value: &str) -> Option<Credentials> {
        let value = value.trim();
        let (scheme, rest) = match value.find(char::is_whitespace) {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let params = parse_auth_params(rest)?;
        for (i, (n, _)) in params.iter().enumerate() {
            if params[..i].iter().any(|(m, _)| m.eq_ignore_ascii_case(n)) {
                return None;
            }
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        Some(Credentials {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?,
            algorithm: match get("algorithm") {
                None => Some(Algorithm::Md5),
                Some(a) => Algorithm::parse(&a),
            },
            cnonce: get("cnonce"),
            nc: get("nc"),
            qop: get("qop"),
            opaque: get("opaque"),
            userhash: get("userhash").is_some_and(|u| u.eq_ignore_ascii_case("true")),
        })
    }
}

/// `name=token` / `name="quoted"` pairs separated by commas (RFC 7235 §2.1), with the
/// client side's reader; a verifier only needs to know that it failed.
fn parse_auth_params(text: &str) -> Option<Vec<(String, String)>> {
    super::digest::parse_auth_params(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 §4.2 and §4.3 test cases 1 and 2.
    #[test]
    fn digest_server_hmac_sha256_matches_rfc4231() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn digest_server_constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn digest_server_parses_credentials_and_refuses_repeats() {
        let c = Credentials::parse(
            r#"Digest username="a\"b", realm="r", nonce="n", uri="sip:r", response="x", qop=auth, nc=00000001, cnonce="c""#,
        )
        .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.algorithm, Some(Algorithm::Md5));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert!(Credentials::parse(
            r#"Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x""#
        )
        .is_none());
        assert!(Credentials::parse(r#"Basic dXNlcjpwYXNz"#).is_none());
    }

    #[test]
    fn digest_server_secrets_never_show_in_debug() {
        let s = format!("{:?}", StoredSecret::Password("hunter2".into()));
        assert!(!s.contains("hunter2"), "{s}");
        let cfg = DigestServerConfig::with_secret(b"0123456789abcdef".to_vec());
        assert!(!format!("{cfg:?}").contains("0123"));
    }
}
