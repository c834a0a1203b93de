//! `xmpp-sip-gateway ctl …`: the command-line front end of the management API
//! (`io::admin_http`, docs/admin-api.md). Owner: io-admin. `CtlArgs` is the clap subcommand
//! `main.rs` mounts; `run` returns the process exit code:
//!
//! * 0: HTTP 200 and, for `publish`/`subscribe`, a 2xx SIP code inside;
//! * 1: HTTP 200 but a SIP error code inside (the reply is still printed);
//! * 2: anything else: connection failure, non-200 HTTP status, unreadable body file.
//!
//! The HTTP client is a minimal blocking HTTP/1.1 one over `std::net::TcpStream` with
//! `Connection: close`: the API is served on loopback, one request per run, so this needs no
//! new dependency (hyper-util's client features are not enabled in the lock file) and no
//! async runtime. Only `http://` URLs are supported.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::core::modules::admin::{PublishCommand, SubscribeCommand};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the gateway answered, with a SIP error code.
pub const EXIT_SIP_ERROR: i32 = 1;
/// Exit code: HTTP or connection error (or a local error before sending).
pub const EXIT_HTTP_ERROR: i32 = 2;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Base URL of the management API.
    #[arg(long, env = "XSG_ADMIN", default_value = "http://127.0.0.1:8560")]
    pub admin: String,
    /// Seconds to wait for the answer (the server itself gives up after 40 s with 504).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Send a PUBLISH for a presentity (pua_mi:publish).
    Publish(PublishArgs),
    /// Send a SUBSCRIBE with Contact = watcher (pua_mi:subscribe).
    Subscribe(SubscribeArgs),
    /// List the gateway's publications or subscriptions.
    List {
        #[arg(value_enum)]
        what: ListWhat,
    },
    /// Ask the engine whether it is alive, with counts.
    Health,
    /// Presence agent: watcher rules (allow / deny / pending) of local presentities.
    Rules {
        #[command(subcommand)]
        action: RulesCommand,
    },
    /// Presence agent: who watches local presentities (pending ones await a rule).
    Watchers {
        #[arg(long)]
        presentity: Option<String>,
    },
    /// Bindings of one AOR, or of all, from every source (registrar, copy, reg_event).
    Bindings {
        #[arg(long)]
        aor: Option<String>,
    },
    /// usrloc: the AORs published from registrations (open, or closed until removed).
    Usrloc,
    /// bla: the shared lines, their phones, subscriptions and dialogs.
    Bla,
    /// SIP users (digest credentials) managed at run time.
    Users {
        #[command(subcommand)]
        action: UsersCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Approve (allow), refuse (deny) or hold (pending) a watcher of a presentity.
    Set {
        #[arg(long)]
        presentity: String,
        #[arg(long)]
        watcher: String,
        /// allow, deny or pending
        #[arg(long)]
        action: String,
    },
    /// Remove a rule: the domain default applies again.
    Remove {
        #[arg(long)]
        presentity: String,
        #[arg(long)]
        watcher: String,
    },
    List,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Add a user or change their password (only HA1s are stored).
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        password: String,
    },
    Remove {
        #[arg(long)]
        username: String,
        #[arg(long)]
        domain: String,
    },
    List,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Presentity URI, e.g. sip:alice@example.com.
    #[arg(long)]
    pub presentity: String,
    /// Event package, e.g. presence, dialog, presence.winfo.
    #[arg(long)]
    pub event: String,
    /// Seconds; -1 keeps the publication refreshed until removed, 0 removes it.
    #[arg(long, allow_negative_numbers = true)]
    pub expires: i64,
    /// MIME type of the body (goes with --body or --body-file).
    #[arg(long)]
    pub content_type: Option<String>,
    /// Read the body from this file ("-" for stdin).
    #[arg(long, conflicts_with = "body")]
    pub body_file: Option<PathBuf>,
    /// The body as text.
    #[arg(long)]
    pub body: Option<String>,
    /// ETag of the publication to refresh, modify or remove (RFC 3903 SIP-If-Match).
    #[arg(long)]
    pub etag: Option<String>,
    /// Extra header lines added to the PUBLISH, CRLF separated.
    #[arg(long)]
    pub extra_headers: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    #[arg(long)]
    pub presentity: String,
    #[arg(long)]
    pub watcher: String,
    #[arg(long)]
    pub event: String,
    #[arg(long, allow_negative_numbers = true)]
    pub expires: i64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListWhat {
    Publications,
    Subscriptions,
}

/// Runs one command, printing the reply to stdout and problems to stderr.
pub fn run(args: CtlArgs) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(args, &mut stdout.lock(), &mut stderr.lock())
}

/// [`run`] with the output streams given (for tests).
pub fn run_with(args: CtlArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let code = match execute(&args, out) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "xmpp-sip-gateway ctl: {e}");
            EXIT_HTTP_ERROR
        }
    };
    let _ = out.flush();
    code
}

/// What `ctl` expects the reply to carry, which decides the exit code.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Expect {
    SipOutcome,
    Any,
}

fn execute(args: &CtlArgs, out: &mut dyn Write) -> Result<i32, CtlError> {
    let base = AdminUrl::parse(&args.admin)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (method, path, body, expect) = match &args.command {
        CtlCommand::Publish(p) => {
            let body = match (&p.body, &p.body_file) {
                (Some(text), _) => Some(text.clone()),
                (None, Some(file)) => Some(read_body_file(file)?),
                (None, None) => None,
            };
            let command = PublishCommand {
                presentity: p.presentity.clone(),
                expires: p.expires,
                event: p.event.clone(),
                content_type: p.content_type.clone(),
                body,
                etag: p.etag.clone(),
                extra_headers: p.extra_headers.clone(),
            };
            (
                "POST",
                "/publish",
                Some(to_json(&command)?),
                Expect::SipOutcome,
            )
        }
        CtlCommand::Subscribe(s) => {
            let command = SubscribeCommand {
                presentity: s.presentity.clone(),
                watcher: s.watcher.clone(),
                event: s.event.clone(),
                expires: s.expires,
            };
            (
                "POST",
                "/subscribe",
                Some(to_json(&command)?),
                Expect::SipOutcome,
            )
        }
        CtlCommand::List { what } => {
            let path = match what {
                ListWhat::Publications => "/publications",
                ListWhat::Subscriptions => "/subscriptions",
            };
            ("GET", path, None, Expect::Any)
        }
        CtlCommand::Health => ("GET", "/health", None, Expect::Any),
        CtlCommand::Rules { action } => match action {
            RulesCommand::Set {
                presentity,
                watcher,
                action,
            } => (
                "POST",
                "/rules",
                Some(to_json(&serde_json::json!({
                    "presentity": presentity, "watcher": watcher, "action": action
                }))?),
                Expect::Any,
            ),
            RulesCommand::Remove {
                presentity,
                watcher,
            } => (
                "POST",
                "/rules",
                Some(to_json(&serde_json::json!({
                    "presentity": presentity, "watcher": watcher, "action": null
                }))?),
                Expect::Any,
            ),
            RulesCommand::List => ("GET", "/rules", None, Expect::Any),
        },
        CtlCommand::Watchers { presentity } => {
            let path = match presentity {
                Some(p) => format!("/watchers?presentity={}", query_escape(p)),
                None => "/watchers".to_string(),
            };
            return finish(&base, "GET", &path, None, Expect::Any, timeout, out);
        }
        CtlCommand::Bindings { aor } => {
            let path = match aor {
                Some(a) => format!("/bindings?aor={}", query_escape(a)),
                None => "/bindings".to_string(),
            };
            return finish(&base, "GET", &path, None, Expect::Any, timeout, out);
        }
        CtlCommand::Usrloc => {
            return finish(&base, "GET", "/usrloc", None, Expect::Any, timeout, out)
        }
        CtlCommand::Bla => return finish(&base, "GET", "/bla", None, Expect::Any, timeout, out),
        CtlCommand::Users { action } => match action {
            UsersCommand::Add {
                username,
                domain,
                password,
            } => (
                "POST",
                "/users",
                Some(to_json(&serde_json::json!({
                    "username": username, "domain": domain, "password": password
                }))?),
                Expect::Any,
            ),
            UsersCommand::Remove { username, domain } => (
                "POST",
                "/users/remove",
                Some(to_json(&serde_json::json!({
                    "username": username, "domain": domain
                }))?),
                Expect::Any,
            ),
            UsersCommand::List => ("GET", "/users", None, Expect::Any),
        },
    };
    finish(&base, method, path, body.as_deref(), expect, timeout, out)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn query_escape(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends one request and prints its reply; the exit code follows `expect`.
fn finish(
    base: &AdminUrl,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    expect: Expect,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<i32, CtlError> {
    let response = request(base, method, path, body, timeout)?;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();

    if response.status != 200 {
        let detail = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_string());
        return Err(CtlError::Status {
            status: response.status,
            detail,
        });
    }

    match &parsed {
        Some(value) => {
            let pretty = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
            writeln!(out, "{pretty}").map_err(CtlError::Output)?;
        }
        None => {
            out.write_all(&response.body).map_err(CtlError::Output)?;
            writeln!(out).map_err(CtlError::Output)?;
        }
    }

    if expect == Expect::Any {
        return Ok(EXIT_OK);
    }
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(|c| c.as_u64())
        .ok_or(CtlError::NoCode)?;
    Ok(if (200..300).contains(&code) {
        EXIT_OK
    } else {
        EXIT_SIP_ERROR
    })
}

fn read_body_file(file: &PathBuf) -> Result<String, CtlError> {
    let result = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(file)
    };
    result.map_err(|source| CtlError::BodyFile {
        path: file.clone(),
        source,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CtlError> {
    serde_json::to_vec(value).map_err(|e| CtlError::Encode(e.to_string()))
}

/// Errors of `ctl`, all reported on stderr with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("bad --admin URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed HTTP response: {0}")]
    BadResponse(String),
    #[error("HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("reply carries no SIP code")]
    NoCode,
    #[error("cannot read body file {path}: {source}")]
    BodyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot write the reply: {0}")]
    Output(#[source] std::io::Error),
}

/// A parsed `http://host[:port][/prefix]` base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminUrl {
    /// Host as written (with brackets for IPv6), for the Host header.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

impl AdminUrl {
    pub fn parse(url: &str) -> Result<AdminUrl, CtlError> {
        let bad = |reason| CtlError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let end = after
                .find(']')
                .ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            let host = &authority[..end + 2];
            match &after[end + 1..] {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after host"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(AdminUrl {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }

    fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// An HTTP response as `ctl` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One blocking HTTP/1.1 exchange with `Connection: close`. `body`, when given, is sent as
/// `application/json`. Public so the admin API's tests can send arbitrary bytes.
pub fn request(
    base: &AdminUrl,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<HttpResponse, CtlError> {
    let addr_text = format!("{}:{}", base.host, base.port);
    let connect_err = |source| CtlError::Connect {
        addr: addr_text.clone(),
        source,
    };
    let io_err = |source| CtlError::Io {
        addr: addr_text.clone(),
        source,
    };
    let addrs: Vec<_> = (base.connect_host(), base.port)
        .to_socket_addrs()
        .map_err(connect_err)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| connect_err(last))?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;

    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {addr_text}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: xmpp-sip-gateway-ctl\r\n",
        base.prefix
    );
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io_err)?;
    if let Some(body) = body {
        stream.write_all(body).map_err(io_err)?;
    }
    stream.flush().map_err(io_err)?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io_err)?;
    parse_response(&raw)
}

/// Parses a complete `Connection: close` response: status line, headers, then a body framed
/// by Content-Length, chunked encoding, or the end of the stream.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, CtlError> {
    let bad = |m: &str| CtlError::BadResponse(m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x response"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let body = if chunked {
        decode_chunked(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, body })
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
