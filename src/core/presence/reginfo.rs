//! Registration state (RFC 3680 `application/reginfo+xml`), as a `reg` event subscriber
//! reads it.
//!
//! Choices, after what Kamailio's `pua_reginfo`/`presence_reginfo` send (interop-notes):
//! - a `<contact>` is identified by its `<uri>`, not its `id` (Kamailio writes memory
//!   addresses there, which change when the binding is recreated);
//! - a contact in state `terminated` is listed so the subscriber learns it is gone
//!   (RFC 3680 §5.2); [`Registration::active_contacts`] leaves it out;
//! - `expires` is optional (§5.3 makes it so); the caller grants its own default;
//! - Kamailio's extra attributes (`user_agent`, `received`, `path`) are read when present.

use super::xml::{self, Element, Ns};
use super::BodyError;

pub use super::DocState;

/// A `<reginfo>` document (RFC 3680 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reginfo {
    pub version: u32,
    pub state: DocState,
    pub registrations: Vec<Registration>,
}

/// `<registration>`: the bindings of one AOR (RFC 3680 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub aor: String,
    /// `init`, `active` or `terminated`.
    pub state: String,
    pub contacts: Vec<RegContact>,
}

impl Registration {
    /// The contacts still bound (state `active`).
    pub fn active_contacts(&self) -> impl Iterator<Item = &RegContact> {
        self.contacts.iter().filter(|c| c.active)
    }
}

/// `<contact>`: one binding (RFC 3680 §5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegContact {
    /// The contact URI (`<uri>`).
    pub uri: String,
    /// `state="active"` (anything else, `terminated`, is not bound).
    pub active: bool,
    /// `event` (registered, created, refreshed, expired, unregistered, ...).
    pub event: Option<String>,
    /// Seconds until the binding lapses, as the registrar sees it.
    pub expires: Option<u32>,
    /// `q` in thousandths.
    pub q: Option<u16>,
    pub call_id: Option<String>,
    pub cseq: Option<u32>,
    pub user_agent: Option<String>,
}

fn wrong(detail: impl Into<String>) -> BodyError {
    BodyError::WrongDocument {
        expected: "reginfo",
        detail: detail.into(),
    }
}

fn child<'d, 'a>(el: Element<'d, 'a>, name: &str) -> Option<Element<'d, 'a>> {
    el.children().find(|c| c.is(Ns::Reginfo, name))
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(xml::trim_xml)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Parses an `application/reginfo+xml` body. `version` and `state` are required on the
/// root, `aor` on a registration; a `<contact>` without `<uri>` is skipped.
pub fn parse_reginfo(bytes: &[u8]) -> Result<Reginfo, BodyError> {
    let doc = xml::parse_document(bytes)?;
    let root = doc.root();
    if !root.is(Ns::Reginfo, "reginfo") {
        return Err(wrong(format!(
            "root element <{}> is not <reginfo>",
            root.name()
        )));
    }
    let version = root
        .attr("version")
        .and_then(|v| xml::trim_xml(v).parse::<u32>().ok())
        .ok_or_else(|| wrong("missing or invalid version"))?;
    let state = root
        .attr("state")
        .and_then(DocState::parse)
        .ok_or_else(|| wrong("missing or invalid state"))?;
    let mut registrations = Vec::new();
    for reg in root
        .children()
        .filter(|c| c.is(Ns::Reginfo, "registration"))
    {
        let aor = non_empty(reg.attr("aor")).ok_or_else(|| wrong("registration without aor"))?;
        let contacts = reg
            .children()
            .filter(|c| c.is(Ns::Reginfo, "contact"))
            .filter_map(parse_contact)
            .collect();
        registrations.push(Registration {
            aor,
            state: non_empty(reg.attr("state")).unwrap_or_else(|| "active".into()),
            contacts,
        });
    }
    Ok(Reginfo {
        version,
        state,
        registrations,
    })
}

fn parse_contact(el: Element) -> Option<RegContact> {
    let Some(uri) = child(el, "uri")
        .map(|u| u.trimmed().to_string())
        .filter(|u| !u.is_empty())
    else {
        tracing::debug!("skipping reginfo <contact> without <uri>");
        return None;
    };
    let q = el.attr("q").and_then(|q| {
        let v: f64 = xml::trim_xml(q).parse().ok()?;
        (0.0..=1.0)
            .contains(&v)
            .then(|| (v * 1000.0).round() as u16)
    });
    Some(RegContact {
        uri,
        active: el.attr("state").map(xml::trim_xml) == Some("active"),
        event: non_empty(el.attr("event")),
        expires: el
            .attr("expires")
            .and_then(|v| xml::trim_xml(v).parse().ok()),
        q,
        call_id: non_empty(el.attr("callid")),
        cseq: el.attr("cseq").and_then(|v| xml::trim_xml(v).parse().ok()),
        user_agent: non_empty(el.attr("user_agent")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTACTS: &str = r#"<?xml version="1.0"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="3" state="full">
  <registration aor="sip:bob@example.com" id="0x7f44" state="active">
    <contact id="0x1" state="active" event="registered" expires="30" callid="c1" cseq="2" q="0.5" user_agent="phone">
      <uri>sip:bob@192.0.2.1:5060</uri>
    </contact>
    <contact id="0x2" state="terminated" event="unregistered" expires="30">
      <uri>sip:bob@192.0.2.2</uri>
    </contact>
  </registration>
</reginfo>"#;

    #[test]
    fn reads_active_and_terminated_contacts_by_uri() {
        let r = parse_reginfo(TWO_CONTACTS.as_bytes()).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.state, DocState::Full);
        let reg = &r.registrations[0];
        assert_eq!(reg.aor, "sip:bob@example.com");
        assert_eq!(reg.contacts.len(), 2);
        let active: Vec<_> = reg.active_contacts().collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].uri, "sip:bob@192.0.2.1:5060");
        assert_eq!(active[0].expires, Some(30));
        assert_eq!(active[0].q, Some(500));
        assert_eq!(active[0].cseq, Some(2));
        assert_eq!(active[0].user_agent.as_deref(), Some("phone"));
        assert!(!reg.contacts[1].active);
    }

    #[test]
    fn an_empty_terminated_registration_has_no_contacts() {
        let body = r#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="6" state="full">
  <registration aor="sip:bob@example.com" id="x" state="terminated"/></reginfo>"#;
        let r = parse_reginfo(body.as_bytes()).unwrap();
        assert_eq!(r.registrations[0].state, "terminated");
        assert!(r.registrations[0].contacts.is_empty());
    }

    #[test]
    fn refuses_other_roots_and_missing_version() {
        assert!(parse_reginfo(b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>").is_err());
        assert!(
            parse_reginfo(b"<reginfo xmlns='urn:ietf:params:xml:ns:reginfo' state='full'/>")
                .is_err()
        );
        assert!(parse_reginfo(
            b"<reginfo xmlns='urn:ietf:params:xml:ns:reginfo' version='1' state='full'><registration/></reginfo>"
        )
        .is_err());
    }

    #[test]
    fn skips_contacts_without_uri() {
        let body = r#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="0" state="partial">
  <registration aor="sip:a@b" state="active"><contact state="active"/></registration></reginfo>"#;
        let r = parse_reginfo(body.as_bytes()).unwrap();
        assert_eq!(r.state, DocState::Partial);
        assert!(r.registrations[0].contacts.is_empty());
    }
}
