//! PIDF (RFC 3863) with the data model (RFC 4479) and RPID (RFC 4480) ⇄ [`PresenceDoc`].
//!
//! Reading is tolerant (standards.md §9): unknown namespaces and elements are ignored, an
//! unknown element marked `mustUnderstand` inside `<status>` is ignored with its whole
//! subtree (RFC 8048 Table 2 note, case 54), values we cannot use (a `busy` show, a
//! priority of `1.7`) become `None` rather than errors. Only a body that is not XML or whose
//! root is not `{urn:ietf:params:xml:ns:pidf}presence` is refused.
//!
//! Writing follows the schemas: XML declaration, `<tuple>`s in order, presence-level
//! `<note>`s, then `<dm:person>`.

use super::xml::{self, Element, Ns};
use super::{
    Activity, Basic, BodyError, Contact, Note, Person, PresenceDoc, Show, Tuple, UserInput,
};

/// Parses an `application/pidf+xml` body.
///
/// Errors: [`BodyError::Malformed`] / [`BodyError::TooLarge`] from the XML layer,
/// [`BodyError::WrongDocument`] when the root is not a PIDF `<presence>`.
pub fn parse_pidf(bytes: &[u8]) -> Result<PresenceDoc, BodyError> {
    let doc = xml::parse_document(bytes)?;
    let root = doc.root();
    if !root.is(Ns::Pidf, "presence") {
        return Err(BodyError::WrongDocument {
            expected: "PIDF",
            detail: format!("root element <{}> is not a PIDF <presence>", root.name()),
        });
    }
    let mut doc = PresenceDoc {
        // Mandatory (RFC 3863 §4.1.1) but nothing we do depends on it: keep the rest.
        entity: root
            .attr("entity")
            .map(xml::trim_xml)
            .unwrap_or_default()
            .to_string(),
        ..PresenceDoc::default()
    };
    let lang = root.lang();
    for child in root.children() {
        match (child.ns(), child.name()) {
            (Ns::Pidf, "tuple") => doc.tuples.push(parse_tuple(child, lang)),
            (Ns::Pidf, "note") => doc.notes.push(parse_note(child, lang)),
            // RFC 4479 allows several persons; the model keeps the first.
            (Ns::DataModel, "person") if doc.person.is_none() => {
                doc.person = Some(parse_person(child, lang))
            }
            _ => {}
        }
    }
    Ok(doc)
}

/// `inherited` is the nearest ancestor's `xml:lang` (XML 1.0 §2.12: the attribute applies
/// to the element's contents unless overridden).
fn parse_note(el: Element, inherited: Option<&str>) -> Note {
    Note {
        lang: el
            .lang()
            .or(inherited)
            .map(|l| xml::trim_xml(l).to_string()),
        text: el.trimmed().to_string(),
    }
}

fn parse_tuple(el: Element, inherited: Option<&str>) -> Tuple {
    let lang = el.lang().or(inherited);
    let mut tuple = Tuple {
        id: el
            .attr("id")
            .map(xml::trim_xml)
            .unwrap_or_default()
            .to_string(),
        ..Tuple::default()
    };
    for child in el.children() {
        match (child.ns(), child.name()) {
            (Ns::Pidf, "status") => parse_status(child, &mut tuple),
            (Ns::Pidf, "contact") => {
                tuple.contact = Some(Contact {
                    uri: child.trimmed().to_string(),
                    priority_milli: child.attr("priority").and_then(Contact::parse_priority),
                });
            }
            (Ns::Pidf, "note") => tuple.notes.push(parse_note(child, lang)),
            (Ns::Pidf, "timestamp") => tuple.timestamp = child.value(),
            (Ns::DataModel, "deviceID") => tuple.device_id = child.value(),
            _ => {}
        }
    }
    tuple
}

fn parse_status(el: Element, tuple: &mut Tuple) {
    for child in el.children() {
        match (child.ns(), child.name()) {
            (Ns::Pidf, "basic") => tuple.basic = Basic::parse(child.text()),
            // RFC 8048 §7.5: XMPP <show/> carried as is; other values are dropped (case 52).
            (Ns::JabberClient, "show") => tuple.show = Show::parse(xml::trim_xml(child.text())),
            _ if child.must_understand() => {
                // RFC 3863 §4.1.3 / RFC 8048: not understood → ignore it and its subtree.
                tracing::debug!(element = %child.name(), "ignoring mustUnderstand element in <status>");
            }
            _ => {}
        }
    }
}

fn parse_person(el: Element, inherited: Option<&str>) -> Person {
    let lang = el.lang().or(inherited);
    let mut person = Person {
        id: el
            .attr("id")
            .map(xml::trim_xml)
            .unwrap_or_default()
            .to_string(),
        ..Person::default()
    };
    for child in el.children() {
        match (child.ns(), child.name()) {
            (Ns::Rpid, "activities") => parse_activities(child, &mut person.activities),
            (Ns::Rpid, "user-input") => {
                if let Some(ui) = parse_user_input(child) {
                    person.user_input = Some(ui);
                }
            }
            (Ns::DataModel, "note") => person.notes.push(parse_note(child, lang)),
            (Ns::DataModel, "timestamp") => person.timestamp = child.value(),
            _ => {}
        }
    }
    person
}

fn parse_activities(el: Element, out: &mut Vec<Activity>) {
    for child in el.children() {
        if child.ns() != Ns::Rpid {
            continue;
        }
        match child.name() {
            // <rpid:note> describes the activities; it is not one.
            "note" => {}
            "other" => out.push(Activity::Other(child.trimmed().to_string())),
            name => out.push(Activity::from_rpid_name(name)),
        }
    }
}

fn parse_user_input(el: Element) -> Option<UserInput> {
    let idle = match el.trimmed() {
        "idle" => true,
        "active" => false,
        other => {
            tracing::debug!(value = other, "ignoring <user-input> with an unknown value");
            return None;
        }
    };
    Some(UserInput {
        idle,
        idle_threshold: el
            .attr("idle-threshold")
            .and_then(|v| xml::trim_xml(v).parse().ok()),
        last_input: el
            .attr("last-input")
            .map(xml::trim_xml)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    })
}

/// Writes `doc` as an `application/pidf+xml` body (RFC 3863 §4, RFC 4479, RFC 4480).
///
/// The `dm` and `rpid` prefixes are declared on the root only when used. A priority above
/// 1000 thousandths, which PIDF cannot express, is left out. `Activity::Lunch` is written
/// as `meal` (RFC 4480's schema has no `lunch`).
pub fn build_pidf(doc: &PresenceDoc) -> String {
    let needs_dm = doc.person.is_some() || doc.tuples.iter().any(|t| t.device_id.is_some());
    let needs_rpid = doc
        .person
        .as_ref()
        .is_some_and(|p| !p.activities.is_empty() || p.user_input.is_some());

    let mut out = String::with_capacity(512 + 256 * doc.tuples.len());
    out.push_str(xml::DECLARATION);
    out.push_str("<presence xmlns='");
    out.push_str(xml::ns::PIDF);
    out.push('\'');
    if needs_dm {
        xml::push_attr(&mut out, "xmlns:dm", xml::ns::DATA_MODEL);
    }
    if needs_rpid {
        xml::push_attr(&mut out, "xmlns:rpid", xml::ns::RPID);
    }
    xml::push_attr(&mut out, "entity", &doc.entity);
    out.push_str(">\n");

    for tuple in &doc.tuples {
        write_tuple(&mut out, tuple);
    }
    for note in &doc.notes {
        write_note(&mut out, "note", note);
        out.push('\n');
    }
    if let Some(person) = &doc.person {
        write_person(&mut out, person);
    }
    out.push_str("</presence>\n");
    out
}

fn write_note(out: &mut String, name: &str, note: &Note) {
    match &note.lang {
        Some(lang) => xml::push_text_element(out, name, &[("xml:lang", lang)], &note.text),
        None => xml::push_text_element(out, name, &[], &note.text),
    }
}

fn write_tuple(out: &mut String, tuple: &Tuple) {
    out.push_str("<tuple");
    xml::push_attr(out, "id", &tuple.id);
    out.push_str(">\n<status>");
    if let Some(basic) = tuple.basic {
        xml::push_text_element(out, "basic", &[], basic.as_str());
    }
    if let Some(show) = tuple.show {
        out.push_str("<show xmlns='jabber:client'>");
        out.push_str(show.as_str());
        out.push_str("</show>");
    }
    out.push_str("</status>\n");
    // Schema order: status, extensions (dm:deviceID), contact, note*, timestamp.
    if let Some(device) = &tuple.device_id {
        xml::push_text_element(out, "dm:deviceID", &[], device);
        out.push('\n');
    }
    if let Some(contact) = &tuple.contact {
        match contact.priority_milli.and_then(Contact::format_priority) {
            Some(p) => xml::push_text_element(out, "contact", &[("priority", &p)], &contact.uri),
            None => xml::push_text_element(out, "contact", &[], &contact.uri),
        }
        out.push('\n');
    }
    for note in &tuple.notes {
        write_note(out, "note", note);
        out.push('\n');
    }
    if let Some(ts) = &tuple.timestamp {
        xml::push_text_element(out, "timestamp", &[], ts);
        out.push('\n');
    }
    out.push_str("</tuple>\n");
}

fn write_person(out: &mut String, person: &Person) {
    out.push_str("<dm:person");
    xml::push_attr(out, "id", &person.id);
    out.push_str(">\n");
    // Schema order: extensions (RPID), dm:note*, dm:timestamp.
    if !person.activities.is_empty() {
        out.push_str("<rpid:activities>");
        let has_meal = person.activities.contains(&Activity::Meal);
        for activity in &person.activities {
            match activity {
                Activity::Other(text) => xml::push_text_element(out, "rpid:other", &[], text),
                // Lunch is written as meal; once is enough when meal is there already.
                Activity::Lunch if has_meal => {}
                a => {
                    if let Some(name) = a.rpid_name() {
                        out.push_str("<rpid:");
                        out.push_str(name);
                        out.push_str("/>");
                    }
                }
            }
        }
        out.push_str("</rpid:activities>\n");
    }
    if let Some(ui) = &person.user_input {
        out.push_str("<rpid:user-input");
        if let Some(threshold) = ui.idle_threshold {
            xml::push_attr(out, "idle-threshold", &threshold.to_string());
        }
        if let Some(last) = &ui.last_input {
            xml::push_attr(out, "last-input", last);
        }
        out.push('>');
        out.push_str(if ui.idle { "idle" } else { "active" });
        out.push_str("</rpid:user-input>\n");
    }
    for note in &person.notes {
        write_note(out, "dm:note", note);
        out.push('\n');
    }
    if let Some(ts) = &person.timestamp {
        xml::push_text_element(out, "dm:timestamp", &[], ts);
        out.push('\n');
    }
    out.push_str("</dm:person>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY_EXAMPLE: &str = "<?xml version='1.0' encoding='UTF-8'?>
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:anna@xmpp.example'>
  <tuple id='ID-desk'>
    <status><basic>open</basic><show xmlns='jabber:client'>dnd</show></status>
    <contact priority='0.039'>sip:anna@xmpp.example;gr=desk</contact>
    <note xml:lang='en'>In a meeting</note>
  </tuple>
</presence>";

    fn parse(s: &str) -> PresenceDoc {
        parse_pidf(s.as_bytes()).expect("valid PIDF")
    }

    fn one_tuple(status: &str) -> String {
        format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
             <tuple id='t1'><status>{status}</status></tuple></presence>"
        )
    }

    fn with_contact(attr: &str) -> PresenceDoc {
        parse(&format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
             <tuple id='t1'><status><basic>open</basic></status>\
             <contact {attr}>sip:ben@sip.example</contact></tuple></presence>"
        ))
    }

    #[test]
    fn standards_example_parses_to_the_model() {
        let doc = parse(NOTIFY_EXAMPLE);
        assert_eq!(doc.entity, "pres:anna@xmpp.example");
        assert_eq!(
            doc.tuples,
            vec![Tuple {
                id: "ID-desk".into(),
                basic: Some(Basic::Open),
                show: Some(Show::Dnd),
                contact: Some(Contact {
                    uri: "sip:anna@xmpp.example;gr=desk".into(),
                    priority_milli: Some(39),
                }),
                notes: vec![Note::new(Some("en"), "In a meeting")],
                timestamp: None,
                device_id: None,
            }]
        );
    }

    /// standards.md §16 case 50.
    #[test]
    fn basic_closed_parses_to_closed() {
        let doc = parse(&one_tuple("<basic>closed</basic>"));
        assert_eq!(doc.tuples[0].basic, Some(Basic::Closed));
    }

    /// standards.md §16 case 51.
    #[test]
    fn jabber_client_show_and_note_are_read() {
        let doc = parse(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:ben@sip.example'>\
             <tuple id='t1'><status><basic>open</basic><show xmlns='jabber:client'>dnd</show></status>\
             <note>Busy</note></tuple></presence>",
        );
        assert_eq!(doc.tuples[0].show, Some(Show::Dnd));
        assert_eq!(doc.tuples[0].notes, vec![Note::new(None, "Busy")]);
    }

    /// standards.md §16 case 52.
    #[test]
    fn invalid_show_value_busy_is_dropped() {
        let doc = parse(&one_tuple(
            "<basic>open</basic><show xmlns='jabber:client'>busy</show>",
        ));
        assert_eq!(doc.tuples[0].show, None);
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
    }

    #[test]
    fn show_in_another_namespace_is_not_a_show() {
        let doc = parse(&one_tuple(
            "<basic>open</basic><show xmlns='urn:x'>away</show>",
        ));
        assert_eq!(doc.tuples[0].show, None);
    }

    /// standards.md §16 case 54.
    #[test]
    fn unknown_must_understand_element_in_status_is_ignored_with_its_subtree() {
        let doc = parse(&one_tuple(
            "<x:foo xmlns:x='urn:example:foo' mustUnderstand='1'>\
             <basic xmlns='urn:ietf:params:xml:ns:pidf'>closed</basic></x:foo>\
             <basic>open</basic>",
        ));
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
    }

    /// standards.md §16 case 54, `true` spelling.
    #[test]
    fn must_understand_true_spelling_is_ignored_too() {
        let doc = parse(&one_tuple(
            "<basic>open</basic><x:foo xmlns:x='urn:example:foo' mustUnderstand='true'>\
             <show xmlns='jabber:client'>away</show></x:foo>",
        ));
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
        assert_eq!(doc.tuples[0].show, None);
    }

    /// standards.md §16 case 55.
    #[test]
    fn priority_half_is_500_milli() {
        let doc = with_contact("priority='0.5'");
        assert_eq!(
            doc.tuples[0]
                .contact
                .as_ref()
                .and_then(|c| c.priority_milli),
            Some(500)
        );
    }

    /// standards.md §16 case 55.
    #[test]
    fn priority_out_of_range_is_ignored() {
        let doc = with_contact("priority='1.7'");
        let contact = doc.tuples[0].contact.as_ref().expect("contact kept");
        assert_eq!(contact.uri, "sip:ben@sip.example");
        assert_eq!(contact.priority_milli, None);
    }

    #[test]
    fn malformed_priorities_are_ignored() {
        for p in ["", "abc", "0.5000", "-0.5", ".5", "2", "1.001", "0,5", "+1"] {
            assert_eq!(Contact::parse_priority(p), None, "{p:?}");
        }
    }

    #[test]
    fn valid_priorities_parse_to_milli() {
        for (p, m) in [
            ("0", 0),
            ("1", 1000),
            ("1.000", 1000),
            ("0.039", 39),
            ("0.9", 900),
            ("0.", 0),
            (" 0.25 ", 250),
        ] {
            assert_eq!(Contact::parse_priority(p), Some(m), "{p:?}");
        }
    }

    #[test]
    fn priorities_format_as_shortest_decimal() {
        assert_eq!(Contact::format_priority(39).as_deref(), Some("0.039"));
        assert_eq!(Contact::format_priority(500).as_deref(), Some("0.5"));
        assert_eq!(Contact::format_priority(1000).as_deref(), Some("1"));
        assert_eq!(Contact::format_priority(0).as_deref(), Some("0"));
        assert_eq!(Contact::format_priority(1001), None);
    }

    /// standards.md §16 case 45 (body part): the X2S tuple of an away resource.
    #[test]
    fn case45_tuple_has_basic_show_note_and_priority_0_039() {
        let doc = PresenceDoc {
            entity: "pres:anna@xmpp.example".into(),
            tuples: vec![Tuple {
                id: "ID-desk".into(),
                basic: Some(Basic::Open),
                show: Some(Show::Away),
                contact: Some(Contact {
                    uri: "sip:anna@xmpp.example;gr=desk".into(),
                    // XMPP priority 5 → floor(5*1000/127) (the bridge's mapping).
                    priority_milli: Some(39),
                }),
                notes: vec![Note::new(Some("en"), "Lunch")],
                ..Tuple::default()
            }],
            ..PresenceDoc::default()
        };
        let xml = build_pidf(&doc);
        assert!(xml.contains("<tuple id='ID-desk'>"), "{xml}");
        assert!(
            xml.contains("<basic>open</basic><show xmlns='jabber:client'>away</show></status>"),
            "{xml}"
        );
        assert!(xml.contains("<note xml:lang='en'>Lunch</note>"), "{xml}");
        assert!(xml.contains("<contact priority='0.039'>"), "{xml}");
    }

    /// standards.md §16 case 46.
    #[test]
    fn contact_without_priority_writes_no_priority_attribute() {
        let doc = PresenceDoc {
            tuples: vec![Tuple {
                id: "t".into(),
                contact: Some(Contact {
                    uri: "sip:a@b".into(),
                    // XMPP priority -1 is not mapped (the bridge's mapping).
                    priority_milli: None,
                }),
                ..Tuple::default()
            }],
            ..PresenceDoc::default()
        };
        let xml = build_pidf(&doc);
        assert!(xml.contains("<contact>sip:a@b</contact>"), "{xml}");
    }

    /// standards.md §16 case 46.
    #[test]
    fn priority_1000_milli_is_written_as_1() {
        // XMPP priority 127 → 1000 thousandths (the bridge's mapping).
        assert_eq!(Contact::format_priority(1000).as_deref(), Some("1"));
    }

    /// standards.md §16 case 48 (body part).
    #[test]
    fn closed_tuple_is_written_as_basic_closed() {
        let doc = PresenceDoc {
            tuples: vec![Tuple {
                id: "ID-desk".into(),
                basic: Some(Basic::Closed),
                ..Tuple::default()
            }],
            ..PresenceDoc::default()
        };
        assert!(build_pidf(&doc).contains("<status><basic>closed</basic></status>"));
    }

    #[test]
    fn namespaces_are_matched_by_uri_not_prefix() {
        let doc = parse(
            "<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'>\
             <p:tuple id='t'><p:status><p:basic>open</p:basic>\
             <j:show xmlns:j='jabber:client'>xa</j:show></p:status></p:tuple></p:presence>",
        );
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
        assert_eq!(doc.tuples[0].show, Some(Show::Xa));
    }

    #[test]
    fn elements_with_the_pidf_prefix_but_another_uri_are_ignored() {
        let doc = parse(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'>\
             <tuple id='t'><status><basic xmlns='urn:other'>open</basic></status></tuple></presence>",
        );
        assert_eq!(doc.tuples[0].basic, None);
    }

    #[test]
    fn bom_comments_and_doctype_are_tolerated() {
        let body = format!(
            "\u{feff}<?xml version='1.0'?><!DOCTYPE presence><!-- hi -->{}",
            one_tuple("<!-- c --><basic>open</basic>")
        );
        assert_eq!(parse(&body).tuples[0].basic, Some(Basic::Open));
    }

    #[test]
    fn unknown_elements_and_namespaces_are_ignored() {
        let doc = parse(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:c='urn:ietf:params:xml:ns:pidf:cipid' entity='pres:a@b'>\
             <tuple id='t'><status><basic>open</basic><extra/></status><c:card>http://x</c:card>\
             <unknown>y</unknown></tuple><c:homepage>h</c:homepage></presence>",
        );
        assert_eq!(doc.tuples.len(), 1);
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
    }

    #[test]
    fn data_model_person_with_rpid_is_read() {
        let doc = parse(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' \
             xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='pres:a@b'>\
             <tuple id='t'><status><basic>open</basic></status><dm:deviceID>urn:uuid:d1</dm:deviceID></tuple>\
             <dm:person id='p1'><rpid:activities from='2005-05-30T12:00:00+05:00'><rpid:note>n</rpid:note>\
             <rpid:on-the-phone/><rpid:lunch/><rpid:other>gaming</rpid:other><rpid:dancing/></rpid:activities>\
             <rpid:mood><rpid:happy/></rpid:mood>\
             <rpid:user-input idle-threshold='600' last-input='2004-10-21T13:20:00.000-05:00'>idle</rpid:user-input>\
             <dm:note xml:lang='fr'>Au t\u{e9}l\u{e9}phone</dm:note><dm:timestamp>2005-05-30T12:00:00Z</dm:timestamp></dm:person>\
             <dm:device id='d'><dm:deviceID>urn:uuid:d1</dm:deviceID></dm:device></presence>",
        );
        assert_eq!(doc.tuples[0].device_id.as_deref(), Some("urn:uuid:d1"));
        assert_eq!(
            doc.person,
            Some(Person {
                id: "p1".into(),
                activities: vec![
                    Activity::OnThePhone,
                    Activity::Lunch,
                    Activity::Other("gaming".into()),
                    Activity::Other("dancing".into()),
                ],
                user_input: Some(UserInput {
                    idle: true,
                    idle_threshold: Some(600),
                    last_input: Some("2004-10-21T13:20:00.000-05:00".into()),
                }),
                notes: vec![Note::new(Some("fr"), "Au t\u{e9}l\u{e9}phone")],
                timestamp: Some("2005-05-30T12:00:00Z".into()),
            })
        );
    }

    #[test]
    fn note_inherits_xml_lang_from_presence() {
        let doc = parse(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' xml:lang='de' entity='pres:a@b'>\
             <tuple id='t'><status><basic>open</basic></status><note>Besch\u{e4}ftigt</note>\
             <note xml:lang='en'>Busy</note></tuple></presence>",
        );
        assert_eq!(
            doc.tuples[0].notes,
            vec![
                Note::new(Some("de"), "Besch\u{e4}ftigt"),
                Note::new(Some("en"), "Busy")
            ]
        );
    }

    #[test]
    fn lunch_is_read_but_written_as_meal() {
        let doc = PresenceDoc {
            entity: "pres:a@b".into(),
            person: Some(Person {
                id: "p".into(),
                activities: vec![Activity::Lunch],
                ..Person::default()
            }),
            ..PresenceDoc::default()
        };
        let xml = build_pidf(&doc);
        assert!(!xml.contains("lunch"), "{xml}");
        assert!(xml.contains("<rpid:meal/>"), "{xml}");
    }

    #[test]
    fn wrong_root_is_wrong_document() {
        let err = parse_pidf(b"<presence xmlns='jabber:client'/>").unwrap_err();
        assert!(matches!(
            err,
            BodyError::WrongDocument {
                expected: "PIDF",
                ..
            }
        ));
    }

    #[test]
    fn missing_entity_is_tolerated_as_empty() {
        let doc = parse("<presence xmlns='urn:ietf:params:xml:ns:pidf'/>");
        assert_eq!(doc.entity, "");
    }

    #[test]
    fn build_starts_with_xml_declaration_and_writes_the_standards_example_elements() {
        let xml = build_pidf(&parse(NOTIFY_EXAMPLE));
        assert!(
            xml.starts_with("<?xml version='1.0' encoding='UTF-8'?>"),
            "{xml}"
        );
        assert!(xml.contains(
            "<status><basic>open</basic><show xmlns='jabber:client'>dnd</show></status>"
        ));
        assert!(xml.contains("<contact priority='0.039'>sip:anna@xmpp.example;gr=desk</contact>"));
        assert!(xml.contains("<note xml:lang='en'>In a meeting</note>"));
        assert!(!xml.contains("xmlns:dm"), "no unused prefixes: {xml}");
    }

    #[test]
    fn build_escapes_text_and_attributes() {
        let doc = PresenceDoc {
            entity: "pres:o'malley@x&y".into(),
            tuples: vec![Tuple {
                id: "a\"b".into(),
                notes: vec![Note::new(Some("en"), "<b>&amp;</b>")],
                ..Tuple::default()
            }],
            ..PresenceDoc::default()
        };
        let xml = build_pidf(&doc);
        assert!(xml.contains("entity='pres:o&apos;malley@x&amp;y'"), "{xml}");
        assert!(xml.contains("&lt;b&gt;&amp;amp;&lt;/b&gt;"), "{xml}");
        assert_eq!(parse(&xml), doc);
    }

    #[test]
    fn build_keeps_tuple_order() {
        let doc = PresenceDoc {
            entity: "pres:a@b".into(),
            tuples: ["z", "a", "m"]
                .iter()
                .map(|id| Tuple {
                    id: id.to_string(),
                    basic: Some(Basic::Open),
                    ..Tuple::default()
                })
                .collect(),
            ..PresenceDoc::default()
        };
        let ids: Vec<_> = parse(&build_pidf(&doc))
            .tuples
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["z", "a", "m"]);
    }

    #[test]
    fn full_document_round_trips() {
        let doc = PresenceDoc {
            entity: "pres:anna@xmpp.example".into(),
            tuples: vec![Tuple {
                id: "ID-desk".into(),
                basic: Some(Basic::Open),
                show: Some(Show::Away),
                contact: Some(Contact {
                    uri: "sip:anna@xmpp.example;gr=desk".into(),
                    priority_milli: Some(1000),
                }),
                notes: vec![Note::new(Some("en"), "Lunch"), Note::new(None, "")],
                timestamp: Some("2026-11-26T08:00:00Z".into()),
                device_id: Some("urn:uuid:1".into()),
            }],
            person: Some(Person {
                id: "p".into(),
                activities: vec![Activity::Away, Activity::Other("xa".into())],
                user_input: Some(UserInput {
                    idle: false,
                    idle_threshold: None,
                    last_input: None,
                }),
                notes: vec![Note::new(Some("de"), "Mittag")],
                timestamp: Some("2026-11-26T08:00:00Z".into()),
            }),
            notes: vec![Note::new(None, "presence note")],
        };
        assert_eq!(parse(&build_pidf(&doc)), doc);
    }
}
