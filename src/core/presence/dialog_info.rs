//! Dialog state (RFC 4235 `application/dialog-info+xml`), including the BLA shared-line
//! `x-line-id` target parameter (draft-anil-sipping-bla-03).
//!
//! Parsing is lenient where RFC 4235's own examples deviate from its schema
//! (standards.md §12.1): `notify-state=` is read when `state=` is absent, `entity` may be
//! missing, `<state reason=..>` is read as `event`, and a target `<param>` may carry its
//! value in `pvalue` (the BLA draft) as well as `pval` (the schema, case 70). Building
//! always follows the schema.

use super::xml::{self, Element, Ns};
use super::{version_outcome, BodyError, VersionOutcome};

pub use super::DocState;

/// A `<dialog-info>` document (RFC 4235 §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogInfo {
    pub version: u32,
    pub state: DocState,
    /// The AOR whose dialogs are reported (empty when a lenient body omitted it).
    pub entity: String,
    pub dialogs: Vec<Dialog>,
}

/// `<dialog>`: one dialog (or early dialog) of the entity (RFC 4235 §4.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    /// Rows of a partial document are matched by it.
    pub id: String,
    pub call_id: Option<String>,
    pub local_tag: Option<String>,
    pub remote_tag: Option<String>,
    pub direction: Option<Direction>,
    pub state: DialogState,
    /// Why the state was entered (`<state event=..>`), mostly for `terminated`.
    pub state_event: Option<StateEvent>,
    /// The response code that caused the transition (`<state code=..>`, 100..=699).
    pub state_code: Option<u16>,
    /// `<duration>`, seconds.
    pub duration: Option<u32>,
    pub local: Option<Participant>,
    pub remote: Option<Participant>,
}

/// `<local>` / `<remote>` (RFC 4235 §4.1.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Participant {
    /// `<identity>` content (a URI).
    pub identity: Option<String>,
    /// `<identity display=..>`.
    pub identity_display: Option<String>,
    /// `<target uri=..>`.
    pub target_uri: Option<String>,
    /// `<target><param pname pval/></target>`, in document order.
    pub params: Vec<(String, String)>,
}

impl Participant {
    /// The value of the first target parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The BLA line number (`x-line-id` target parameter, draft-anil-sipping-bla-03 §6).
    pub fn line_id(&self) -> Option<u32> {
        self.param("x-line-id").and_then(|v| v.trim().parse().ok())
    }
}

/// `initiator` (we sent the INVITE) or `recipient`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Initiator,
    Recipient,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        match xml::trim_xml(s) {
            "initiator" => Some(Direction::Initiator),
            "recipient" => Some(Direction::Recipient),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Initiator => "initiator",
            Direction::Recipient => "recipient",
        }
    }
}

/// Dialog FSM states (RFC 4235 §3.7.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DialogState {
    Trying,
    Proceeding,
    Early,
    Confirmed,
    Terminated,
}

impl DialogState {
    pub fn parse(s: &str) -> Option<DialogState> {
        match xml::trim_xml(s) {
            "trying" => Some(DialogState::Trying),
            "proceeding" => Some(DialogState::Proceeding),
            "early" => Some(DialogState::Early),
            "confirmed" => Some(DialogState::Confirmed),
            "terminated" => Some(DialogState::Terminated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Proceeding => "proceeding",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }
}

/// `<state event=..>` values (RFC 4235 §4.1.2); unknown tokens are kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StateEvent {
    Cancelled,
    Rejected,
    Replaced,
    LocalBye,
    RemoteBye,
    Error,
    Timeout,
    Other(String),
}

impl StateEvent {
    pub fn parse(s: &str) -> StateEvent {
        match xml::trim_xml(s) {
            "cancelled" => StateEvent::Cancelled,
            "rejected" => StateEvent::Rejected,
            "replaced" => StateEvent::Replaced,
            "local-bye" => StateEvent::LocalBye,
            "remote-bye" => StateEvent::RemoteBye,
            "error" => StateEvent::Error,
            "timeout" => StateEvent::Timeout,
            other => StateEvent::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StateEvent::Cancelled => "cancelled",
            StateEvent::Rejected => "rejected",
            StateEvent::Replaced => "replaced",
            StateEvent::LocalBye => "local-bye",
            StateEvent::RemoteBye => "remote-bye",
            StateEvent::Error => "error",
            StateEvent::Timeout => "timeout",
            StateEvent::Other(s) => s,
        }
    }
}

fn wrong(detail: impl Into<String>) -> BodyError {
    BodyError::WrongDocument {
        expected: "dialog-info",
        detail: detail.into(),
    }
}

/// Parses an `application/dialog-info+xml` body.
///
/// `version` and a state (`state`, else `notify-state`) are required. A `<dialog>` without
/// `id` or without a valid `<state>` is skipped (logged); unknown elements are ignored.
pub fn parse_dialog_info(bytes: &[u8]) -> Result<DialogInfo, BodyError> {
    let doc = xml::parse_document(bytes)?;
    let root = doc.root();
    if !root.is(Ns::DialogInfo, "dialog-info") {
        return Err(wrong(format!(
            "root element <{}> is not <dialog-info>",
            root.name()
        )));
    }
    let version = root
        .attr("version")
        .and_then(|v| xml::trim_xml(v).parse::<u32>().ok())
        .ok_or_else(|| wrong("missing or invalid version"))?;
    let state = root
        .attr("state")
        .or_else(|| root.attr("notify-state"))
        .and_then(DocState::parse)
        .ok_or_else(|| wrong("missing or invalid state"))?;
    let dialogs = root
        .children()
        .filter(|c| c.is(Ns::DialogInfo, "dialog"))
        .filter_map(parse_dialog)
        .collect();
    Ok(DialogInfo {
        version,
        state,
        entity: root
            .attr("entity")
            .map(xml::trim_xml)
            .unwrap_or_default()
            .to_string(),
        dialogs,
    })
}

fn opt_attr(el: Element, name: &str) -> Option<String> {
    el.attr(name).map(str::to_string)
}

fn child<'d, 'a>(el: Element<'d, 'a>, name: &str) -> Option<Element<'d, 'a>> {
    el.children().find(|c| c.is(Ns::DialogInfo, name))
}

fn parse_dialog(el: Element) -> Option<Dialog> {
    let Some(id) = el.attr("id").map(xml::trim_xml).filter(|i| !i.is_empty()) else {
        tracing::debug!("skipping <dialog> without id");
        return None;
    };
    let state_el = child(el, "state");
    let Some(state) = state_el.and_then(|s| DialogState::parse(s.text())) else {
        tracing::debug!(id, "skipping <dialog> without a valid <state>");
        return None;
    };
    let state_el = state_el?;
    Some(Dialog {
        id: id.to_string(),
        call_id: opt_attr(el, "call-id"),
        local_tag: opt_attr(el, "local-tag"),
        remote_tag: opt_attr(el, "remote-tag"),
        direction: el.attr("direction").and_then(Direction::parse),
        state,
        state_event: state_el
            .attr("event")
            .or_else(|| state_el.attr("reason"))
            .map(StateEvent::parse),
        state_code: state_el
            .attr("code")
            .and_then(|c| xml::trim_xml(c).parse::<u16>().ok())
            .filter(|c| (100..=699).contains(c)),
        duration: child(el, "duration").and_then(|d| d.trimmed().parse().ok()),
        local: child(el, "local").map(parse_participant),
        remote: child(el, "remote").map(parse_participant),
    })
}

fn parse_participant(el: Element) -> Participant {
    let mut p = Participant::default();
    if let Some(identity) = child(el, "identity") {
        p.identity = identity.value();
        p.identity_display = opt_attr(identity, "display");
    }
    if let Some(target) = child(el, "target") {
        p.target_uri = target.attr("uri").map(|u| xml::trim_xml(u).to_string());
        p.params = target
            .children()
            .filter(|c| c.is(Ns::DialogInfo, "param"))
            .filter_map(|param| {
                let name = param.attr("pname")?;
                // Schema: pval. BLA draft examples: pvalue (case 70).
                let value = param.attr("pval").or_else(|| param.attr("pvalue"))?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
    }
    p
}

/// Writes an `application/dialog-info+xml` body per the RFC 4235 schema (`state`, not
/// `notify-state`; `pval`, not `pvalue`).
pub fn build_dialog_info(info: &DialogInfo) -> String {
    let mut out = String::with_capacity(256 + 384 * info.dialogs.len());
    out.push_str(xml::DECLARATION);
    out.push_str("<dialog-info xmlns='");
    out.push_str(xml::ns::DIALOG_INFO);
    out.push('\'');
    xml::push_attr(&mut out, "version", &info.version.to_string());
    xml::push_attr(&mut out, "state", info.state.as_str());
    xml::push_attr(&mut out, "entity", &info.entity);
    out.push_str(">\n");
    for d in &info.dialogs {
        write_dialog(&mut out, d);
    }
    out.push_str("</dialog-info>\n");
    out
}

fn write_dialog(out: &mut String, d: &Dialog) {
    out.push_str("<dialog");
    xml::push_attr(out, "id", &d.id);
    for (name, value) in [
        ("call-id", &d.call_id),
        ("local-tag", &d.local_tag),
        ("remote-tag", &d.remote_tag),
    ] {
        if let Some(v) = value {
            xml::push_attr(out, name, v);
        }
    }
    if let Some(dir) = d.direction {
        xml::push_attr(out, "direction", dir.as_str());
    }
    out.push_str(">\n<state");
    if let Some(ev) = &d.state_event {
        xml::push_attr(out, "event", ev.as_str());
    }
    if let Some(code) = d.state_code {
        xml::push_attr(out, "code", &code.to_string());
    }
    out.push('>');
    out.push_str(d.state.as_str());
    out.push_str("</state>\n");
    if let Some(duration) = d.duration {
        xml::push_text_element(out, "duration", &[], &duration.to_string());
        out.push('\n');
    }
    if let Some(p) = &d.local {
        write_participant(out, "local", p);
    }
    if let Some(p) = &d.remote {
        write_participant(out, "remote", p);
    }
    out.push_str("</dialog>\n");
}

fn write_participant(out: &mut String, name: &str, p: &Participant) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    if let Some(identity) = &p.identity {
        match &p.identity_display {
            Some(display) => {
                xml::push_text_element(out, "identity", &[("display", display)], identity)
            }
            None => xml::push_text_element(out, "identity", &[], identity),
        }
    }
    // <target> requires a uri; parameters without one cannot be written.
    if let Some(uri) = &p.target_uri {
        out.push_str("<target");
        xml::push_attr(out, "uri", uri);
        out.push('>');
        for (pname, pval) in &p.params {
            out.push_str("<param");
            xml::push_attr(out, "pname", pname);
            xml::push_attr(out, "pval", pval);
            out.push_str("/>");
        }
        out.push_str("</target>");
    }
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// A dialog-event subscriber's view of the entity's dialogs (RFC 4235 §4.1), keyed by
/// dialog `id`. Create one per subscription dialog: versions restart with a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialogTable {
    version: Option<u32>,
    entity: String,
    dialogs: Vec<Dialog>,
}

impl DialogTable {
    pub fn new() -> DialogTable {
        DialogTable::default()
    }

    /// Applies a document by the version rules shared with watcherinfo (standards.md §11,
    /// §12.1; cases 68, 69): version = local + 1 → applied; > local + 1 → applied and
    /// [`VersionOutcome::AppliedNeedsResync`] (unless full state); ≤ local → discarded.
    /// Full state replaces the table; partial state replaces or adds rows by `id`.
    /// Terminated dialogs are removed once applied.
    pub fn apply(&mut self, doc: &DialogInfo) -> VersionOutcome {
        let outcome = version_outcome(self.version, doc.version, doc.state);
        if outcome == VersionOutcome::Discarded {
            tracing::debug!(
                version = doc.version,
                local = ?self.version,
                "discarding stale dialog-info document"
            );
            return outcome;
        }
        self.version = Some(doc.version);
        if !doc.entity.is_empty() {
            self.entity = doc.entity.clone();
        }
        if doc.state == DocState::Full {
            self.dialogs.clear();
        }
        for d in &doc.dialogs {
            let existing = self.dialogs.iter().position(|r| r.id == d.id);
            match (existing, d.state) {
                (Some(i), DialogState::Terminated) => {
                    self.dialogs.remove(i);
                }
                (None, DialogState::Terminated) => {}
                (Some(i), _) => self.dialogs[i] = d.clone(),
                (None, _) => self.dialogs.push(d.clone()),
            }
        }
        outcome
    }

    /// The last version applied; `None` before the first document.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The entity of the latest document that named one.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The live (non-terminated) dialogs, in the order first seen.
    pub fn dialogs(&self) -> &[Dialog] {
        &self.dialogs
    }

    pub fn dialog(&self, id: &str) -> Option<&Dialog> {
        self.dialogs.iter().find(|d| d.id == id)
    }

    /// Forgets everything (a new subscription starts again at any version).
    pub fn reset(&mut self) {
        *self = DialogTable::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4235 §6 style example, with the RFC's own `notify-state` and no `entity`.
    const RFC_STYLE: &str = r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" notify-state="full">
  <dialog id="as7d900as8" call-id="a84b4c76e66710" local-tag="1928301774" direction="initiator">
    <state reason="rejected">early</state>
    <duration>274</duration>
    <local>
      <identity display="Alice">sip:alice@example.com</identity>
      <target uri="sip:alice@pc33.example.com">
        <param pname="+sip.rendering" pval="yes"/>
      </target>
    </local>
    <remote><identity>sip:bob@example.org</identity></remote>
  </dialog>
</dialog-info>"#;

    fn doc(version: u32, state: &str, dialogs: &str) -> DialogInfo {
        let body = format!(
            "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='{version}' \
             state='{state}' entity='sip:bob@sip.example'>{dialogs}</dialog-info>"
        );
        parse_dialog_info(body.as_bytes()).expect("valid dialog-info")
    }

    const D1_CONFIRMED: &str = "<dialog id='d1'><state>confirmed</state></dialog>";
    const D2_EARLY: &str = "<dialog id='d2' direction='recipient'><state>early</state></dialog>";

    #[test]
    fn rfc_example_with_notify_state_and_no_entity_parses() {
        let info = parse_dialog_info(RFC_STYLE.as_bytes()).expect("lenient parse");
        assert_eq!(info.state, DocState::Full);
        assert_eq!(info.entity, "");
        let d = &info.dialogs[0];
        assert_eq!(d.id, "as7d900as8");
        assert_eq!(d.call_id.as_deref(), Some("a84b4c76e66710"));
        assert_eq!(d.local_tag.as_deref(), Some("1928301774"));
        assert_eq!(d.direction, Some(Direction::Initiator));
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(d.state_event, Some(StateEvent::Rejected));
        assert_eq!(d.duration, Some(274));
        let local = d.local.as_ref().expect("local");
        assert_eq!(local.identity.as_deref(), Some("sip:alice@example.com"));
        assert_eq!(local.identity_display.as_deref(), Some("Alice"));
        assert_eq!(
            local.target_uri.as_deref(),
            Some("sip:alice@pc33.example.com")
        );
        assert_eq!(local.param("+sip.rendering"), Some("yes"));
    }

    /// standards.md §16 case 70.
    #[test]
    fn param_pvalue_reads_line_zero() {
        let info = doc(
            1,
            "full",
            "<dialog id='d'><state>trying</state><local><target uri='sip:a@b'>\
             <param pname='x-line-id' pvalue='0'/></target></local></dialog>",
        );
        assert_eq!(
            info.dialogs[0]
                .local
                .as_ref()
                .and_then(Participant::line_id),
            Some(0)
        );
    }

    /// standards.md §16 case 70.
    #[test]
    fn param_pval_reads_line_zero() {
        let info = doc(
            1,
            "full",
            "<dialog id='d'><state>trying</state><local><target uri='sip:a@b'>\
             <param pname='x-line-id' pval='0'/></target></local></dialog>",
        );
        assert_eq!(
            info.dialogs[0]
                .local
                .as_ref()
                .and_then(Participant::line_id),
            Some(0)
        );
    }

    #[test]
    fn params_are_written_as_pval() {
        let info = doc(
            1,
            "full",
            "<dialog id='d'><state>trying</state><local><target uri='sip:a@b'>\
             <param pname='x-line-id' pvalue='0'/></target></local></dialog>",
        );
        let xml = build_dialog_info(&info);
        assert!(xml.contains("<param pname='x-line-id' pval='0'/>"), "{xml}");
        assert!(!xml.contains("pvalue"));
    }

    /// standards.md §16 case 68.
    #[test]
    fn partial_with_version_gap_is_processed_and_asks_for_resync() {
        let mut table = DialogTable::new();
        table.apply(&doc(3, "full", D1_CONFIRMED));
        assert_eq!(
            table.apply(&doc(5, "partial", D2_EARLY)),
            VersionOutcome::AppliedNeedsResync
        );
        assert!(table.dialog("d2").is_some());
        assert!(table.dialog("d1").is_some());
    }

    /// standards.md §16 case 68.
    #[test]
    fn older_version_is_discarded() {
        let mut table = DialogTable::new();
        table.apply(&doc(3, "full", D1_CONFIRMED));
        assert_eq!(
            table.apply(&doc(2, "partial", D2_EARLY)),
            VersionOutcome::Discarded
        );
        assert!(table.dialog("d2").is_none());
    }

    #[test]
    fn next_version_is_applied() {
        let mut table = DialogTable::new();
        table.apply(&doc(3, "full", D1_CONFIRMED));
        assert_eq!(
            table.apply(&doc(4, "partial", D2_EARLY)),
            VersionOutcome::Applied
        );
        assert_eq!(table.version(), Some(4));
    }

    /// standards.md §16 case 69.
    #[test]
    fn full_document_replaces_the_table() {
        let mut table = DialogTable::new();
        table.apply(&doc(3, "full", D1_CONFIRMED));
        table.apply(&doc(4, "full", D2_EARLY));
        assert!(table.dialog("d1").is_none());
        assert!(table.dialog("d2").is_some());
    }

    /// standards.md §16 case 69.
    #[test]
    fn rejected_486_terminated_row_is_removed() {
        let mut table = DialogTable::new();
        table.apply(&doc(3, "full", D1_CONFIRMED));
        let update = doc(
            4,
            "partial",
            "<dialog id='d1'><state event='rejected' code='486'>terminated</state></dialog>",
        );
        assert_eq!(update.dialogs[0].state_event, Some(StateEvent::Rejected));
        assert_eq!(update.dialogs[0].state_code, Some(486));
        table.apply(&update);
        assert!(table.dialog("d1").is_none());
    }

    #[test]
    fn out_of_range_state_code_is_ignored() {
        let info = doc(
            1,
            "full",
            "<dialog id='d'><state code='99'>trying</state></dialog>",
        );
        assert_eq!(info.dialogs[0].state_code, None);
    }

    #[test]
    fn dialog_without_state_is_skipped() {
        let info = doc(1, "full", "<dialog id='d'/>");
        assert!(info.dialogs.is_empty());
    }

    #[test]
    fn missing_state_attribute_is_wrong_document() {
        let err = parse_dialog_info(
            b"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1'/>",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            BodyError::WrongDocument {
                expected: "dialog-info",
                ..
            }
        ));
    }

    #[test]
    fn build_follows_the_schema_and_round_trips() {
        let info = parse_dialog_info(RFC_STYLE.as_bytes()).expect("lenient parse");
        let xml = build_dialog_info(&info);
        assert!(xml.contains("state='full'"), "{xml}");
        assert!(!xml.contains("notify-state"));
        assert!(xml.contains("event='rejected'"));
        assert_eq!(parse_dialog_info(xml.as_bytes()).expect("rebuilt"), info);
    }
}
