//! The neutral presence model and the SIP event bodies that carry it.
//!
//! Owner: bodies. `parse_body` / the `build_*` functions are the contract the PUA service,
//! the notifier and the modules rely on.
//!
//! Every parser goes through one tolerant, namespace-aware XML reader with hard limits
//! ([`MAX_DOCUMENT_BYTES`], [`MAX_DEPTH`], [`MAX_ATTRIBUTES`]; over a limit is
//! [`BodyError::TooLarge`]). No parser panics on any input (tests/presence_bodies_never_panic.rs).

pub mod dialog_info;
pub mod model;
pub mod pidf;
pub mod reginfo;
pub mod watcherinfo;
mod xml;

/// XML escaping shared by every document writer of the core.
pub use xml::{push_attr_escaped, push_text_escaped};

pub use dialog_info::{build_dialog_info, parse_dialog_info, DialogInfo, DialogTable};
pub use model::*;
pub use pidf::{build_pidf, parse_pidf};
pub use reginfo::{parse_reginfo, Reginfo};
pub use watcherinfo::{build_watcherinfo, parse_watcherinfo, WatcherInfo, WatcherTable};
pub use xml::{MAX_ATTRIBUTES, MAX_DEPTH, MAX_DOCUMENT_BYTES};

/// Media types of the bodies this crate understands.
pub const PIDF: &str = "application/pidf+xml";
pub const WATCHERINFO: &str = "application/watcherinfo+xml";
pub const DIALOG_INFO: &str = "application/dialog-info+xml";
pub const REGINFO: &str = "application/reginfo+xml";

/// A parsed event body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// No body (an empty NOTIFY keeps the previous document, RFC 3856 §6.8).
    Empty,
    Pidf(PresenceDoc),
    Watcherinfo(watcherinfo::WatcherInfo),
    DialogInfo(dialog_info::DialogInfo),
    Reginfo(reginfo::Reginfo),
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
///
/// A body of only white space counts as empty too (a stray CRLF is not a document).
/// A missing or unknown type gives [`Body::Other`] with the type as written (`""` when
/// missing): whether that is a 415 is the owning package's decision.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Body, BodyError> {
    if bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return Ok(Body::Empty);
    }
    let media = content_type.map(media_type).unwrap_or_default();
    if media.eq_ignore_ascii_case(PIDF) {
        pidf::parse_pidf(bytes).map(Body::Pidf)
    } else if media.eq_ignore_ascii_case(WATCHERINFO) {
        watcherinfo::parse_watcherinfo(bytes).map(Body::Watcherinfo)
    } else if media.eq_ignore_ascii_case(DIALOG_INFO) {
        dialog_info::parse_dialog_info(bytes).map(Body::DialogInfo)
    } else if media.eq_ignore_ascii_case(REGINFO) {
        reginfo::parse_reginfo(bytes).map(Body::Reginfo)
    } else {
        Ok(Body::Other {
            content_type: content_type.unwrap_or_default().trim().to_string(),
            bytes: bytes.to_vec(),
        })
    }
}

/// `type/subtype` of a Content-Type value, parameters and surrounding space removed
/// (RFC 3261 §20.15, RFC 2045 §5.1).
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// `state` of a watcherinfo (RFC 3858 §4.2) or dialog-info (RFC 4235 §4.1) document.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DocState {
    /// The document carries the complete state and replaces the subscriber's table.
    Full,
    /// The document carries only changed rows, keyed by their `id`.
    Partial,
}

impl DocState {
    pub fn parse(s: &str) -> Option<DocState> {
        match s.trim() {
            "full" => Some(DocState::Full),
            "partial" => Some(DocState::Partial),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocState::Full => "full",
            DocState::Partial => "partial",
        }
    }
}

/// What a subscriber-side table did with a versioned document (RFC 3858 §4.4,
/// RFC 4235 §4.1; standards.md §11 and §12.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum VersionOutcome {
    /// The document was the next version (or the first one seen) and was applied.
    Applied,
    /// The document was applied, but versions were skipped (or a partial document arrived
    /// with no base state): the caller should refresh the subscription to get full state.
    AppliedNeedsResync,
    /// The document's version is not newer than the local one: discarded unprocessed.
    Discarded,
}

/// The version rule shared by watcherinfo and dialog-info tables. `local` is the last
/// version applied (`None` before any document).
pub(crate) fn version_outcome(local: Option<u32>, version: u32, state: DocState) -> VersionOutcome {
    match local {
        // Nothing applied yet: a full document is a complete base; a partial one is not.
        None => match state {
            DocState::Full => VersionOutcome::Applied,
            DocState::Partial => VersionOutcome::AppliedNeedsResync,
        },
        Some(local) => {
            let next = u64::from(local) + 1;
            let version = u64::from(version);
            if version <= u64::from(local) {
                // RFC 3858 discards "less than"; an equal version is a repeat of what we
                // already applied (a retransmission), so it is discarded as well.
                VersionOutcome::Discarded
            } else if version == next || state == DocState::Full {
                // A full document after a gap still carries the complete state, so a
                // refresh to obtain full state would add nothing.
                VersionOutcome::Applied
            } else {
                VersionOutcome::AppliedNeedsResync
            }
        }
    }
}

/// Gives every PIDF note without an `xml:lang` the language of the NOTIFY's
/// `Content-Language` (RFC 3261 §20.13), so the language survives into XMPP `xml:lang`
/// (RFC 8048 §7.6, standards.md §16 case 51). Other bodies are left alone.
pub fn apply_content_language(body: &mut Body, language: &str) {
    let language = language.split(',').next().unwrap_or("").trim();
    if language.is_empty() {
        return;
    }
    let Body::Pidf(doc) = body else { return };
    let fill = |notes: &mut Vec<Note>| {
        for n in notes.iter_mut().filter(|n| n.lang.is_none()) {
            n.lang = Some(language.to_string());
        }
    };
    fill(&mut doc.notes);
    for t in &mut doc.tuples {
        fill(&mut t.notes);
    }
    if let Some(p) = &mut doc.person {
        fill(&mut p.notes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIDF_BODY: &[u8] = b"<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' \
        entity='pres:ben@sip.example'><tuple id='t'><status><basic>open</basic></status></tuple></presence>";

    #[test]
    fn pidf_content_type_with_charset_parameter_dispatches_to_pidf() {
        let body =
            parse_body(Some("Application/PIDF+XML ; charset=UTF-8"), PIDF_BODY).expect("pidf");
        assert!(matches!(body, Body::Pidf(doc) if doc.tuples.len() == 1));
    }

    /// standards.md §16 case 53 (an empty NOTIFY keeps the previous document).
    #[test]
    fn empty_bytes_are_empty_body_whatever_the_type() {
        assert_eq!(parse_body(Some(PIDF), b""), Ok(Body::Empty));
        assert_eq!(parse_body(None, b""), Ok(Body::Empty));
    }

    #[test]
    fn whitespace_only_body_is_empty() {
        assert_eq!(parse_body(Some(PIDF), b"\r\n"), Ok(Body::Empty));
    }

    #[test]
    fn watcherinfo_type_dispatches_to_watcherinfo() {
        let body = parse_body(
            Some(WATCHERINFO),
            b"<watcherinfo xmlns='urn:ietf:params:xml:ns:watcherinfo' version='0' state='full'/>",
        )
        .expect("winfo");
        assert!(matches!(body, Body::Watcherinfo(w) if w.version == 0));
    }

    #[test]
    fn dialog_info_type_dispatches_to_dialog_info() {
        let body = parse_body(
            Some(DIALOG_INFO),
            b"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='2' state='full' entity='sip:a@b'/>",
        )
        .expect("dialog-info");
        assert!(matches!(body, Body::DialogInfo(d) if d.version == 2));
    }

    #[test]
    fn unknown_type_is_kept_raw() {
        let body = parse_body(Some("text/plain"), b"hello").expect("other");
        assert_eq!(
            body,
            Body::Other {
                content_type: "text/plain".into(),
                bytes: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn pidf_type_with_a_watcherinfo_document_is_wrong_document() {
        let err = parse_body(
            Some(PIDF),
            b"<watcherinfo xmlns='urn:ietf:params:xml:ns:watcherinfo' version='0' state='full'/>",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            BodyError::WrongDocument {
                expected: "PIDF",
                ..
            }
        ));
    }

    #[test]
    fn pidf_type_with_broken_xml_is_malformed() {
        let err = parse_body(Some(PIDF), b"<presence").unwrap_err();
        assert!(matches!(err, BodyError::Malformed(_)));
    }
}
