//! The neutral presence model and the SIP event bodies that carry it.
//!
//! Owner: bodies. `parse_body` / the `build_*` functions are the contract the PUA service,
//! the notifier and the modules rely on.

pub mod dialog_info;
pub mod model;
pub mod pidf;
pub mod watcherinfo;
mod xml;

pub use model::*;

/// Media types of the bodies this crate understands.
pub const PIDF: &str = "application/pidf+xml";
pub const WATCHERINFO: &str = "application/watcherinfo+xml";
pub const DIALOG_INFO: &str = "application/dialog-info+xml";

/// A parsed event body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// No body (an empty NOTIFY keeps the previous document, RFC 3856 §6.8).
    Empty,
    Pidf(PresenceDoc),
    Watcherinfo(watcherinfo::WatcherInfo),
    DialogInfo(dialog_info::DialogInfo),
    /// A media type we do not interpret; kept raw for the owning module.
    Other {
        content_type: String,
        bytes: Vec<u8>,
    },
}

/// Why a body could not be used; answered on the wire as 400 (or 415 for an unknown type
/// where the package requires one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not well-formed XML: {0}")]
    Malformed(String),
    #[error("body is not a {expected} document: {detail}")]
    WrongDocument {
        expected: &'static str,
        detail: String,
    },
    #[error("body exceeds the XML limits: {0}")]
    TooLarge(String),
}

/// Parses a body by its Content-Type (parameters such as `;charset=` ignored).
/// An empty byte slice is [`Body::Empty`] whatever the type.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Body, BodyError> {
    let _ = (content_type, bytes);
    todo!("bodies")
}
