//! Composition of the presence state service (policy: docs/presence-agent-composition.md):
//! PIDF (RFC 3863, RFC 4479) at the XML level and dialog-info (RFC 4235 §4).

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::presence::{parse_dialog_info, parse_pidf, Activity, Basic};
use xmpp_sip_gateway::core::presence_state::{
    Accepted, EventKey, PresenceState, PresenceStateConfig, PublishInput,
};
use xmpp_sip_gateway::core::sip::headers::EventHeader;
use xmpp_sip_gateway::core::time::Timestamp;

const ANNA: &str = "sip:anna@example.com";
const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
const DM_NS: &str = "urn:ietf:params:xml:ns:pidf:data-model";

struct F {
    st: PresenceState,
    ids: IdGenerator,
    now: Timestamp,
}

impl F {
    fn new() -> F {
        F {
            st: PresenceState::new(PresenceStateConfig::default()),
            ids: IdGenerator::seeded(11),
            now: Timestamp::from_secs(2_000_000),
        }
    }

    fn publish(
        &mut self,
        event: &str,
        if_match: Option<&str>,
        body: &str,
        sender: Option<&str>,
    ) -> Accepted {
        let ev = EventHeader::parse(event).expect("event");
        let ct = PresenceState::body_type(&ev);
        let tags: Vec<String> = if_match.into_iter().map(str::to_string).collect();
        self.now = Timestamp::from_millis(self.now.as_millis() + 1000);
        self.st
            .publish(
                self.now,
                &mut self.ids,
                PublishInput {
                    presentity: ANNA,
                    event: &ev,
                    if_match: &tags,
                    expires: Some(3600),
                    content_type: ct,
                    body: body.as_bytes(),
                    sender,
                    origin: "sip",
                },
            )
            .0
            .expect("accepted")
    }

    fn pidf(&mut self, body: &str) -> Accepted {
        self.publish("presence", None, body, None)
    }

    fn doc(&self) -> String {
        let d = self
            .st
            .document(ANNA, &EventKey::presence(), 0, None)
            .expect("a document");
        String::from_utf8(d).expect("utf8")
    }

    fn dialog_doc(&self, version: u32, exclude: Option<&str>) -> String {
        let d = self
            .st
            .document(ANNA, &EventKey::dialog(), version, exclude)
            .expect("a document");
        String::from_utf8(d).expect("utf8")
    }
}

fn presence(inner: &str) -> String {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?><presence xmlns='{PIDF_NS}' xmlns:dm='{DM_NS}' \
         xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='pres:anna@example.com'>{inner}</presence>"
    )
}

fn tuple(id: &str, basic: &str) -> String {
    format!("<tuple id='{id}'><status><basic>{basic}</basic></status></tuple>")
}

fn dialogs(inner: &str) -> String {
    format!(
        "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='9' state='full' \
         entity='sip:anna@example.com'>{inner}</dialog-info>"
    )
}

fn dialog(id: &str, state: &str) -> String {
    format!("<dialog id='{id}' direction='initiator'><state>{state}</state></dialog>")
}

/// Every element as (namespace URI, local name), in document order; panics on a prefix
/// that is not declared in the output.
fn names(doc: &str) -> Vec<(String, String)> {
    let mut r = NsReader::from_str(doc);
    let mut out = Vec::new();
    loop {
        let (res, ev) = r.read_resolved_event().expect("well-formed output");
        let ns = match res {
            ResolveResult::Bound(n) => n.0.to_string(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => panic!("undeclared prefix {p:?} in {doc}"),
        };
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                out.push((ns, e.local_name().into_inner().to_string()))
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

fn has(doc: &str, ns: &str, local: &str) -> bool {
    names(doc).iter().any(|(n, l)| n == ns && l == local)
}

#[test]
fn rfc3863_s4_1_composed_document_has_declaration_entity_of_the_presentity_and_parses() {
    let mut f = F::new();
    f.pidf(&presence(&tuple("t1", "open")));
    let doc = f.doc();
    assert!(
        doc.starts_with("<?xml version='1.0' encoding='UTF-8'?>"),
        "{doc}"
    );
    let parsed = parse_pidf(doc.as_bytes()).expect("parses");
    assert_eq!(parsed.entity, ANNA);
    assert_eq!(parsed.tuples[0].basic, Some(Basic::Open));
}

#[test]
fn rfc4479_s3_tuples_of_two_devices_are_merged_newest_first() {
    let mut f = F::new();
    f.pidf(&presence(&tuple("phone", "closed")));
    f.pidf(&presence(&tuple("laptop", "open")));
    let parsed = parse_pidf(f.doc().as_bytes()).expect("parses");
    let ids: Vec<&str> = parsed.tuples.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["laptop", "phone"]);
}

#[test]
fn rfc3863_s4_1_2_same_tuple_id_in_two_publications_newest_wins() {
    let mut f = F::new();
    f.pidf(&presence(&tuple("t", "closed")));
    f.pidf(&presence(&tuple("t", "open")));
    let parsed = parse_pidf(f.doc().as_bytes()).expect("parses");
    assert_eq!(parsed.tuples.len(), 1);
    assert_eq!(parsed.tuples[0].basic, Some(Basic::Open));
}

#[test]
fn rfc3903_s4_refresh_does_not_make_a_publication_newest() {
    let mut f = F::new();
    let old = f.pidf(&presence(&tuple("t", "closed")));
    f.pidf(&presence(&tuple("t", "open")));
    f.publish("presence", Some(&old.etag), "", None);
    let parsed = parse_pidf(f.doc().as_bytes()).expect("parses");
    assert_eq!(parsed.tuples[0].basic, Some(Basic::Open));
}

#[test]
fn rfc3903_s4_modify_makes_a_publication_newest() {
    let mut f = F::new();
    let old = f.pidf(&presence(&tuple("t", "closed")));
    f.pidf(&presence(&tuple("t", "open")));
    f.publish(
        "presence",
        Some(&old.etag),
        &presence(&tuple("t", "closed")),
        None,
    );
    let parsed = parse_pidf(f.doc().as_bytes()).expect("parses");
    assert_eq!(parsed.tuples[0].basic, Some(Basic::Closed));
}

#[test]
fn rfc4479_s3_2_persons_are_merged_per_child_newest_wins() {
    let mut f = F::new();
    f.pidf(&presence(
        "<dm:person id='p-old'><rpid:activities><rpid:away/></rpid:activities>\
         <rpid:mood><rpid:happy/></rpid:mood></dm:person>",
    ));
    f.pidf(&presence(
        "<dm:person id='p-new'><rpid:activities><rpid:busy/></rpid:activities></dm:person>",
    ));
    let doc = f.doc();
    let parsed = parse_pidf(doc.as_bytes()).expect("parses");
    let person = parsed.person.expect("one person");
    assert_eq!(person.id, "p-new");
    assert_eq!(person.activities, vec![Activity::Busy]);
    assert_eq!(doc.matches("person").count(), 2, "one element: {doc}");
    assert!(doc.contains("happy"), "mood of the older one kept: {doc}");
}

#[test]
fn rfc4479_s3_3_devices_are_deduplicated_by_id_newest_first() {
    let mut f = F::new();
    f.pidf(&presence(
        "<dm:device id='d1'><dm:deviceID>urn:x:old</dm:deviceID></dm:device>\
         <dm:device id='d2'><dm:deviceID>urn:x:two</dm:deviceID></dm:device>",
    ));
    f.pidf(&presence(
        "<dm:device id='d1'><dm:deviceID>urn:x:new</dm:deviceID></dm:device>",
    ));
    let doc = f.doc();
    assert!(
        doc.contains("urn:x:new") && doc.contains("urn:x:two"),
        "{doc}"
    );
    assert!(!doc.contains("urn:x:old"), "{doc}");
    assert_eq!(
        names(&doc)
            .iter()
            .filter(|(n, l)| n == DM_NS && l == "device")
            .count(),
        2
    );
}

#[test]
fn rfc3863_s4_1_presence_note_comes_from_the_newest_publication_with_one() {
    let mut f = F::new();
    f.pidf(&presence(&format!(
        "{}<note xml:lang='en'>old</note><note xml:lang='de'>alt</note>",
        tuple("a", "open")
    )));
    f.pidf(&presence(&format!(
        "{}<note>new</note>",
        tuple("b", "open")
    )));
    f.pidf(&presence(&tuple("c", "open")));
    let parsed = parse_pidf(f.doc().as_bytes()).expect("parses");
    let notes: Vec<&str> = parsed.notes.iter().map(|n| n.text.as_str()).collect();
    assert_eq!(notes, vec!["new"]);
}

#[test]
fn rfc3863_s4_1_5_unknown_extensions_survive_composition() {
    let mut f = F::new();
    f.pidf(&presence(
        "<tuple id='t'><status><basic>open</basic><x:flag xmlns:x='urn:example:x' x:level='2'>on</x:flag></status></tuple>\
         <y:thing xmlns:y='urn:example:y'><y:deep>v</y:deep></y:thing>",
    ));
    let doc = f.doc();
    assert!(has(&doc, "urn:example:x", "flag"), "{doc}");
    assert!(has(&doc, "urn:example:y", "thing"), "{doc}");
    assert!(has(&doc, "urn:example:y", "deep"), "{doc}");
    assert!(doc.contains("x:level='2'"), "{doc}");
}

#[test]
fn namespaces_in_xml_s6_fragments_get_their_prefixes_redeclared() {
    let mut f = F::new();
    // Prefixes declared on the source root only, and the same prefix bound to different
    // URIs in the two publications.
    f.pidf(
        "<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf' xmlns:e='urn:example:one' \
         xmlns:d='urn:ietf:params:xml:ns:pidf:data-model' entity='pres:a@b'>\
         <p:tuple id='t1'><p:status><p:basic>open</p:basic><e:x/></p:status></p:tuple>\
         <d:person id='pp'><e:x/></d:person></p:presence>",
    );
    f.pidf(
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:e='urn:example:two' entity='pres:a@b'>\
         <tuple id='t2'><status><basic>closed</basic><e:x/></status></tuple></presence>",
    );
    let doc = f.doc();
    let all = names(&doc);
    assert!(
        all.contains(&("urn:example:one".into(), "x".into())),
        "{doc}"
    );
    assert!(
        all.contains(&("urn:example:two".into(), "x".into())),
        "{doc}"
    );
    assert!(all.contains(&(DM_NS.into(), "person".into())), "{doc}");
    assert_eq!(
        all.iter()
            .filter(|(n, l)| n == PIDF_NS && l == "tuple")
            .count(),
        2,
        "{doc}"
    );
    let parsed = parse_pidf(doc.as_bytes()).expect("parses");
    assert_eq!(parsed.tuples.len(), 2);
    assert_eq!(parsed.person.expect("person").id, "pp");
}

#[test]
fn namespaces_in_xml_s6_no_namespace_element_stays_unqualified() {
    let mut f = F::new();
    f.pidf(&presence(
        "<tuple id='t'><status><basic>open</basic></status><plain xmlns=''>x</plain></tuple>",
    ));
    let doc = f.doc();
    assert!(has(&doc, "", "plain"), "{doc}");
}

#[test]
fn rfc4235_s4_1_dialogs_are_merged_and_the_callers_version_is_stamped() {
    let mut f = F::new();
    f.publish("dialog", None, &dialogs(&dialog("a", "early")), None);
    f.publish("dialog", None, &dialogs(&dialog("b", "confirmed")), None);
    let doc = f.dialog_doc(42, None);
    assert!(doc.starts_with("<?xml"), "{doc}");
    let info = parse_dialog_info(doc.as_bytes()).expect("parses");
    assert_eq!(info.version, 42);
    assert_eq!(info.state.as_str(), "full");
    assert_eq!(info.entity, ANNA);
    let ids: Vec<&str> = info.dialogs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, vec!["b", "a"]);
}

#[test]
fn rfc4235_s4_1_same_dialog_id_newest_publication_wins() {
    let mut f = F::new();
    f.publish("dialog", None, &dialogs(&dialog("a", "early")), None);
    f.publish("dialog", None, &dialogs(&dialog("a", "terminated")), None);
    let info = parse_dialog_info(f.dialog_doc(1, None).as_bytes()).expect("parses");
    assert_eq!(info.dialogs.len(), 1);
    assert_eq!(info.dialogs[0].state.as_str(), "terminated");
}

#[test]
fn rfc4235_s4_1_without_publications_dialog_is_empty_full_and_presence_is_none() {
    let f = F::new();
    let info = parse_dialog_info(f.dialog_doc(3, None).as_bytes()).expect("parses");
    assert_eq!((info.version, info.dialogs.len()), (3, 0));
    assert_eq!(info.entity, ANNA);
    assert_eq!(f.st.document(ANNA, &EventKey::presence(), 0, None), None);
    let other = EventKey::parse("message-summary").expect("key");
    assert_eq!(f.st.document(ANNA, &other, 0, None), None);
}

#[test]
fn rfc4235_s4_1_dialog_children_and_extensions_are_copied_whole() {
    let mut f = F::new();
    f.publish(
        "dialog",
        None,
        &dialogs(
            "<dialog id='a' call-id='c1'><state code='200'>confirmed</state>\
             <route-set><hop>sip:p.example</hop></route-set>\
             <local><target uri='sip:anna@10.0.0.1'><param pname='x-line-id' pval='1'/></target></local>\
             <z:ext xmlns:z='urn:example:z'/></dialog>",
        ),
        None,
    );
    let doc = f.dialog_doc(0, None);
    assert!(doc.contains("sip:p.example"), "{doc}");
    assert!(has(&doc, "urn:example:z", "ext"), "{doc}");
    let info = parse_dialog_info(doc.as_bytes()).expect("parses");
    assert_eq!(
        info.dialogs[0].local.as_ref().and_then(|l| l.line_id()),
        Some(1)
    );
}

#[test]
fn rfc4235_s4_1_dialog_without_a_valid_state_is_left_out() {
    let mut f = F::new();
    f.publish(
        "dialog",
        None,
        &dialogs(&format!(
            "{}{}",
            dialog("good", "early"),
            dialog("bad", "ringing")
        )),
        None,
    );
    let doc = f.dialog_doc(0, None);
    assert!(!doc.contains("bad"), "{doc}");
}

#[test]
fn bla_s7_exclude_sender_leaves_out_that_senders_publications() {
    let mut f = F::new();
    f.publish(
        "dialog",
        None,
        &dialogs(&dialog("from-a", "confirmed")),
        Some("sip:a@10.0.0.1"),
    );
    f.publish(
        "dialog",
        None,
        &dialogs(&dialog("from-b", "early")),
        Some("sip:b@10.0.0.2"),
    );
    let for_a = f.dialog_doc(0, Some("sip:a@10.0.0.1"));
    assert!(
        !for_a.contains("from-a") && for_a.contains("from-b"),
        "{for_a}"
    );
    let all = f.dialog_doc(0, None);
    assert!(all.contains("from-a") && all.contains("from-b"), "{all}");
}

#[test]
fn bla_s7_removing_a_shadowed_publication_is_a_change_for_a_sender_view() {
    let mut f = F::new();
    let old = f.publish(
        "dialog",
        None,
        &dialogs(&dialog("x", "early")),
        Some("sip:a@h"),
    );
    f.publish(
        "dialog",
        None,
        &dialogs(&dialog("x", "confirmed")),
        Some("sip:b@h"),
    );
    let full_before = f.dialog_doc(0, None);
    // Remove the older (fully shadowed) publication: the full document is the same, but
    // the view without b's publications loses dialog x.
    let ev = EventHeader::parse("dialog").expect("event");
    let tags = vec![old.etag.clone()];
    let (res, _) = f.st.publish(
        f.now,
        &mut f.ids,
        PublishInput {
            presentity: ANNA,
            event: &ev,
            if_match: &tags,
            expires: Some(0),
            content_type: None,
            body: b"",
            sender: Some("sip:a@h"),
            origin: "sip",
        },
    );
    assert!(res.expect("removed").changed);
    assert_eq!(f.dialog_doc(0, None), full_before);
}
