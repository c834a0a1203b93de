//! `gateway.toml` → validated settings (architecture habit 7: config validated once).
//!
//! Two layers, after hickory-dns:
//! - `File*` structs mirror the TOML one to one with `#[serde(deny_unknown_fields)]`, so a
//!   misspelt key is an error naming its path instead of a silently ignored setting. Every
//!   leaf is optional here; defaults are applied during validation, in one place.
//! - [`Config`] holds typed, validated values: the engine's slice ([`EngineConfig`]) and the
//!   drivers' settings. It is built once by [`validate`], which reports every problem it
//!   finds, each with its key path (`sip.trusted[1]: invalid CIDR "10.0.0/8"`).
//!
//! Sources, lowest priority first: the TOML file, then environment variables with the
//! prefix `XSG` and `__` between path segments (`XSG_SIP__UDP_LISTEN=127.0.0.1:5062`,
//! `XSG_SIP__TRUSTED=127.0.0.0/8,10.0.0.0/8`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::engine::{Credential, EngineConfig};
use crate::core::sip::transaction::TxConfig;
use crate::core::sip::{Peer, Transport};

/// Prefix of environment overrides (product.md, Names).
pub const ENV_PREFIX: &str = "XSG";
/// Separator between path segments in environment variable names.
pub const ENV_SEPARATOR: &str = "__";
/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: [&str; 2] = ["sip.trusted", "pua.refresh_window"];

// ---------------------------------------------------------------------------------------
// File layer: mirrors gateway.toml.
// ---------------------------------------------------------------------------------------

/// The whole file. Each field is one `[table]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub sip: FileSip,
    #[serde(default)]
    pub pua: FilePua,
    #[serde(default)]
    pub notifier: FileNotifier,
    #[serde(default)]
    pub store: FileStore,
    #[serde(default)]
    pub admin: FileAdmin,
    /// The XMPP component link; none without it.
    pub xmpp: Option<FileXmpp>,
    /// The presence bridge; none without it.
    pub bridge: Option<FileBridge>,
    /// The embedded presence agent (SIP presence server); none without it.
    pub presence_agent: Option<FilePresenceAgent>,
    /// The embedded registrar (on with the presence agent unless disabled).
    pub registrar: Option<FileRegistrar>,
    /// Digest authentication of phones and the SIP users table.
    pub auth: Option<FileAuth>,
    /// Sources of registrations besides the embedded registrar.
    pub registrations: Option<FileRegistrations>,
    /// REGISTER-driven presence; none without it.
    pub usrloc: Option<FileUsrloc>,
    /// Bridged line appearance; none without it.
    pub bla: Option<FileBla>,
}

/// `[registrations]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistrations {
    pub copy_domains: Option<Vec<String>>,
    pub copy_max_expires: Option<u64>,
    pub publish_mark: Option<String>,
    pub reg_event_aors: Option<Vec<String>>,
    pub reg_event_expires: Option<u64>,
    pub reg_event_server: Option<String>,
    pub reg_event_watcher: Option<String>,
}

/// `[usrloc]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUsrloc {
    pub enabled: Option<bool>,
    pub domains: Option<Vec<String>>,
    pub aors: Option<Vec<String>>,
    pub patterns: Option<Vec<String>>,
    pub entity_prefix: Option<String>,
    pub default_domain: Option<String>,
    pub closed_linger_secs: Option<u64>,
}

/// `[bla]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBla {
    pub enabled: Option<bool>,
    pub lines: Option<Vec<String>>,
}

/// `[presence_agent]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePresenceAgent {
    pub domains: Option<Vec<String>>,
    pub min_expires: Option<u64>,
    pub max_expires: Option<u64>,
    pub default_expires: Option<u64>,
    pub max_publications_per_presentity: Option<u64>,
    pub max_subscriptions_per_presentity: Option<u64>,
    pub same_domain: Option<String>,
    pub other_domains: Option<String>,
    pub sender_header: Option<String>,
    /// `[[presence_agent.domain_defaults]]`
    pub domain_defaults: Option<Vec<FileDomainDefaults>>,
}

/// `[[presence_agent.domain_defaults]]`: watcher defaults of one served domain.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDomainDefaults {
    pub domain: Option<String>,
    pub same_domain: Option<String>,
    pub other_domains: Option<String>,
}

/// `[registrar]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistrar {
    pub enabled: Option<bool>,
    pub min_expires: Option<u64>,
    pub max_expires: Option<u64>,
    pub default_expires: Option<u64>,
    pub max_contacts_per_aor: Option<u64>,
}

/// `[auth]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub realm: Option<String>,
    pub nonce_lifetime_secs: Option<u64>,
    pub algorithms: Option<Vec<String>>,
    /// Key of the nonces (hex or text); a random one per start when absent.
    pub nonce_secret: Option<String>,
    pub users: Option<Vec<FileUser>>,
}

/// `[[auth.users]]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    pub username: Option<String>,
    pub domain: Option<String>,
    pub password: Option<String>,
    pub ha1_md5: Option<String>,
    pub ha1_sha256: Option<String>,
}

/// `[log]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// A tracing filter directive (`info`, `xmpp_sip_gateway=debug,info`); `RUST_LOG` wins.
    pub level: Option<String>,
    /// `text` or `json`.
    pub format: Option<String>,
}

/// `[sip]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSip {
    pub udp_listen: Option<String>,
    pub tcp_listen: Option<String>,
    /// Host (optionally `host:port`) written in our Via and Contact.
    pub public_host: Option<String>,
    /// `sip:127.0.0.1:5070;transport=udp` or `udp:127.0.0.1:5070`.
    pub outbound_proxy: Option<String>,
    /// CIDRs whose requests are served; others get 403.
    pub trusted: Option<Vec<String>>,
    pub max_message_size: Option<u64>,
    pub t1_ms: Option<u64>,
    pub t2_ms: Option<u64>,
    pub t4_ms: Option<u64>,
    pub user_agent: Option<String>,
    /// New requests per source address per second (0: no limit).
    pub max_requests_per_source: Option<u64>,
    /// `[[sip.credentials]]`
    pub credentials: Option<Vec<FileCredential>>,
}

/// `[[sip.credentials]]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCredential {
    pub realm: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `[pua]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePua {
    pub default_expires: Option<u64>,
    pub refresh_window: Option<Vec<f64>>,
    pub max_backoff_secs: Option<u64>,
    pub resync_rate: Option<u64>,
}

/// `[notifier]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNotifier {
    pub min_expires: Option<u64>,
    pub max_expires: Option<u64>,
    pub min_notify_interval_ms: Option<u64>,
}

/// `[store]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    pub path: Option<String>,
}

/// `[admin]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
}

/// `[xmpp]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileXmpp {
    pub component_jid: Option<String>,
    pub secret: Option<String>,
    pub server: Option<String>,
}

/// `[bridge]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBridge {
    pub mode: Option<String>,
    pub max_subscriptions_per_user: Option<u64>,
    pub domains: Option<Vec<FileDomain>>,
}

/// `[[bridge.domains]]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDomain {
    pub xmpp_domain: Option<String>,
    pub component_domain: Option<String>,
    pub sip_domain: Option<String>,
    pub scheme: Option<String>,
    pub delimiter: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Validated layer.
// ---------------------------------------------------------------------------------------

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive; `RUST_LOG`, when set, replaces it.
    pub level: String,
    pub format: LogFormat,
}

/// What the SIP transport driver needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipDriverConfig {
    pub udp_listen: Option<SocketAddr>,
    pub tcp_listen: Option<SocketAddr>,
    /// As configured; `None` means "the bound listen address" (resolved by the daemon
    /// once the sockets are bound, so port 0 works).
    pub public_host: Option<String>,
    pub max_message_size: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

/// `[xmpp]`: the XEP-0114 component link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmppConfig {
    pub component_jid: String,
    pub secret: String,
    /// `host:port` of the XMPP server's component listener.
    pub server: String,
}

/// How the gateway presents XMPP users' presence to SIP (product.md, Deployment modes).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BridgeMode {
    Notifier,
    Publish,
}

/// Address mapping scheme of one domain (product.md, Address mapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressScheme {
    Domain,
    Escaped,
    Delimiter(char),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainMapping {
    pub xmpp_domain: String,
    pub component_domain: String,
    pub sip_domain: String,
    pub scheme: AddressScheme,
}

/// `[bridge]`: the XMPP⇄SIP presence bridge (needs `[xmpp]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub mode: BridgeMode,
    pub domains: Vec<DomainMapping>,
    /// Most SIP contacts one XMPP user may watch through the gateway.
    pub max_subscriptions_per_user: usize,
}

/// A default authorization for watchers without an explicit rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DefaultRule {
    Allow,
    Deny,
    Pending,
}

/// `[presence_agent]`: the embedded SIP presence server (product.md, Deployment modes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceAgentSettings {
    /// SIP domains served locally (lowercase).
    pub domains: Vec<String>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_publications_per_presentity: usize,
    pub max_subscriptions_per_presentity: usize,
    /// Watchers in the presentity's own domain.
    pub same_domain: DefaultRule,
    /// Every other watcher (XMPP users included).
    pub other_domains: DefaultRule,
    /// Header naming the publisher of a `dialog;sla` PUBLISH (pua_bla's `Sender`).
    pub sender_header: String,
    /// Per served domain: (domain, same_domain, other_domains), overriding the two above.
    pub domain_defaults: Vec<(String, DefaultRule, DefaultRule)>,
}

/// `[registrar]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarSettings {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts_per_aor: usize,
}

/// `[registrations]`: where bindings come from besides the embedded registrar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationsSettings {
    /// Domains whose REGISTER copies (`t_replicate`) are mirrored, from `sip.trusted` peers.
    pub copy_domains: Vec<String>,
    pub copy_max_expires: u32,
    /// Header whose presence on a copy makes usrloc publish its AOR.
    pub publish_mark: Option<String>,
    /// AORs whose `reg` event (RFC 3680) is subscribed.
    pub reg_event_aors: Vec<String>,
    pub reg_event_expires: u32,
    /// First hop of the `reg` subscriptions; `None`: the outbound proxy or the AOR's host.
    pub reg_event_server: Option<String>,
    /// From of the `reg` subscriptions; `None`: the gateway's contact AOR.
    pub reg_event_watcher: Option<String>,
}

/// One configured SIP user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSettings {
    pub username: String,
    pub domain: String,
    pub password: Option<String>,
    pub ha1_md5: Option<String>,
    pub ha1_sha256: Option<String>,
}

/// `[auth]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// `None`: the domain of each request.
    pub realm: Option<String>,
    pub nonce_lifetime_secs: u64,
    /// Offered algorithms, strongest first (`SHA-256`, `MD5`).
    pub algorithms: Vec<String>,
    pub nonce_secret: Option<String>,
    pub users: Vec<UserSettings>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub log: LogConfig,
    pub sip: SipDriverConfig,
    /// The engine's slice. `tx.via_*`, `local_host` and `contact_uri` are provisional until
    /// the sockets are bound: see [`Config::engine_config_for`].
    pub engine: EngineConfig,
    pub store: StoreConfig,
    pub admin: AdminConfig,
    pub xmpp: Option<XmppConfig>,
    pub bridge: Option<BridgeConfig>,
    pub presence_agent: Option<PresenceAgentSettings>,
    /// Present when the presence agent is and the registrar is not disabled.
    pub registrar: Option<RegistrarSettings>,
    pub auth: AuthSettings,
    pub registrations: RegistrationsSettings,
    pub usrloc: Option<crate::core::modules::usrloc::UsrlocConfig>,
    pub bla: Option<crate::core::modules::bla::BlaConfig>,
}

/// One problem, with the dotted key path it concerns (empty for the file as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(path: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.to_string(),
            message: message.into(),
        }])
    }

    /// Whether some error concerns exactly `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

// ---------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------

/// Loads `path` with the process environment's `XSG_*` overrides, then validates.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
    load_str(&text, None)
}

/// Parses TOML text plus environment overrides and validates. `env` replaces the process
/// environment when given (tests use it to stay independent of each other).
pub fn load_str(text: &str, env: Option<HashMap<String, String>>) -> Result<Config, ConfigErrors> {
    let file = parse_str(text, env)?;
    validate(&file)
}

/// The file layer only: TOML + environment, `deny_unknown_fields` applied, no validation.
pub fn parse_str(
    text: &str,
    env: Option<HashMap<String, String>>,
) -> Result<FileConfig, ConfigErrors> {
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .list_separator(",");
    for key in ENV_LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    let vars = env.unwrap_or_else(|| std::env::vars().collect());
    environment = environment.source(Some(overrides(vars).collect()));
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .map_err(config_error)?;
    built.try_deserialize::<FileConfig>().map_err(config_error)
}

/// The variables that are config overrides: `XSG_<SECTION>__<KEY>`. Every setting lives in
/// a section, so a variable without `__` (such as `XSG_ADMIN`, the URL `ctl` uses) is not
/// one and must not be read as a top-level key.
fn overrides(vars: HashMap<String, String>) -> impl Iterator<Item = (String, String)> {
    let prefix = format!("{ENV_PREFIX}_");
    vars.into_iter().filter(move |(k, _)| {
        k.strip_prefix(&prefix)
            .is_some_and(|rest| rest.contains(ENV_SEPARATOR))
    })
}

/// Turns the `config` crate's error into one with a key path. An unknown field is reported
/// at the path of the unknown key itself, which is what an operator needs to find.
fn config_error(e: config::ConfigError) -> ConfigErrors {
    match e {
        config::ConfigError::At { error, key, .. } => {
            let inner = error.to_string();
            let path = key.unwrap_or_default();
            match unknown_field_name(&inner) {
                Some(field) => ConfigErrors::one(&join_path(&path, &field), inner),
                None => ConfigErrors::one(&path, inner),
            }
        }
        config::ConfigError::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => ConfigErrors::one(
            &key,
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        other => {
            let msg = other.to_string();
            match unknown_field_name(&msg) {
                Some(field) => ConfigErrors::one(&field, msg),
                None => ConfigErrors::one("", msg),
            }
        }
    }
}

/// Extracts `foo` from serde's "unknown field `foo`, expected …".
fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

// ---------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------

/// Collects errors with their paths while values are checked.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates the file layer into a [`Config`], reporting every problem at once.
pub fn validate(file: &FileConfig) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();

    let log = validate_log(&file.log, &mut errs);
    let sip = validate_sip(&file.sip, &mut errs);
    let engine = validate_engine(file, &sip, &mut errs);
    let store = StoreConfig {
        path: match file.store.path.as_deref() {
            Some("") => {
                errs.push("store.path", "must not be empty");
                PathBuf::new()
            }
            Some(p) => PathBuf::from(p),
            None => PathBuf::from("gateway.db"),
        },
    };
    let admin = AdminConfig {
        enabled: file.admin.enabled.unwrap_or(true),
        listen: parse_socket_addr(
            file.admin.listen.as_deref().unwrap_or("127.0.0.1:8560"),
            "admin.listen",
            &mut errs,
        )
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8560))),
    };
    let xmpp = file.xmpp.as_ref().map(|x| validate_xmpp(x, &mut errs));
    let bridge = file.bridge.as_ref().map(|b| validate_bridge(b, &mut errs));
    if bridge.as_ref().is_some_and(|b| !b.domains.is_empty()) && xmpp.is_none() {
        errs.push("bridge", "bridging domains needs an [xmpp] section");
    }

    let presence_agent = file
        .presence_agent
        .as_ref()
        .map(|p| validate_presence_agent(p, &mut errs));
    let registrar = match (&presence_agent, &file.registrar) {
        (_, Some(r)) if r.enabled == Some(false) => None,
        (Some(_), r) => Some(validate_registrar(
            &r.clone().unwrap_or_default(),
            &mut errs,
        )),
        (None, Some(_)) => {
            errs.push(
                "registrar",
                "the registrar serves the [presence_agent] domains: add that section",
            );
            None
        }
        (None, None) => None,
    };
    let auth = validate_auth(file.auth.as_ref(), &mut errs);
    if let Some(s) = &auth.nonce_secret {
        if s.len() < 16 {
            errs.push("auth.nonce_secret", "must have at least 16 characters");
        }
    }

    let registrations = validate_registrations(
        file.registrations.as_ref(),
        presence_agent
            .as_ref()
            .filter(|_| registrar.is_some())
            .map(|p| p.domains.as_slice())
            .unwrap_or(&[]),
        !engine.trusted.is_empty(),
        &mut errs,
    );
    let usrloc = file
        .usrloc
        .as_ref()
        .filter(|u| u.enabled != Some(false))
        .map(|u| validate_usrloc(u, registrations.publish_mark.is_some(), &mut errs));
    let bla = file
        .bla
        .as_ref()
        .filter(|b| b.enabled != Some(false))
        .map(|b| crate::core::modules::bla::BlaConfig {
            lines: sip_aors(b.lines.as_deref().unwrap_or(&[]), "bla.lines", &mut errs),
        });
    if bla.as_ref().is_some_and(|b| b.lines.is_empty()) {
        errs.push("bla.lines", "name at least one shared-line AOR");
    }
    let has_source = registrar.is_some()
        || !registrations.copy_domains.is_empty()
        || !registrations.reg_event_aors.is_empty();
    for (section, on) in [("usrloc", usrloc.is_some()), ("bla", bla.is_some())] {
        if on && !has_source {
            errs.push(
                section,
                "no source of registrations: enable the embedded registrar ([presence_agent]) or set registrations.copy_domains or registrations.reg_event_aors",
            );
        }
    }

    if errs.0.is_empty() {
        Ok(Config {
            log,
            sip,
            engine,
            store,
            admin,
            xmpp,
            bridge,
            presence_agent,
            registrar,
            auth,
            registrations,
            usrloc,
            bla,
        })
    } else {
        Err(ConfigErrors(errs.0))
    }
}

fn default_rule(
    v: Option<&str>,
    path: &str,
    default: DefaultRule,
    errs: &mut Errors,
) -> DefaultRule {
    match v {
        None => default,
        Some("allow") => DefaultRule::Allow,
        Some("deny") => DefaultRule::Deny,
        Some("pending") => DefaultRule::Pending,
        Some(other) => {
            errs.push(
                path,
                format!("unknown rule {other:?} (expected \"allow\", \"deny\" or \"pending\")"),
            );
            default
        }
    }
}

fn bounded(
    v: Option<u64>,
    path: &str,
    default: usize,
    range: std::ops::RangeInclusive<u64>,
    errs: &mut Errors,
) -> usize {
    match v {
        None => default,
        Some(n) if range.contains(&n) => n as usize,
        Some(n) => {
            errs.push(
                path,
                format!("{n} is outside {}..={}", range.start(), range.end()),
            );
            default
        }
    }
}

fn validate_presence_agent(p: &FilePresenceAgent, errs: &mut Errors) -> PresenceAgentSettings {
    let domains: Vec<String> = p
        .domains
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if domains.is_empty() {
        errs.push(
            "presence_agent.domains",
            "name at least one SIP domain to serve",
        );
    }
    for d in &domains {
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@' || c == ':') {
            errs.push("presence_agent.domains", format!("invalid domain {d:?}"));
        }
    }
    let min_expires = expires(p.min_expires, "presence_agent.min_expires", 60, errs);
    let max_expires = expires(p.max_expires, "presence_agent.max_expires", 3600, errs);
    let default_expires = expires(
        p.default_expires,
        "presence_agent.default_expires",
        3600,
        errs,
    );
    if max_expires < min_expires {
        errs.push(
            "presence_agent.max_expires",
            "must not be smaller than presence_agent.min_expires",
        );
    }
    let sender_header = p.sender_header.clone().unwrap_or_else(|| "Sender".into());
    if sender_header.is_empty()
        || !sender_header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        errs.push(
            "presence_agent.sender_header",
            format!("invalid header name {sender_header:?}"),
        );
    }
    let domain_defaults = domain_defaults_of(p, &domains, errs);
    PresenceAgentSettings {
        domains,
        min_expires,
        max_expires,
        default_expires: default_expires.clamp(min_expires, max_expires.max(min_expires)),
        max_publications_per_presentity: bounded(
            p.max_publications_per_presentity,
            "presence_agent.max_publications_per_presentity",
            16,
            1..=1024,
            errs,
        ),
        max_subscriptions_per_presentity: bounded(
            p.max_subscriptions_per_presentity,
            "presence_agent.max_subscriptions_per_presentity",
            256,
            1..=100_000,
            errs,
        ),
        same_domain: default_rule(
            p.same_domain.as_deref(),
            "presence_agent.same_domain",
            DefaultRule::Allow,
            errs,
        ),
        other_domains: default_rule(
            p.other_domains.as_deref(),
            "presence_agent.other_domains",
            DefaultRule::Pending,
            errs,
        ),
        sender_header,
        domain_defaults,
    }
}

fn domain_defaults_of(
    p: &FilePresenceAgent,
    served: &[String],
    errs: &mut Errors,
) -> Vec<(String, DefaultRule, DefaultRule)> {
    let general_same = p.same_domain.as_deref();
    let general_other = p.other_domains.as_deref();
    let mut out = Vec::new();
    for (i, d) in p
        .domain_defaults
        .clone()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("presence_agent.domain_defaults[{i}]");
        let Some(domain) = required(&d.domain, &format!("{path}.domain"), errs) else {
            continue;
        };
        let domain = domain.trim().to_ascii_lowercase();
        if !served.contains(&domain) {
            errs.push(
                format!("{path}.domain"),
                format!("{domain:?} is not in presence_agent.domains"),
            );
        }
        let same = default_rule(
            d.same_domain.as_deref().or(general_same),
            &format!("{path}.same_domain"),
            DefaultRule::Allow,
            errs,
        );
        let other = default_rule(
            d.other_domains.as_deref().or(general_other),
            &format!("{path}.other_domains"),
            DefaultRule::Pending,
            errs,
        );
        out.push((domain, same, other));
    }
    out
}

/// Domains: trimmed, lowercase, no white space, `@` or `:`.
fn domain_list(v: &[String], path: &str, errs: &mut Errors) -> Vec<String> {
    let out: Vec<String> = v.iter().map(|d| d.trim().to_ascii_lowercase()).collect();
    for d in &out {
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@' || c == ':') {
            errs.push(path, format!("invalid domain {d:?}"));
        }
    }
    out
}

/// SIP AORs (`sip:user@domain`), normalised.
fn sip_aors(v: &[String], path: &str, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in v.iter().enumerate() {
        match crate::core::routing::aor_of(a.trim()) {
            Some(n) if n.contains('@') => out.push(n),
            _ => errs.push(
                format!("{path}[{i}]"),
                format!("invalid AOR {a:?} (expected sip:user@domain)"),
            ),
        }
    }
    out
}

fn header_name_ok(h: &str) -> bool {
    !h.is_empty()
        && h.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '_' | '.' | '!' | '%' | '*' | '+' | '`' | '\'' | '~'
                )
        })
}

fn validate_registrations(
    r: Option<&FileRegistrations>,
    agent_domains: &[String],
    has_trusted: bool,
    errs: &mut Errors,
) -> RegistrationsSettings {
    let Some(r) = r else {
        return RegistrationsSettings {
            copy_max_expires: 3600,
            reg_event_expires: 600,
            ..RegistrationsSettings::default()
        };
    };
    let copy_domains = domain_list(
        r.copy_domains.as_deref().unwrap_or(&[]),
        "registrations.copy_domains",
        errs,
    );
    for d in copy_domains.iter().filter(|d| agent_domains.contains(d)) {
        errs.push(
            "registrations.copy_domains",
            format!("{d:?} is served by the embedded registrar ([presence_agent] domains); a domain has one registrar (set [registrar] enabled = false)"),
        );
    }
    if !copy_domains.is_empty() && !has_trusted {
        errs.push(
            "registrations.copy_domains",
            "REGISTER copies are accepted from sip.trusted peers only: list the proxy there",
        );
    }
    let publish_mark = r.publish_mark.as_ref().map(|h| h.trim().to_string());
    if let Some(h) = &publish_mark {
        if !header_name_ok(h) {
            errs.push(
                "registrations.publish_mark",
                format!("invalid header name {h:?}"),
            );
        }
    }
    let reg_event_server = r.reg_event_server.as_ref().map(|s| s.trim().to_string());
    if let Some(s) = &reg_event_server {
        if crate::core::services::uri_peer(s).is_none() {
            errs.push(
                "registrations.reg_event_server",
                format!("{s:?} is not a SIP URI with a numeric host (e.g. \"sip:127.0.0.1:5070\")"),
            );
        }
    }
    let reg_event_watcher = r.reg_event_watcher.as_ref().map(|w| w.trim().to_string());
    if let Some(w) = &reg_event_watcher {
        if crate::core::routing::aor_of(w).is_none() {
            errs.push(
                "registrations.reg_event_watcher",
                format!("invalid SIP URI {w:?}"),
            );
        }
    }
    RegistrationsSettings {
        copy_domains,
        copy_max_expires: expires(
            r.copy_max_expires,
            "registrations.copy_max_expires",
            3600,
            errs,
        ),
        publish_mark,
        reg_event_aors: sip_aors(
            r.reg_event_aors.as_deref().unwrap_or(&[]),
            "registrations.reg_event_aors",
            errs,
        ),
        reg_event_expires: expires(
            r.reg_event_expires,
            "registrations.reg_event_expires",
            600,
            errs,
        ),
        reg_event_server,
        reg_event_watcher,
    }
}

fn validate_usrloc(
    u: &FileUsrloc,
    has_mark: bool,
    errs: &mut Errors,
) -> crate::core::modules::usrloc::UsrlocConfig {
    let domains = domain_list(u.domains.as_deref().unwrap_or(&[]), "usrloc.domains", errs);
    let aors = sip_aors(u.aors.as_deref().unwrap_or(&[]), "usrloc.aors", errs);
    let patterns: Vec<String> = u
        .patterns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.trim().to_string())
        .collect();
    for (i, p) in patterns.iter().enumerate() {
        if p.is_empty() || p.contains(char::is_whitespace) {
            errs.push(
                format!("usrloc.patterns[{i}]"),
                format!("invalid pattern {p:?}"),
            );
        }
    }
    if domains.is_empty() && aors.is_empty() && patterns.is_empty() && !has_mark {
        errs.push(
            "usrloc",
            "selects no AOR: set domains, aors or patterns, or registrations.publish_mark",
        );
    }
    let linger = u.closed_linger_secs.unwrap_or(30);
    if linger > 86_400 {
        errs.push(
            "usrloc.closed_linger_secs",
            format!("{linger} is outside 0..=86400"),
        );
    }
    crate::core::modules::usrloc::UsrlocConfig {
        domains,
        aors,
        patterns,
        entity_prefix: u.entity_prefix.clone().filter(|p| !p.trim().is_empty()),
        default_domain: u
            .default_domain
            .clone()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty()),
        closed_linger: Duration::from_secs(linger.min(86_400)),
    }
}

fn validate_registrar(r: &FileRegistrar, errs: &mut Errors) -> RegistrarSettings {
    let min_expires = expires(r.min_expires, "registrar.min_expires", 60, errs);
    let max_expires = expires(r.max_expires, "registrar.max_expires", 3600, errs);
    let default_expires = expires(r.default_expires, "registrar.default_expires", 3600, errs);
    if max_expires < min_expires {
        errs.push(
            "registrar.max_expires",
            "must not be smaller than registrar.min_expires",
        );
    }
    RegistrarSettings {
        min_expires,
        max_expires,
        default_expires: default_expires.clamp(min_expires, max_expires.max(min_expires)),
        max_contacts_per_aor: bounded(
            r.max_contacts_per_aor,
            "registrar.max_contacts_per_aor",
            10,
            1..=1000,
            errs,
        ),
    }
}

fn validate_auth(a: Option<&FileAuth>, errs: &mut Errors) -> AuthSettings {
    let a = a.cloned().unwrap_or_default();
    let algorithms = a
        .algorithms
        .clone()
        .unwrap_or_else(|| vec!["MD5".into(), "SHA-256".into()]);
    for (i, alg) in algorithms.iter().enumerate() {
        if !matches!(alg.to_ascii_uppercase().as_str(), "SHA-256" | "MD5") {
            errs.push(
                format!("auth.algorithms[{i}]"),
                format!("unknown algorithm {alg:?} (expected \"SHA-256\" or \"MD5\")"),
            );
        }
    }
    if algorithms.is_empty() {
        errs.push("auth.algorithms", "offer at least one algorithm");
    }
    let nonce_lifetime_secs = match a.nonce_lifetime_secs {
        None => 300,
        Some(n) if (10..=86_400).contains(&n) => n,
        Some(n) => {
            errs.push(
                "auth.nonce_lifetime_secs",
                format!("{n} is outside 10..=86400"),
            );
            300
        }
    };
    let mut users = Vec::new();
    for (i, u) in a.users.clone().unwrap_or_default().iter().enumerate() {
        let path = format!("auth.users[{i}]");
        let username = required(&u.username, &format!("{path}.username"), errs);
        let domain = required(&u.domain, &format!("{path}.domain"), errs);
        if u.password.is_none() && u.ha1_md5.is_none() && u.ha1_sha256.is_none() {
            errs.push(path.clone(), "give password, ha1_md5 or ha1_sha256");
        }
        for (key, v, len) in [
            ("ha1_md5", &u.ha1_md5, 32),
            ("ha1_sha256", &u.ha1_sha256, 64),
        ] {
            if let Some(h) = v {
                if h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    errs.push(format!("{path}.{key}"), format!("must be {len} hex digits"));
                }
            }
        }
        if let (Some(username), Some(domain)) = (username, domain) {
            users.push(UserSettings {
                username,
                domain: domain.to_ascii_lowercase(),
                password: u.password.clone(),
                ha1_md5: u.ha1_md5.as_ref().map(|h| h.to_ascii_lowercase()),
                ha1_sha256: u.ha1_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
            });
        }
    }
    AuthSettings {
        realm: a.realm.clone().filter(|r| !r.is_empty()),
        nonce_lifetime_secs,
        algorithms: algorithms.iter().map(|a| a.to_ascii_uppercase()).collect(),
        nonce_secret: a.nonce_secret.clone(),
        users,
    }
}

fn validate_log(log: &FileLog, errs: &mut Errors) -> LogConfig {
    let level = log.level.clone().unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        errs.push("log.level", format!("invalid filter {level:?}: {e}"));
    }
    let format = match log.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errs.push(
                "log.format",
                format!("unknown format {other:?} (expected \"text\" or \"json\")"),
            );
            LogFormat::Text
        }
    };
    LogConfig { level, format }
}

fn validate_sip(sip: &FileSip, errs: &mut Errors) -> SipDriverConfig {
    let udp_listen = sip
        .udp_listen
        .as_deref()
        .and_then(|s| parse_socket_addr(s, "sip.udp_listen", errs));
    let tcp_listen = sip
        .tcp_listen
        .as_deref()
        .and_then(|s| parse_socket_addr(s, "sip.tcp_listen", errs));
    if sip.udp_listen.is_none() && sip.tcp_listen.is_none() {
        errs.push("sip", "set udp_listen, tcp_listen or both");
    }
    let public_host = match sip.public_host.as_deref() {
        Some(h) if h.trim().is_empty() || h.contains(char::is_whitespace) => {
            errs.push("sip.public_host", format!("invalid host {h:?}"));
            None
        }
        Some(h) => Some(h.to_string()),
        None => {
            let unspecified = [udp_listen, tcp_listen]
                .iter()
                .flatten()
                .any(|a| a.ip().is_unspecified());
            if unspecified {
                errs.push(
                    "sip.public_host",
                    "required when listening on an unspecified address (0.0.0.0 or ::)",
                );
            }
            None
        }
    };
    let max_message_size = match sip.max_message_size {
        None => 65536,
        Some(n) if !(1024..=16 * 1024 * 1024).contains(&n) => {
            errs.push(
                "sip.max_message_size",
                format!("{n} is outside 1024..=16777216 bytes"),
            );
            65536
        }
        Some(n) => n as usize,
    };
    SipDriverConfig {
        udp_listen,
        tcp_listen,
        public_host,
        max_message_size,
    }
}

fn validate_engine(
    file: &FileConfig,
    sip_cfg: &SipDriverConfig,
    errs: &mut Errors,
) -> EngineConfig {
    let d = EngineConfig::default();
    let sip = &file.sip;

    let ms = |v: Option<u64>, path: &str, default: Duration, errs: &mut Errors| match v {
        None => default,
        Some(0) => {
            errs.push(path, "must be greater than 0");
            default
        }
        Some(n) => Duration::from_millis(n),
    };
    let t1 = ms(sip.t1_ms, "sip.t1_ms", d.tx.t1, errs);
    let t2 = ms(sip.t2_ms, "sip.t2_ms", d.tx.t2, errs);
    let t4 = ms(sip.t4_ms, "sip.t4_ms", d.tx.t4, errs);
    if t2 < t1 {
        errs.push(
            "sip.t2_ms",
            "must not be smaller than sip.t1_ms (RFC 3261 §17.1.2.2)",
        );
    }

    let outbound_proxy = sip
        .outbound_proxy
        .as_deref()
        .and_then(|s| match parse_proxy(s) {
            Ok(p) => Some(p),
            Err(m) => {
                errs.push("sip.outbound_proxy", m);
                None
            }
        });

    let trusted = match &sip.trusted {
        None => d.trusted.clone(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match parse_cidr(s) {
                Some(n) => Some(n),
                None => {
                    errs.push(format!("sip.trusted[{i}]"), format!("invalid CIDR {s:?}"));
                    None
                }
            })
            .collect(),
    };

    let credentials = sip
        .credentials
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, c)| {
            let base = format!("sip.credentials[{i}]");
            let username = required(&c.username, &format!("{base}.username"), errs);
            let password = required(&c.password, &format!("{base}.password"), errs);
            if matches!(c.realm.as_deref(), Some("")) {
                errs.push(
                    format!("{base}.realm"),
                    "must not be empty (omit it to match any realm)",
                );
            }
            Some(Credential {
                realm: c.realm.clone().filter(|r| !r.is_empty()),
                username: username?,
                password: password?,
            })
        })
        .collect();

    let user_agent = match sip.user_agent.as_deref() {
        Some(ua) if ua.is_empty() || ua.contains(['\r', '\n']) => {
            errs.push("sip.user_agent", "must be a non-empty single line");
            d.user_agent.clone()
        }
        Some(ua) => ua.to_string(),
        None => d.user_agent.clone(),
    };

    let pua = &file.pua;
    let default_expires = expires(pua.default_expires, "pua.default_expires", 3600, errs);
    let refresh_window = match pua.refresh_window.as_deref() {
        None => (0.8, 0.9),
        Some([lo, hi]) if 0.0 < *lo && lo <= hi && *hi < 1.0 => (*lo, *hi),
        Some(other) => {
            errs.push(
                "pua.refresh_window",
                format!("{other:?} must be [low, high] with 0 < low <= high < 1"),
            );
            (0.8, 0.9)
        }
    };
    let max_backoff = match pua.max_backoff_secs {
        None => Duration::from_secs(600),
        Some(0) => {
            errs.push("pua.max_backoff_secs", "must be greater than 0");
            Duration::from_secs(600)
        }
        Some(n) => Duration::from_secs(n),
    };
    // Refreshes after a restart go out at this rate (product.md: re-subscriptions are
    // paced by a configured rate), so a restart does not storm the presence server.
    let restore_pace = match pua.resync_rate {
        None => d.restore_pace,
        Some(r) if r == 0 || r > 100_000 => {
            errs.push(
                "pua.resync_rate",
                format!("{r} is outside 1..=100000 per second"),
            );
            d.restore_pace
        }
        Some(r) => Duration::from_micros(1_000_000 / r),
    };

    let n = &file.notifier;
    let min_expires = expires(n.min_expires, "notifier.min_expires", 60, errs);
    let max_expires = expires(n.max_expires, "notifier.max_expires", 7200, errs);
    if min_expires > max_expires {
        errs.push(
            "notifier.max_expires",
            "must not be smaller than notifier.min_expires",
        );
    }

    let mut engine = EngineConfig {
        tx: TxConfig {
            t1,
            t2,
            t4,
            ..TxConfig::default()
        },
        outbound_proxy,
        trusted,
        credentials,
        max_message_size: sip_cfg.max_message_size,
        default_expires,
        min_expires,
        max_expires,
        refresh_window,
        max_backoff,
        restore_pace,
        user_agent,
        max_requests_per_source: match file.sip.max_requests_per_source {
            None => 0,
            Some(n) if n <= 1_000_000 => n as u32,
            Some(n) => {
                errs.push(
                    "sip.max_requests_per_source",
                    format!("{n} is outside 0..=1000000"),
                );
                0
            }
        },
        min_notify_interval: Duration::from_millis(
            file.notifier.min_notify_interval_ms.unwrap_or(0),
        ),
        ..d
    };
    apply_addresses(&mut engine, sip_cfg, sip_cfg.udp_listen, sip_cfg.tcp_listen);
    engine
}

fn required(v: &Option<String>, path: &str, errs: &mut Errors) -> Option<String> {
    match v.as_deref() {
        None | Some("") => {
            errs.push(path, "is required");
            None
        }
        Some(s) => Some(s.to_string()),
    }
}

/// An Expires value: 1..=2^32-1 seconds (RFC 3261 §20.19 allows up to 2^32-1).
fn expires(v: Option<u64>, path: &str, default: u32, errs: &mut Errors) -> u32 {
    match v {
        None => default,
        Some(n) if n == 0 || n > u32::MAX as u64 => {
            errs.push(path, format!("{n} is outside 1..={}", u32::MAX));
            default
        }
        Some(n) => n as u32,
    }
}

fn parse_socket_addr(s: &str, path: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!("invalid address {s:?} (expected IP:port, e.g. \"127.0.0.1:5060\")"),
            );
            None
        }
    }
}

/// A CIDR, or a bare address meaning a single host.
fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Some(n);
    }
    s.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
}

/// Parses `udp:IP:PORT`, `tcp:IP:PORT` or a SIP URI `sip:IP[:PORT][;transport=udp|tcp]`.
/// Only numeric addresses for now: DNS (RFC 3263) is not done by this release.
pub fn parse_proxy(s: &str) -> Result<Peer, String> {
    let bad = |why: &str| format!("invalid proxy {s:?}: {why}");
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower
        .strip_prefix("udp:")
        .map(|r| (Transport::Udp, r))
        .or_else(|| lower.strip_prefix("tcp:").map(|r| (Transport::Tcp, r)))
    {
        let (transport, addr) = rest;
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|_| bad("expected udp:IP:PORT or tcp:IP:PORT"))?;
        return Ok(Peer { transport, addr });
    }
    let rest = lower
        .strip_prefix("sip:")
        .ok_or_else(|| bad("expected sip:IP[:PORT][;transport=udp|tcp] or udp:IP:PORT"))?;
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or_default();
    if hostport.contains('@') {
        return Err(bad("a proxy URI has no user part"));
    }
    let mut transport = Transport::Udp;
    for param in parts {
        if let Some(t) = param.strip_prefix("transport=") {
            transport = match t {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                _ => return Err(bad("transport must be udp or tcp")),
            };
        }
    }
    let addr = if let Ok(a) = hostport.parse::<SocketAddr>() {
        a
    } else {
        let host = hostport.trim_start_matches('[').trim_end_matches(']');
        let ip = host
            .parse::<IpAddr>()
            .map_err(|_| bad("the host must be a numeric IP address (DNS comes later)"))?;
        SocketAddr::new(ip, 5060)
    };
    Ok(Peer { transport, addr })
}

/// Writes Via sent-by, local host and Contact from the public host and the bound ports.
fn apply_addresses(
    engine: &mut EngineConfig,
    sip: &SipDriverConfig,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
) {
    let sent_by = |bound: SocketAddr| -> String {
        match sip.public_host.as_deref() {
            // A configured host:port is used as is (e.g. behind a port mapping).
            Some(h) if has_port(h) => h.to_string(),
            Some(h) => format!("{}:{}", bracket(h), bound.port()),
            None => bound.to_string(),
        }
    };
    let via_udp = udp.map(sent_by);
    let via_tcp = tcp.map(sent_by);
    let primary = via_udp
        .clone()
        .or_else(|| via_tcp.clone())
        .unwrap_or_default();
    engine.tx.via_udp = via_udp.clone().unwrap_or_else(|| primary.clone());
    engine.tx.via_tcp = via_tcp.unwrap_or_else(|| primary.clone());
    engine.local_host = primary.clone();
    engine.contact_uri = if udp.is_some() {
        format!("sip:gateway@{primary}")
    } else {
        format!("sip:gateway@{primary};transport=tcp")
    };
}

/// `host` of `host:port` (`[v6]` kept bracketed); the input when it has no port.
fn host_part(hostport: &str) -> String {
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return bracket(&a.ip().to_string());
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h.to_string(),
        _ => hostport.to_string(),
    }
}

fn has_port(host: &str) -> bool {
    host.parse::<SocketAddr>().is_ok()
        || (!host.starts_with('[')
            && host.matches(':').count() == 1
            && host
                .rsplit(':')
                .next()
                .is_some_and(|p| p.parse::<u16>().is_ok()))
}

fn bracket(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]"),
        _ => host.to_string(),
    }
}

fn validate_xmpp(x: &FileXmpp, errs: &mut Errors) -> XmppConfig {
    let component_jid = required(&x.component_jid, "xmpp.component_jid", errs).unwrap_or_default();
    if component_jid.contains(['@', '/']) {
        errs.push(
            "xmpp.component_jid",
            format!("{component_jid:?} must be a bare domain"),
        );
    }
    let secret = required(&x.secret, "xmpp.secret", errs).unwrap_or_default();
    let server = required(&x.server, "xmpp.server", errs).unwrap_or_default();
    if !server.is_empty() && !has_port(&server) {
        errs.push(
            "xmpp.server",
            format!("invalid address {server:?} (expected host:port)"),
        );
    }
    XmppConfig {
        component_jid,
        secret,
        server,
    }
}

fn validate_bridge(b: &FileBridge, errs: &mut Errors) -> BridgeConfig {
    let mode = match b.mode.as_deref().unwrap_or("notifier") {
        "notifier" => BridgeMode::Notifier,
        "publish" => BridgeMode::Publish,
        other => {
            errs.push(
                "bridge.mode",
                format!("unknown mode {other:?} (expected \"notifier\" or \"publish\")"),
            );
            BridgeMode::Notifier
        }
    };
    let mut seen = BTreeSet::new();
    let mut domains = Vec::new();
    for (i, d) in b.domains.iter().flatten().enumerate() {
        let base = format!("bridge.domains[{i}]");
        let xmpp_domain = required(&d.xmpp_domain, &format!("{base}.xmpp_domain"), errs);
        let component_domain = required(
            &d.component_domain,
            &format!("{base}.component_domain"),
            errs,
        );
        let sip_domain = required(&d.sip_domain, &format!("{base}.sip_domain"), errs);
        if let Some(c) = &component_domain {
            if !seen.insert(c.clone()) {
                errs.push(
                    format!("{base}.component_domain"),
                    format!("{c:?} is mapped twice"),
                );
            }
        }
        let scheme = match d.scheme.as_deref().unwrap_or("domain") {
            "domain" => Some(AddressScheme::Domain),
            "escaped" => Some(AddressScheme::Escaped),
            "delimiter" => {
                let delim = d.delimiter.clone().unwrap_or_else(|| "*".into());
                let mut chars = delim.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None)
                        if !matches!(c, '@' | ':' | '/' | ';' | '.') && !c.is_whitespace() =>
                    {
                        Some(AddressScheme::Delimiter(c))
                    }
                    _ => {
                        errs.push(
                            format!("{base}.delimiter"),
                            format!("{delim:?} must be one character that can separate a user from a domain"),
                        );
                        None
                    }
                }
            }
            other => {
                errs.push(
                    format!("{base}.scheme"),
                    format!("unknown scheme {other:?} (expected domain, escaped or delimiter)"),
                );
                None
            }
        };
        if d.delimiter.is_some() && d.scheme.as_deref() != Some("delimiter") {
            errs.push(
                format!("{base}.delimiter"),
                "only meaningful with scheme = \"delimiter\"",
            );
        }
        if let (Some(xmpp_domain), Some(component_domain), Some(sip_domain), Some(scheme)) =
            (xmpp_domain, component_domain, sip_domain, scheme)
        {
            domains.push(DomainMapping {
                xmpp_domain,
                component_domain,
                sip_domain,
                scheme,
            });
        }
    }
    let max_subscriptions_per_user = match b.max_subscriptions_per_user {
        None => 100,
        Some(n) if (1..=100_000).contains(&n) => n as usize,
        Some(n) => {
            errs.push(
                "bridge.max_subscriptions_per_user",
                format!("{n} is outside 1..=100000"),
            );
            100
        }
    };
    BridgeConfig {
        mode,
        domains,
        max_subscriptions_per_user,
    }
}

impl Config {
    /// The bridge module's settings, given the engine's final settings (the gateway's own
    /// SIP host, under which the `delimiter` scheme puts XMPP users, is the host part of
    /// `engine.local_host`). `None` without a `[bridge]` table.
    pub fn bridge_module_config(
        &self,
        engine: &EngineConfig,
    ) -> Option<crate::core::modules::bridge::BridgeConfig> {
        use crate::core::modules::bridge::{BridgeConfig as Module, SipSideMode};
        use crate::core::xmpp::address::{DomainMap, MappingScheme};
        let b = self.bridge.as_ref()?;
        let gateway_sip_host = host_part(&engine.local_host);
        Some(Module {
            domains: b
                .domains
                .iter()
                .map(|d| DomainMap {
                    xmpp_domain: d.xmpp_domain.clone(),
                    component_domain: d.component_domain.clone(),
                    sip_domain: d.sip_domain.clone(),
                    gateway_sip_host: gateway_sip_host.clone(),
                    scheme: match d.scheme {
                        AddressScheme::Domain => MappingScheme::Domain,
                        AddressScheme::Escaped => MappingScheme::Escaped,
                        AddressScheme::Delimiter(c) => MappingScheme::Delimiter(c),
                    },
                })
                .collect(),
            mode: match b.mode {
                BridgeMode::Notifier => SipSideMode::Notifier,
                BridgeMode::Publish => SipSideMode::Publish,
            },
            max_subscriptions_per_user: b.max_subscriptions_per_user,
        })
    }

    /// The local site's settings (presence agent, registrar, digest authentication);
    /// `nonce_key` keys the digest nonces when `auth.nonce_secret` is not set (at least
    /// 16 bytes). Empty domains without a `[presence_agent]` table.
    pub fn site_config(&self, nonce_key: Vec<u8>) -> crate::core::local_site::LocalSiteConfig {
        use crate::core::local_site::{config_user, AuthConfig, LocalSiteConfig};
        use crate::core::presence_state::PresenceStateConfig;
        use crate::core::registrar::RegistrarConfig;
        use crate::core::sip::digest::Algorithm;
        use crate::core::sip::digest_server::DigestServerConfig;
        use crate::core::watcher_rules::{RuleAction, RuleDefaults};
        let Some(pa) = &self.presence_agent else {
            return LocalSiteConfig {
                copies_max_expires: self.registrations.copy_max_expires,
                ..LocalSiteConfig::default()
            };
        };
        let rule = |r: DefaultRule| match r {
            DefaultRule::Allow => RuleAction::Allow,
            DefaultRule::Deny => RuleAction::Deny,
            DefaultRule::Pending => RuleAction::Pending,
        };
        let secret = match &self.auth.nonce_secret {
            Some(s) if s.len() >= 16 => s.as_bytes().to_vec(),
            _ => nonce_key,
        };
        LocalSiteConfig {
            domains: pa.domains.clone(),
            presence: PresenceStateConfig {
                min_expires: pa.min_expires,
                max_expires: pa.max_expires,
                default_expires: pa.default_expires,
                max_publications_per_presentity: pa.max_publications_per_presentity,
                max_body_bytes: self.sip.max_message_size,
            },
            rule_defaults: RuleDefaults {
                same_domain: rule(pa.same_domain),
                other_domains: rule(pa.other_domains),
            },
            domain_rule_defaults: pa
                .domain_defaults
                .iter()
                .map(|(d, same, other)| {
                    (
                        d.clone(),
                        RuleDefaults {
                            same_domain: rule(*same),
                            other_domains: rule(*other),
                        },
                    )
                })
                .collect(),
            sender_header: pa.sender_header.clone(),
            max_subscriptions_per_presentity: pa.max_subscriptions_per_presentity,
            copies_max_expires: self.registrations.copy_max_expires,
            registrar: self.registrar.as_ref().map(|r| RegistrarConfig {
                min_expires: r.min_expires,
                max_expires: r.max_expires,
                default_expires: r.default_expires,
                max_contacts_per_aor: r.max_contacts_per_aor,
            }),
            auth: Some(AuthConfig {
                server: DigestServerConfig {
                    secret,
                    nonce_lifetime_secs: self.auth.nonce_lifetime_secs,
                    algorithms: self
                        .auth
                        .algorithms
                        .iter()
                        .filter_map(|a| Algorithm::parse(a))
                        .collect(),
                },
                realm: self.auth.realm.clone(),
                users: self
                    .auth
                    .users
                    .iter()
                    .map(|u| {
                        config_user(
                            &u.username,
                            &u.domain,
                            u.password.as_deref(),
                            u.ha1_md5.as_deref(),
                            u.ha1_sha256.as_deref(),
                        )
                    })
                    .collect(),
            }),
        }
    }

    /// What the registrar module serves: the embedded registrar's domains (those of the
    /// presence agent), the copy domains and the `reg` subscriptions, whose watcher
    /// defaults to the AOR of the engine's Contact.
    pub fn registrar_module_config(
        &self,
        engine: &EngineConfig,
    ) -> crate::core::modules::registrar::RegistrarModuleConfig {
        use crate::core::modules::registrar::{RegEventConfig, RegistrarModuleConfig};
        let r = &self.registrations;
        RegistrarModuleConfig {
            domains: self
                .presence_agent
                .as_ref()
                .filter(|_| self.registrar.is_some())
                .map(|p| p.domains.clone())
                .unwrap_or_default(),
            copy_domains: r.copy_domains.clone(),
            publish_mark: r.publish_mark.clone(),
            reg_event: RegEventConfig {
                aors: r.reg_event_aors.clone(),
                expires: r.reg_event_expires,
                watcher: r
                    .reg_event_watcher
                    .clone()
                    .or_else(|| crate::core::routing::aor_of(&engine.contact_uri))
                    .unwrap_or_else(|| engine.contact_uri.clone()),
                server: r.reg_event_server.clone(),
            },
        }
    }

    /// The engine's settings once the SIP sockets are bound: Via sent-by, local host and
    /// Contact use the actual ports (so `127.0.0.1:0` works) unless `public_host` gives one.
    pub fn engine_config_for(
        &self,
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
    ) -> EngineConfig {
        let mut engine = self.engine.clone();
        apply_addresses(&mut engine, &self.sip, udp, tcp);
        engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> &'static str {
        "[sip]\nudp_listen = \"127.0.0.1:5060\"\n"
    }

    #[test]
    fn minimal_file_gets_product_defaults() {
        let c = load_str(minimal(), Some(HashMap::new())).unwrap();
        assert_eq!(c.engine.default_expires, 3600);
        assert_eq!(c.engine.refresh_window, (0.8, 0.9));
        assert_eq!(c.engine.max_backoff, Duration::from_secs(600));
        assert_eq!(c.engine.min_expires, 60);
        assert_eq!(c.engine.max_expires, 7200);
        assert_eq!(c.sip.max_message_size, 65536);
        assert_eq!(c.store.path, PathBuf::from("gateway.db"));
        assert_eq!(c.admin.listen, "127.0.0.1:8560".parse().unwrap());
        assert_eq!(c.engine.min_notify_interval, Duration::ZERO);
    }

    #[test]
    fn notifier_interval_reaches_the_engine() {
        let text = format!("{}[notifier]\nmin_notify_interval_ms = 250\n", minimal());
        let c = load_str(&text, Some(HashMap::new())).unwrap();
        assert_eq!(c.engine.min_notify_interval, Duration::from_millis(250));
    }

    #[test]
    fn bridge_module_gets_the_gateway_host_without_port() {
        let text = format!(
            "{}[xmpp]\ncomponent_jid = \"sip.x\"\nsecret = \"s\"\nserver = \"127.0.0.1:5347\"\n\
             [bridge]\n[[bridge.domains]]\nxmpp_domain = \"x\"\ncomponent_domain = \"sip.x\"\n\
             sip_domain = \"s\"\nscheme = \"delimiter\"\ndelimiter = \"%\"\n",
            minimal()
        );
        let c = load_str(&text, Some(HashMap::new())).unwrap();
        let e = c.engine_config_for(Some("127.0.0.1:5071".parse().unwrap()), None);
        let b = c.bridge_module_config(&e).unwrap();
        assert_eq!(b.domains[0].gateway_sip_host, "127.0.0.1");
        assert_eq!(
            b.domains[0].scheme,
            crate::core::xmpp::address::MappingScheme::Delimiter('%')
        );
        assert_eq!(b.max_subscriptions_per_user, 100);
    }

    #[test]
    fn presence_agent_domain_defaults_reach_the_site_and_must_name_a_served_domain() {
        let text = format!(
            "{}[presence_agent]\ndomains = [\"sip.test\", \"lobby.test\"]\n\
             [[presence_agent.domain_defaults]]\ndomain = \"Lobby.test\"\nother_domains = \"allow\"\n",
            minimal()
        );
        let c = load_str(&text, Some(HashMap::new())).unwrap();
        let site = c.site_config(vec![0; 32]);
        assert_eq!(site.domain_rule_defaults.len(), 1);
        let (domain, d) = &site.domain_rule_defaults[0];
        assert_eq!(domain, "lobby.test");
        assert_eq!(
            d.other_domains,
            crate::core::watcher_rules::RuleAction::Allow
        );
        assert_eq!(d.same_domain, crate::core::watcher_rules::RuleAction::Allow);
        let bad = text.replace("Lobby.test", "elsewhere.test");
        let errs = load_str(&bad, Some(HashMap::new())).unwrap_err();
        assert!(
            errs.has_path("presence_agent.domain_defaults[0].domain"),
            "{errs}"
        );
    }

    #[test]
    fn host_part_strips_ports() {
        assert_eq!(host_part("gw.example.org:5060"), "gw.example.org");
        assert_eq!(host_part("[::1]:5060"), "[::1]");
        assert_eq!(host_part("gw.example.org"), "gw.example.org");
    }

    #[test]
    fn resync_rate_sets_the_restore_pace() {
        let c = load_str(
            "[sip]\nudp_listen = \"127.0.0.1:5060\"\n[pua]\nresync_rate = 200\n",
            Some(HashMap::new()),
        )
        .unwrap();
        assert_eq!(c.engine.restore_pace, Duration::from_millis(5));
        let errs = load_str(
            "[sip]\nudp_listen = \"127.0.0.1:5060\"\n[pua]\nresync_rate = 0\n",
            Some(HashMap::new()),
        )
        .unwrap_err();
        assert!(
            errs.0.iter().any(|e| e.path == "pua.resync_rate"),
            "{errs:?}"
        );
    }

    #[test]
    fn proxy_forms_parse() {
        let udp = parse_proxy("udp:127.0.0.1:5070").unwrap();
        assert_eq!(udp.transport, Transport::Udp);
        assert_eq!(udp.addr, "127.0.0.1:5070".parse().unwrap());
        let tcp = parse_proxy("sip:127.0.0.1:5070;transport=tcp").unwrap();
        assert_eq!(tcp.transport, Transport::Tcp);
        let default_port = parse_proxy("sip:127.0.0.1").unwrap();
        assert_eq!(default_port.addr.port(), 5060);
        assert!(parse_proxy("sip:proxy.example.org").is_err());
    }

    #[test]
    fn bound_port_reaches_via_and_contact() {
        let c = load_str(
            "[sip]\nudp_listen = \"127.0.0.1:0\"\n",
            Some(HashMap::new()),
        )
        .unwrap();
        let e = c.engine_config_for(Some("127.0.0.1:41234".parse().unwrap()), None);
        assert_eq!(e.tx.via_udp, "127.0.0.1:41234");
        assert_eq!(e.contact_uri, "sip:gateway@127.0.0.1:41234");
    }

    #[test]
    fn public_host_without_port_takes_bound_port() {
        let c = load_str(
            "[sip]\ntcp_listen = \"0.0.0.0:0\"\npublic_host = \"gw.example.org\"\n",
            Some(HashMap::new()),
        )
        .unwrap();
        let e = c.engine_config_for(None, Some("0.0.0.0:5099".parse().unwrap()));
        assert_eq!(e.tx.via_tcp, "gw.example.org:5099");
        assert_eq!(
            e.contact_uri,
            "sip:gateway@gw.example.org:5099;transport=tcp"
        );
    }
}
