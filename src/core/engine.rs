//! The engine: the one object the drivers talk to (architecture.md, Core and drivers).
//!
//! Contract (after str0m): after every `handle_input`, drain `poll_output` until it returns
//! `None`, then sleep until `poll_timeout` (or the next input) and call
//! `handle_input(now, Input::Tick)`. Every input carries the time of receipt.
//!
//! Owner: pua. The Input/Output vocabulary below is fixed so the drivers can be written
//! against it.

use super::modules::admin::{AdminCommand, AdminReply};
use super::persist::{StoreOp, StoredRow};
use super::sip::{Peer, SipMessage};

/// Correlates an admin command with its reply.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdminRequestId(pub u64);

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Time has passed; fire due timers.
    Tick,
    /// A parsed SIP message from `from`.
    Sip { from: Peer, message: SipMessage },
    /// Bytes framed as one SIP message that did not parse. The engine answers 400 with a
    /// reason naming the problem when it can salvage enough headers, else drops and logs.
    SipMalformed {
        from: Peer,
        raw: Vec<u8>,
        error: String,
    },
    /// A message larger than the configured limit (answered 513 when salvageable).
    SipOversized { from: Peer, head: Vec<u8> },
    /// Sending to `to` failed at the transport (RFC 3261 §17.1.4: report as timeout).
    SipTransportError { to: Peer },
    /// An operator command from the management API.
    Admin {
        id: AdminRequestId,
        command: AdminCommand,
    },
    /// Rows loaded from the store at start, before any other input.
    Restore(Vec<StoredRow>),
    /// Graceful shutdown requested: persist what must survive, stop timers.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    SendSip {
        to: Peer,
        message: SipMessage,
    },
    /// Perform before any later output.
    Store(StoreOp),
    AdminReply {
        id: AdminRequestId,
        reply: AdminReply,
    },
}

use std::time::Duration;

use super::sip::transaction::TxConfig;

/// A credential for answering 401/407 challenges to our requests (RFC 3261 §22.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Match only challenges of this realm; `None` answers any realm.
    pub realm: Option<String>,
    pub username: String,
    pub password: String,
}

/// The engine's validated settings, built by `config` from `gateway.toml`.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub tx: TxConfig,
    /// Host (and port) used in our Contact and Call-IDs, e.g. `127.0.0.1:5060`.
    pub local_host: String,
    /// Our Contact URI for dialogs we create, e.g. `sip:gateway@127.0.0.1:5060`.
    pub contact_uri: String,
    /// Where out-of-dialog requests go (the SIP presence server / outbound proxy). When
    /// absent, the Request-URI's numeric host and port are used.
    pub outbound_proxy: Option<Peer>,
    /// Networks whose requests are served; others get 403.
    pub trusted: Vec<ipnet::IpNet>,
    pub credentials: Vec<Credential>,
    /// Largest SIP message accepted (bytes); larger ones get 513 (RFC 3261 §21.5.14).
    pub max_message_size: usize,
    /// Expires we request on SUBSCRIBE and PUBLISH when the caller leaves it open.
    pub default_expires: u32,
    /// Notifier side: shortest Expires accepted (423 below it) and longest granted.
    pub min_expires: u32,
    pub max_expires: u32,
    /// Refresh window as fractions of the granted interval (product.md: 0.8–0.9).
    pub refresh_window: (f64, f64),
    /// Cap of the exponential back-off after failures (product.md: 10 minutes).
    pub max_backoff: Duration,
    pub user_agent: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tx: TxConfig::default(),
            local_host: "127.0.0.1:5060".into(),
            contact_uri: "sip:gateway@127.0.0.1:5060".into(),
            outbound_proxy: None,
            trusted: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            credentials: Vec::new(),
            max_message_size: 64 * 1024,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            refresh_window: (0.8, 0.9),
            max_backoff: Duration::from_secs(600),
            user_agent: concat!("xmpp-sip-gateway/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}
