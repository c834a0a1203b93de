//! [`EventKey`]: which state a publication belongs to (RFC 3903 §4: state is per
//! resource *and* event package; RFC 6665 §8.2.1 event parameters).

use std::fmt;

use crate::core::sip::headers::EventHeader;

/// The event a publication is for, in canonical text form: the package, then its
/// parameters sorted by name, names and values lowercased (`presence`, `dialog`,
/// `dialog;sla`).
///
/// Parameters are part of the key because they can name distinct state: `dialog;sla`
/// (draft-anil-sipping-bla-03 §7) is the shared-line view and is kept apart from plain
/// `dialog`. The `id` parameter is left out: it identifies a subscription (RFC 6665
/// §8.2.1), not state, and has no meaning in PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(String);

impl EventKey {
    /// `presence` (RFC 3856).
    pub fn presence() -> EventKey {
        EventKey("presence".into())
    }

    /// `dialog` (RFC 4235).
    pub fn dialog() -> EventKey {
        EventKey("dialog".into())
    }

    /// `dialog;sla` (draft-anil-sipping-bla-03 §7).
    pub fn dialog_sla() -> EventKey {
        EventKey("dialog;sla".into())
    }

    /// The canonical key of an `Event` header.
    pub fn from_header(event: &EventHeader) -> EventKey {
        let mut params: Vec<(String, Option<String>)> = event
            .params
            .0
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("id"))
            .map(|(n, v)| {
                (
                    n.trim().to_ascii_lowercase(),
                    v.as_ref().map(|v| v.trim().to_ascii_lowercase()),
                )
            })
            .collect();
        params.sort();
        params.dedup_by(|a, b| a.0 == b.0);
        let mut s = event.package.trim().to_ascii_lowercase();
        for (n, v) in params {
            s.push(';');
            s.push_str(&n);
            if let Some(v) = v {
                s.push('=');
                s.push_str(&v);
            }
        }
        EventKey(s)
    }

    /// Parses the text of an `Event` header value (or a key written by [`EventKey::as_str`])
    /// into its canonical key; `None` when it is not a valid `Event` value.
    pub fn parse(s: &str) -> Option<EventKey> {
        EventHeader::parse(s)
            .ok()
            .map(|e| EventKey::from_header(&e))
    }

    /// The package name (`dialog` for `dialog;sla`).
    pub fn package(&self) -> &str {
        self.0.split(';').next().unwrap_or_default()
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_sorted_lowercased_and_id_is_dropped() {
        let e = EventHeader::parse("Dialog;SLA;b=X;id=7;a").expect("parses");
        assert_eq!(EventKey::from_header(&e).as_str(), "dialog;a;b=x;sla");
        assert_eq!(EventKey::from_header(&e).package(), "dialog");
    }

    #[test]
    fn dialog_and_dialog_sla_are_distinct() {
        assert_ne!(
            EventKey::parse("dialog").expect("ok"),
            EventKey::parse("dialog;sla").expect("ok")
        );
        assert_eq!(
            EventKey::parse("dialog ; sla"),
            Some(EventKey::dialog_sla())
        );
    }
}
