//! Watcher information (RFC 3858 format, RFC 3857 `*.winfo` template package).
//!
//! [`parse_watcherinfo`] / [`build_watcherinfo`] convert `application/watcherinfo+xml`
//! bodies; [`WatcherTable`] is the subscriber-side state they are applied to, with the
//! version rules of RFC 3858 §4.4 (standards.md §11, case 71).

use super::xml::{self, Element, Ns};
use super::{version_outcome, BodyError, VersionOutcome};

pub use super::DocState;

/// A `<watcherinfo>` document (RFC 3858 §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherInfo {
    /// Starts at 0, one more per NOTIFY of the subscription.
    pub version: u32,
    pub state: DocState,
    pub lists: Vec<WatcherList>,
}

/// `<watcher-list resource package>`: the watchers of one resource for one package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherList {
    pub resource: String,
    pub package: String,
    pub watchers: Vec<Watcher>,
}

/// `<watcher>`: one subscription to the resource (RFC 3858 §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    /// Identifies the subscription; partial documents update rows by it.
    pub id: String,
    pub status: WatcherStatus,
    /// The event that caused the latest status change.
    pub event: WatcherEvent,
    /// The watcher's URI (the element's content).
    pub uri: String,
    pub display_name: Option<String>,
    /// Seconds until the subscription expires.
    pub expiration: Option<u32>,
    /// Seconds the subscription has existed.
    pub duration_subscribed: Option<u32>,
    /// `xml:lang` of the display name.
    pub lang: Option<String>,
}

/// Subscription status (RFC 3857 §5.1 state machine).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatcherStatus {
    Pending,
    Active,
    Waiting,
    Terminated,
}

impl WatcherStatus {
    pub fn parse(s: &str) -> Option<WatcherStatus> {
        match xml::trim_xml(s) {
            "pending" => Some(WatcherStatus::Pending),
            "active" => Some(WatcherStatus::Active),
            "waiting" => Some(WatcherStatus::Waiting),
            "terminated" => Some(WatcherStatus::Terminated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WatcherStatus::Pending => "pending",
            WatcherStatus::Active => "active",
            WatcherStatus::Waiting => "waiting",
            WatcherStatus::Terminated => "terminated",
        }
    }
}

/// The event behind a status change (RFC 3857 §5.1); unknown tokens are kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatcherEvent {
    Subscribe,
    Approved,
    Deactivated,
    Probation,
    Rejected,
    Timeout,
    Giveup,
    Noresource,
    Other(String),
}

impl WatcherEvent {
    pub fn parse(s: &str) -> WatcherEvent {
        match xml::trim_xml(s) {
            "subscribe" => WatcherEvent::Subscribe,
            "approved" => WatcherEvent::Approved,
            "deactivated" => WatcherEvent::Deactivated,
            "probation" => WatcherEvent::Probation,
            "rejected" => WatcherEvent::Rejected,
            "timeout" => WatcherEvent::Timeout,
            "giveup" => WatcherEvent::Giveup,
            "noresource" => WatcherEvent::Noresource,
            other => WatcherEvent::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            WatcherEvent::Subscribe => "subscribe",
            WatcherEvent::Approved => "approved",
            WatcherEvent::Deactivated => "deactivated",
            WatcherEvent::Probation => "probation",
            WatcherEvent::Rejected => "rejected",
            WatcherEvent::Timeout => "timeout",
            WatcherEvent::Giveup => "giveup",
            WatcherEvent::Noresource => "noresource",
            WatcherEvent::Other(s) => s,
        }
    }
}

fn wrong(detail: impl Into<String>) -> BodyError {
    BodyError::WrongDocument {
        expected: "watcherinfo",
        detail: detail.into(),
    }
}

/// Parses an `application/watcherinfo+xml` body.
///
/// `version` and `state` are required (the table cannot apply a document without them).
/// A `<watcher>` without `id` or with an unknown `status` is skipped (logged); a missing
/// `event` reads as `Other("")`; unknown elements are ignored.
pub fn parse_watcherinfo(bytes: &[u8]) -> Result<WatcherInfo, BodyError> {
    let doc = xml::parse_document(bytes)?;
    let root = doc.root();
    if !root.is(Ns::Watcherinfo, "watcherinfo") {
        return Err(wrong(format!(
            "root element <{}> is not <watcherinfo>",
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
    let lists = root
        .children()
        .filter(|c| c.is(Ns::Watcherinfo, "watcher-list"))
        .map(parse_list)
        .collect();
    Ok(WatcherInfo {
        version,
        state,
        lists,
    })
}

fn parse_list(el: Element) -> WatcherList {
    WatcherList {
        resource: el
            .attr("resource")
            .map(xml::trim_xml)
            .unwrap_or_default()
            .to_string(),
        package: el
            .attr("package")
            .map(xml::trim_xml)
            .unwrap_or_default()
            .to_string(),
        watchers: el
            .children()
            .filter(|c| c.is(Ns::Watcherinfo, "watcher"))
            .filter_map(parse_watcher)
            .collect(),
    }
}

fn parse_watcher(el: Element) -> Option<Watcher> {
    let Some(id) = el.attr("id").map(xml::trim_xml).filter(|i| !i.is_empty()) else {
        tracing::debug!("skipping <watcher> without id");
        return None;
    };
    let Some(status) = el.attr("status").and_then(WatcherStatus::parse) else {
        tracing::debug!(id, "skipping <watcher> with a missing or unknown status");
        return None;
    };
    Some(Watcher {
        id: id.to_string(),
        status,
        event: WatcherEvent::parse(el.attr("event").unwrap_or_default()),
        uri: el.trimmed().to_string(),
        display_name: el.attr("display-name").map(str::to_string),
        expiration: el
            .attr("expiration")
            .and_then(|v| xml::trim_xml(v).parse().ok()),
        duration_subscribed: el
            .attr("duration-subscribed")
            .and_then(|v| xml::trim_xml(v).parse().ok()),
        lang: el.lang().map(str::to_string),
    })
}

/// Writes an `application/watcherinfo+xml` body (RFC 3858 §4).
pub fn build_watcherinfo(info: &WatcherInfo) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(xml::DECLARATION);
    out.push_str("<watcherinfo xmlns='");
    out.push_str(xml::ns::WATCHERINFO);
    out.push('\'');
    xml::push_attr(&mut out, "version", &info.version.to_string());
    xml::push_attr(&mut out, "state", info.state.as_str());
    out.push_str(">\n");
    for list in &info.lists {
        out.push_str("<watcher-list");
        xml::push_attr(&mut out, "resource", &list.resource);
        xml::push_attr(&mut out, "package", &list.package);
        out.push_str(">\n");
        for w in &list.watchers {
            let mut attrs: Vec<(&str, String)> = vec![
                ("id", w.id.clone()),
                ("status", w.status.as_str().to_string()),
                ("event", w.event.as_str().to_string()),
            ];
            if let Some(d) = &w.display_name {
                attrs.push(("display-name", d.clone()));
            }
            if let Some(e) = w.expiration {
                attrs.push(("expiration", e.to_string()));
            }
            if let Some(d) = w.duration_subscribed {
                attrs.push(("duration-subscribed", d.to_string()));
            }
            if let Some(l) = &w.lang {
                attrs.push(("xml:lang", l.clone()));
            }
            let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            xml::push_text_element(&mut out, "watcher", &attrs, &w.uri);
            out.push('\n');
        }
        out.push_str("</watcher-list>\n");
    }
    out.push_str("</watcherinfo>\n");
    out
}

/// A watcherinfo subscriber's view of the watchers, updated by each NOTIFY body
/// (RFC 3858 §4.4). Create one per subscription dialog: versions restart with a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatcherTable {
    version: Option<u32>,
    lists: Vec<WatcherList>,
}

impl WatcherTable {
    pub fn new() -> WatcherTable {
        WatcherTable::default()
    }

    /// Applies a document by the version rules (standards.md §11):
    /// version = local + 1 → applied; > local + 1 → applied and
    /// [`VersionOutcome::AppliedNeedsResync`] (unless the document is full state);
    /// ≤ local → [`VersionOutcome::Discarded`], table untouched.
    ///
    /// Full state replaces the table; partial state replaces or adds rows by watcher `id`
    /// within the list of the same resource and package. Terminated rows are dropped once
    /// applied: the caller sees them in `doc` itself.
    pub fn apply(&mut self, doc: &WatcherInfo) -> VersionOutcome {
        let outcome = version_outcome(self.version, doc.version, doc.state);
        if outcome == VersionOutcome::Discarded {
            tracing::debug!(
                version = doc.version,
                local = ?self.version,
                "discarding stale watcherinfo document"
            );
            return outcome;
        }
        self.version = Some(doc.version);
        if doc.state == DocState::Full {
            self.lists.clear();
        }
        for list in &doc.lists {
            let idx = match self
                .lists
                .iter()
                .position(|l| l.resource == list.resource && l.package == list.package)
            {
                Some(i) => i,
                None => {
                    self.lists.push(WatcherList {
                        resource: list.resource.clone(),
                        package: list.package.clone(),
                        watchers: Vec::new(),
                    });
                    self.lists.len() - 1
                }
            };
            let rows = &mut self.lists[idx].watchers;
            for w in &list.watchers {
                let existing = rows.iter().position(|r| r.id == w.id);
                match (existing, w.status) {
                    (Some(i), WatcherStatus::Terminated) => {
                        rows.remove(i);
                    }
                    (None, WatcherStatus::Terminated) => {}
                    (Some(i), _) => rows[i] = w.clone(),
                    (None, _) => rows.push(w.clone()),
                }
            }
        }
        self.lists.retain(|l| !l.watchers.is_empty());
        outcome
    }

    /// The last version applied; `None` before the first document.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The current (non-terminated) watchers, grouped by list.
    pub fn lists(&self) -> &[WatcherList] {
        &self.lists
    }

    /// The watcher row with this id, in any list.
    pub fn watcher(&self, id: &str) -> Option<&Watcher> {
        self.lists
            .iter()
            .flat_map(|l| l.watchers.iter())
            .find(|w| w.id == id)
    }

    /// Forgets everything (a new subscription starts again at any version).
    pub fn reset(&mut self) {
        *self = WatcherTable::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_EXAMPLE: &str = r#"<?xml version="1.0"?>
<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">
  <watcher-list resource="sip:professor@example.net" package="presence">
    <watcher status="active" id="8ajksjda7s" duration-subscribed="509" event="approved">sip:userA@example.net</watcher>
    <watcher status="pending" id="hh8juja87s997-ass7" display-name="Mr. Subscriber" event="subscribe">sip:userB@example.org</watcher>
  </watcher-list>
</watcherinfo>"#;

    fn partial(version: u32, watcher: &str) -> WatcherInfo {
        let body = format!(
            "<watcherinfo xmlns='urn:ietf:params:xml:ns:watcherinfo' version='{version}' state='partial'>\
             <watcher-list resource='sip:anna@xmpp.example' package='presence'>{watcher}</watcher-list></watcherinfo>"
        );
        parse_watcherinfo(body.as_bytes()).expect("valid watcherinfo")
    }

    fn full(version: u32, watcher: &str) -> WatcherInfo {
        let mut doc = partial(version, watcher);
        doc.state = DocState::Full;
        doc
    }

    const CARL_PENDING: &str =
        "<watcher id='w1' status='pending' event='subscribe'>sip:carl@sip.example</watcher>";
    const CARL_ACTIVE: &str =
        "<watcher id='w1' status='active' event='approved'>sip:carl@sip.example</watcher>";
    const CARL_TERMINATED: &str =
        "<watcher id='w1' status='terminated' event='rejected'>sip:carl@sip.example</watcher>";
    const DORA_PENDING: &str =
        "<watcher id='w2' status='pending' event='subscribe'>sip:dora@sip.example</watcher>";

    #[test]
    fn rfc3858_example_parses() {
        let doc = parse_watcherinfo(RFC_EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(doc.version, 0);
        assert_eq!(doc.state, DocState::Full);
        assert_eq!(doc.lists[0].resource, "sip:professor@example.net");
        assert_eq!(doc.lists[0].package, "presence");
        let w = &doc.lists[0].watchers;
        assert_eq!(w[0].status, WatcherStatus::Active);
        assert_eq!(w[0].event, WatcherEvent::Approved);
        assert_eq!(w[0].duration_subscribed, Some(509));
        assert_eq!(w[0].uri, "sip:userA@example.net");
        assert_eq!(w[1].display_name.as_deref(), Some("Mr. Subscriber"));
        assert_eq!(w[1].status, WatcherStatus::Pending);
    }

    /// standards.md §16 case 71.
    #[test]
    fn partial_pending_subscribe_watcher_adds_a_row() {
        let mut table = WatcherTable::new();
        table.apply(&full(0, DORA_PENDING));
        assert_eq!(
            table.apply(&partial(1, CARL_PENDING)),
            VersionOutcome::Applied
        );
        let row = table.watcher("w1").expect("row for w1");
        assert_eq!(row.status, WatcherStatus::Pending);
        assert_eq!(row.event, WatcherEvent::Subscribe);
        assert_eq!(row.uri, "sip:carl@sip.example");
        assert!(table.watcher("w2").is_some(), "partial keeps other rows");
    }

    /// standards.md §16 case 71.
    #[test]
    fn partial_document_updates_an_existing_row_by_id() {
        let mut table = WatcherTable::new();
        table.apply(&full(0, CARL_PENDING));
        table.apply(&partial(1, CARL_ACTIVE));
        assert_eq!(
            table.watcher("w1").map(|w| w.status),
            Some(WatcherStatus::Active)
        );
        assert_eq!(table.lists()[0].watchers.len(), 1);
    }

    /// standards.md §16 case 71.
    #[test]
    fn terminated_watcher_row_is_dropped() {
        let mut table = WatcherTable::new();
        table.apply(&full(0, CARL_PENDING));
        table.apply(&partial(1, CARL_TERMINATED));
        assert_eq!(table.watcher("w1"), None);
    }

    #[test]
    fn full_document_replaces_the_table() {
        let mut table = WatcherTable::new();
        table.apply(&full(0, CARL_PENDING));
        table.apply(&full(1, DORA_PENDING));
        assert_eq!(table.watcher("w1"), None);
        assert!(table.watcher("w2").is_some());
    }

    #[test]
    fn version_gap_is_applied_and_asks_for_resync() {
        let mut table = WatcherTable::new();
        table.apply(&full(3, DORA_PENDING));
        assert_eq!(
            table.apply(&partial(5, CARL_PENDING)),
            VersionOutcome::AppliedNeedsResync
        );
        assert!(table.watcher("w1").is_some());
        assert_eq!(table.version(), Some(5));
    }

    #[test]
    fn older_version_is_discarded() {
        let mut table = WatcherTable::new();
        table.apply(&full(3, DORA_PENDING));
        assert_eq!(
            table.apply(&partial(2, CARL_PENDING)),
            VersionOutcome::Discarded
        );
        assert_eq!(table.watcher("w1"), None);
        assert_eq!(table.version(), Some(3));
    }

    #[test]
    fn repeated_version_is_discarded() {
        let mut table = WatcherTable::new();
        table.apply(&full(3, DORA_PENDING));
        assert_eq!(
            table.apply(&partial(3, CARL_PENDING)),
            VersionOutcome::Discarded
        );
    }

    #[test]
    fn first_partial_document_asks_for_resync() {
        let mut table = WatcherTable::new();
        assert_eq!(
            table.apply(&partial(7, CARL_PENDING)),
            VersionOutcome::AppliedNeedsResync
        );
    }

    #[test]
    fn full_document_after_a_gap_needs_no_resync() {
        let mut table = WatcherTable::new();
        table.apply(&full(1, DORA_PENDING));
        assert_eq!(table.apply(&full(9, CARL_PENDING)), VersionOutcome::Applied);
    }

    #[test]
    fn version_at_u32_max_does_not_overflow() {
        let mut table = WatcherTable::new();
        table.apply(&full(u32::MAX, DORA_PENDING));
        assert_eq!(
            table.apply(&partial(0, CARL_PENDING)),
            VersionOutcome::Discarded
        );
    }

    #[test]
    fn missing_version_is_wrong_document() {
        let err = parse_watcherinfo(
            b"<watcherinfo xmlns='urn:ietf:params:xml:ns:watcherinfo' state='full'/>",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            BodyError::WrongDocument {
                expected: "watcherinfo",
                ..
            }
        ));
    }

    #[test]
    fn watcher_with_unknown_status_is_skipped() {
        let doc = partial(
            1,
            "<watcher id='w9' status='bogus' event='subscribe'>sip:x@y</watcher>",
        );
        assert!(doc.lists[0].watchers.is_empty());
    }

    #[test]
    fn unknown_event_is_kept_by_name() {
        let doc = partial(
            1,
            "<watcher id='w9' status='active' event='magic'>sip:x@y</watcher>",
        );
        assert_eq!(
            doc.lists[0].watchers[0].event,
            WatcherEvent::Other("magic".into())
        );
    }

    #[test]
    fn build_round_trips_the_rfc_example() {
        let doc = parse_watcherinfo(RFC_EXAMPLE.as_bytes()).expect("valid");
        let xml = build_watcherinfo(&doc);
        assert!(xml.starts_with(xml::DECLARATION));
        assert_eq!(parse_watcherinfo(xml.as_bytes()).expect("rebuilt"), doc);
    }
}
