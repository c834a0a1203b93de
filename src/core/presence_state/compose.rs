//! Composition: one document for watchers out of the live publications of one presentity
//! and event (RFC 3903 §4: the ESC "composes" event state; the policy is ours, RFC 3903
//! leaves it to the event package, RFC 3856 §6.1 / RFC 4479 §3 for presence).
//!
//! The inputs are the publications' documents, **newest first**, "newest" meaning the
//! latest successful PUBLISH that set the body (a refresh without a body does not make a
//! publication newer). Everything works on the XML tree ([`super::tree`]), never through
//! the neutral presence model, so unknown extensions survive.
//!
//! # PIDF (`application/pidf+xml`, RFC 3863, RFC 4479)
//!
//! * Root: `<presence xmlns='urn:ietf:params:xml:ns:pidf' entity=PRESENTITY>`, after the
//!   XML declaration. Children in schema order: tuples, notes, then the extensions
//!   (person, devices, other elements).
//! * `<tuple>`: every tuple of every publication, publications newest first and each
//!   publication's tuples in document order. The same tuple `id` in two publications: only
//!   the newest publication's tuple is kept (RFC 3863 §4.1.2 ids are unique per
//!   presentity). A tuple without `id` (invalid, but read tolerantly) is always kept.
//! * presence-level `<note>`: all of them from the newest publication that has at least
//!   one (several notes of one publication are usually languages of one text).
//! * `<dm:person>` (RFC 4479 §3.2): all persons merge into one. Its child elements are
//!   grouped by (namespace URI, local name); each group comes whole from the newest
//!   publication that has a person child with that key (so `rpid:activities` of an old
//!   publication do not survive a newer one's, while its `rpid:mood` does if the newer has
//!   none). Groups are written in order of first appearance, newest publication first.
//!   The person's `id` and other attributes come from the newest publication with a person.
//! * `<dm:device>` (RFC 4479 §3.3): kept, deduplicated by `id`, newest first (no `id`:
//!   kept).
//! * Any other presence-level element (unknown extension): grouped by (namespace, local
//!   name) like person children; each group from the newest publication that has it.
//! * Namespaces: every element keeps the namespace URI and prefix it had in its source; a
//!   prefix is declared on the output root when all top-level fragments agree on its URI,
//!   and otherwise on the element that needs it ([`super::tree::write_document`]). So a
//!   fragment whose prefixes were declared on its source's root stays correct.
//! * No publication: no document (`None`); the caller answers as for a presentity
//!   without state.
//! * **Derived tuples** (publications of the `usrloc` module, one tuple per registered
//!   contact): a derived tuple whose `<contact>` is equivalent (RFC 3261 §19.1.4) to the
//!   contact of a tuple in any other publication is left out, so a phone that publishes
//!   its own presence wins over what its REGISTER implies for that device
//!   ([`drop_derived_tuples`]); other devices of the AOR keep their derived tuples.
//!
//! # Dialog-info (`application/dialog-info+xml`, RFC 4235 §4)
//!
//! * Root: `<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version=V
//!   state='full' entity=PRESENTITY>`. `version` is the caller's: RFC 4235 §4.1 versions
//!   count per subscription. A published document is always taken as that publication's
//!   full state (its own `version` and `state` are ignored).
//! * `<dialog>`: every dialog of every publication, newest publication first, document
//!   order within one; the same `id` twice: the newest publication's (within one
//!   publication, the first). A dialog that `parse_dialog_info` would skip (no `id`, no
//!   valid `<state>`) is left out. The dialog elements are copied whole, so
//!   `<route-set>`, `<session-description>` and extensions survive.
//! * No publication: an empty full document (no dialogs), still stamped with `version`.

use std::collections::HashSet;

use crate::core::presence::dialog_info::{parse_dialog_info, DialogState};
use crate::core::presence::pidf::parse_pidf;

use super::event::EventKey;
use super::tree::{self, Elem, Node};

pub(crate) const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
pub(crate) const NS_DM: &str = "urn:ietf:params:xml:ns:pidf:data-model";
pub(crate) const NS_DIALOG_INFO: &str = "urn:ietf:params:xml:ns:dialog-info";

/// Which document an event composes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum DocKind {
    Pidf,
    DialogInfo,
}

impl DocKind {
    /// The kind for an event this service supports (`presence`, `dialog`, `dialog;sla`).
    pub fn of(event: &EventKey) -> Option<DocKind> {
        match event.as_str() {
            "presence" => Some(DocKind::Pidf),
            "dialog" | "dialog;sla" => Some(DocKind::DialogInfo),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            DocKind::Pidf => crate::core::presence::PIDF,
            DocKind::DialogInfo => crate::core::presence::DIALOG_INFO,
        }
    }
}

/// Validates a published body with the shared parsers and reads it into a tree.
/// Errors carry a reason phrase for the 400.
pub(crate) fn read_body(kind: DocKind, bytes: &[u8]) -> Result<Elem, String> {
    match kind {
        DocKind::Pidf => parse_pidf(bytes).map(|_| ()),
        DocKind::DialogInfo => parse_dialog_info(bytes).map(|_| ()),
    }
    .map_err(|e| e.to_string())?;
    tree::parse(bytes).ok_or_else(|| "body is not well-formed XML".to_string())
}

/// The composed document (see the module documentation), `None` for a PIDF without
/// publications.
pub(crate) fn compose(
    kind: DocKind,
    presentity: &str,
    version: u32,
    newest_first: &[&Elem],
) -> Option<String> {
    match kind {
        DocKind::Pidf => compose_pidf(presentity, newest_first),
        DocKind::DialogInfo => Some(compose_dialog_info(presentity, version, newest_first)),
    }
}

/// The composition of raw bodies, newest first, for an event this service supports:
/// bodies that do not validate are skipped. This is the same function the service uses
/// on its live publications; it exists so that tests (and tools) can compute the
/// expected document from their own model of what is live.
pub fn compose_bodies(
    event: &EventKey,
    presentity: &str,
    version: u32,
    newest_first: &[&[u8]],
) -> Option<Vec<u8>> {
    let kind = DocKind::of(event)?;
    let trees: Vec<Elem> = newest_first
        .iter()
        .filter_map(|b| read_body(kind, b).ok())
        .collect();
    let refs: Vec<&Elem> = trees.iter().collect();
    compose(kind, presentity, version, &refs).map(String::into_bytes)
}

/// `doc` (a dialog-info document this module composed) with its root `version` set to
/// `version` (RFC 4235 §4.1: the version counts per subscription, so one composition can
/// serve every watcher of a presentity). `None` when `doc` has no such root attribute.
pub fn stamp_dialog_info_version(doc: &[u8], version: u32) -> Option<Vec<u8>> {
    let root = memchr::memmem::find(doc, b"<dialog-info")?;
    let tag_end = root + memchr::memchr(b'>', &doc[root..])?;
    let tag = &doc[root..tag_end];
    let attr = memchr::memmem::find(tag, b" version=")? + b" version=".len();
    let quote = *tag.get(attr)?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    let value_start = root + attr + 1;
    let value_end = value_start + memchr::memchr(quote, &doc[value_start..tag_end])?;
    let mut out = Vec::with_capacity(doc.len() + 10);
    out.extend_from_slice(&doc[..value_start]);
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(&doc[value_end..]);
    Some(out)
}

type Key = (String, String);

fn key(e: &Elem) -> Key {
    (e.name.ns.clone(), e.name.local.clone())
}

/// Adds one publication's groups to `merged`: keys already present come from a newer
/// publication and are left alone.
fn merge_groups(merged: &mut Vec<(Key, Vec<Elem>)>, this_pub: Vec<(Key, Vec<Elem>)>) {
    for (k, els) in this_pub {
        if !merged.iter().any(|(m, _)| *m == k) {
            merged.push((k, els));
        }
    }
}

fn group_into(groups: &mut Vec<(Key, Vec<Elem>)>, e: &Elem) {
    let k = key(e);
    match groups.iter_mut().find(|(g, _)| *g == k) {
        Some((_, v)) => v.push(e.clone()),
        None => groups.push((k, vec![e.clone()])),
    }
}

fn compose_pidf(presentity: &str, newest_first: &[&Elem]) -> Option<String> {
    if newest_first.is_empty() {
        return None;
    }
    let mut tuples: Vec<Elem> = Vec::new();
    let mut tuple_ids: HashSet<String> = HashSet::new();
    let mut notes: Option<Vec<Elem>> = None;
    let mut person_shell: Option<Elem> = None;
    let mut person_groups: Vec<(Key, Vec<Elem>)> = Vec::new();
    let mut devices: Vec<Elem> = Vec::new();
    let mut device_ids: HashSet<String> = HashSet::new();
    let mut other_groups: Vec<(Key, Vec<Elem>)> = Vec::new();

    for doc in newest_first {
        let mut pub_notes = Vec::new();
        let mut pub_person = Vec::new();
        let mut pub_other = Vec::new();
        for child in doc.elements() {
            if child.name.is(NS_PIDF, "tuple") {
                let fresh = match child.id() {
                    Some(id) if !id.is_empty() => tuple_ids.insert(id.to_string()),
                    _ => true,
                };
                if fresh {
                    tuples.push(child.clone());
                }
            } else if child.name.is(NS_PIDF, "note") {
                pub_notes.push(child.clone());
            } else if child.name.is(NS_DM, "person") {
                if person_shell.is_none() {
                    let mut shell = child.clone();
                    shell.children.clear();
                    person_shell = Some(shell);
                }
                for pc in child.elements() {
                    group_into(&mut pub_person, pc);
                }
            } else if child.name.is(NS_DM, "device") {
                let fresh = match child.id() {
                    Some(id) if !id.is_empty() => device_ids.insert(id.to_string()),
                    _ => true,
                };
                if fresh {
                    devices.push(child.clone());
                }
            } else {
                group_into(&mut pub_other, child);
            }
        }
        if notes.is_none() && !pub_notes.is_empty() {
            notes = Some(pub_notes);
        }
        merge_groups(&mut person_groups, pub_person);
        merge_groups(&mut other_groups, pub_other);
    }

    let mut root = Elem::new(NS_PIDF, "", "presence");
    root.set_attr("entity", presentity);
    let mut children: Vec<Elem> = tuples;
    children.extend(notes.unwrap_or_default());
    if let Some(mut person) = person_shell {
        person.children = person_groups
            .into_iter()
            .flat_map(|(_, els)| els)
            .map(Node::Elem)
            .collect();
        children.push(person);
    }
    children.extend(devices);
    children.extend(other_groups.into_iter().flat_map(|(_, els)| els));
    root.decls = hoisted_declarations(&children);
    root.children = children.into_iter().map(Node::Elem).collect();
    Some(tree::write_document(&root))
}

/// Prefixes (never the default namespace, which the root sets itself) that every
/// top-level fragment binds to the same URI, in order of first use: declared once on the
/// root instead of on each fragment.
fn hoisted_declarations(children: &[Elem]) -> Vec<(String, String)> {
    let mut seen: Vec<(String, Option<String>)> = Vec::new();
    let mut note = |p: &str, u: &str| {
        if p.is_empty() || p == "xml" || p == "xmlns" || u.is_empty() {
            return;
        }
        match seen.iter_mut().find(|(sp, _)| sp == p) {
            Some((_, slot)) => {
                if slot.as_deref() != Some(u) {
                    *slot = None;
                }
            }
            None => seen.push((p.to_string(), Some(u.to_string()))),
        }
    };
    for c in children {
        note(&c.name.prefix, &c.name.ns);
        for (p, u) in &c.decls {
            note(p, u);
        }
        for a in &c.attrs {
            note(&a.name.prefix, &a.name.ns);
        }
    }
    seen.into_iter()
        .filter_map(|(p, u)| u.map(|u| (p, u)))
        .collect()
}

/// `derived` without the tuples whose `<contact>` is equivalent to a tuple contact of one
/// of `own` (see the module docs, Derived tuples).
pub(crate) fn drop_derived_tuples(derived: &Elem, own: &[&Elem]) -> Elem {
    let contact_of = |t: &Elem| {
        t.elements()
            .find(|c| c.name.is(NS_PIDF, "contact"))
            .map(|c| tree::trim_xml(&own_text(c)).to_string())
    };
    let own_contacts: Vec<String> = own
        .iter()
        .flat_map(|d| d.elements())
        .filter(|t| t.name.is(NS_PIDF, "tuple"))
        .filter_map(contact_of)
        .collect();
    let mut out = derived.clone();
    out.children.retain(|n| match n {
        Node::Elem(t) if t.name.is(NS_PIDF, "tuple") => !contact_of(t).is_some_and(|c| {
            own_contacts
                .iter()
                .any(|o| crate::core::registrar::uri_equivalent(o, &c))
        }),
        _ => true,
    });
    out
}

/// Own character data of an element, concatenated (what `presence::xml` reads as text).
fn own_text(e: &Elem) -> String {
    e.children
        .iter()
        .filter_map(|n| match n {
            Node::Text(t) => Some(t.as_str()),
            Node::Elem(_) => None,
        })
        .collect()
}

/// Whether `parse_dialog_info` keeps this `<dialog>`: an `id` and a valid first `<state>`.
fn dialog_id(e: &Elem) -> Option<&str> {
    let id = e.id().filter(|i| !i.is_empty())?;
    let state = e.elements().find(|c| c.name.is(NS_DIALOG_INFO, "state"))?;
    DialogState::parse(&own_text(state))?;
    Some(id)
}

fn compose_dialog_info(presentity: &str, version: u32, newest_first: &[&Elem]) -> String {
    let mut root = Elem::new(NS_DIALOG_INFO, "", "dialog-info");
    root.set_attr("version", &version.to_string());
    root.set_attr("state", "full");
    root.set_attr("entity", presentity);
    let mut ids: HashSet<String> = HashSet::new();
    let mut dialogs = Vec::new();
    for doc in newest_first {
        for child in doc.elements() {
            if !child.name.is(NS_DIALOG_INFO, "dialog") {
                continue;
            }
            if let Some(id) = dialog_id(child) {
                if ids.insert(id.to_string()) {
                    dialogs.push(child.clone());
                }
            }
        }
    }
    root.decls = hoisted_declarations(&dialogs);
    root.children = dialogs.into_iter().map(Node::Elem).collect();
    tree::write_document(&root)
}

#[cfg(test)]
mod version_stamp_tests {
    use super::*;

    #[test]
    fn rfc4235_s4_1_stamped_version_replaces_only_the_root_attribute() {
        let doc = compose_bodies(&EventKey::dialog(), "sip:line@example.org", 0, &[]).unwrap();
        let stamped = stamp_dialog_info_version(&doc, 42).unwrap();
        let fresh = compose_bodies(&EventKey::dialog(), "sip:line@example.org", 42, &[]).unwrap();
        assert_eq!(stamped, fresh, "same bytes as composing with that version");
    }

    #[test]
    fn stamping_a_document_without_a_dialog_info_root_is_refused() {
        assert_eq!(stamp_dialog_info_version(b"<presence/>", 1), None);
        assert_eq!(
            stamp_dialog_info_version(b"<dialog-info state='full'>", 1),
            None
        );
    }
}
