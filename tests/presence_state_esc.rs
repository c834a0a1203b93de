//! RFC 3903 §6 ESC processing of the presence state service, one rule per test
//! (standards.md §10).

use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable};
use xmpp_sip_gateway::core::presence_state::{
    Accepted, EventKey, PresenceState, PresenceStateConfig, PublishInput, Refusal,
};
use xmpp_sip_gateway::core::sip::headers::EventHeader;
use xmpp_sip_gateway::core::time::Timestamp;

const ANNA: &str = "sip:anna@example.com";
const PIDF: &str = "application/pidf+xml";
const DIALOG: &str = "application/dialog-info+xml";

fn pidf(tuple: &str, basic: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:anna@example.com'>\
         <tuple id='{tuple}'><status><basic>{basic}</basic></status></tuple></presence>"
    )
    .into_bytes()
}

fn dialog_body(id: &str) -> Vec<u8> {
    format!(
        "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='0' state='full' entity='sip:anna@example.com'>\
         <dialog id='{id}'><state>confirmed</state></dialog></dialog-info>"
    )
    .into_bytes()
}

struct Fixture {
    st: PresenceState,
    ids: IdGenerator,
    now: Timestamp,
}

struct Req<'a> {
    event: &'a str,
    if_match: Vec<String>,
    expires: Option<u32>,
    content_type: Option<&'a str>,
    body: Vec<u8>,
}

impl<'a> Req<'a> {
    fn initial(body: Vec<u8>) -> Self {
        Req {
            event: "presence",
            if_match: vec![],
            expires: Some(600),
            content_type: Some(PIDF),
            body,
        }
    }
    fn refresh(etag: &str) -> Self {
        Req {
            event: "presence",
            if_match: vec![etag.to_string()],
            expires: Some(600),
            content_type: None,
            body: vec![],
        }
    }
    fn modify(etag: &str, body: Vec<u8>) -> Self {
        Req {
            if_match: vec![etag.to_string()],
            ..Req::initial(body)
        }
    }
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            st: PresenceState::new(PresenceStateConfig::default()),
            ids: IdGenerator::seeded(7),
            now: Timestamp::from_secs(1_000_000),
        }
    }

    fn send(&mut self, r: Req<'_>) -> (Result<Accepted, Refusal>, Vec<StoreOp>) {
        let event = EventHeader::parse(r.event).expect("event");
        self.st.publish(
            self.now,
            &mut self.ids,
            PublishInput {
                presentity: ANNA,
                event: &event,
                if_match: &r.if_match,
                expires: r.expires,
                content_type: r.content_type,
                body: &r.body,
                sender: None,
                origin: "sip",
            },
        )
    }

    fn ok(&mut self, r: Req<'_>) -> Accepted {
        self.send(r).0.expect("accepted")
    }

    fn refused(&mut self, r: Req<'_>) -> Refusal {
        let len = self.st.len();
        let doc = self.doc();
        let (res, ops) = self.send(r);
        assert!(ops.is_empty(), "a refusal writes nothing");
        assert_eq!(self.st.len(), len, "a refusal changes nothing");
        assert_eq!(self.doc(), doc, "a refusal changes nothing");
        res.expect_err("refused")
    }

    fn doc(&self) -> Option<String> {
        self.st
            .document(ANNA, &EventKey::presence(), 0, None)
            .map(|d| String::from_utf8(d).expect("utf8"))
    }

    fn advance(&mut self, secs: u64) {
        self.now = Timestamp::from_millis(self.now.as_millis() + secs * 1000);
    }
}

#[test]
fn rfc3903_s6_step2_unsupported_event_is_489() {
    let mut f = Fixture::new();
    let r = f.refused(Req {
        event: "message-summary",
        ..Req::initial(pidf("t", "open"))
    });
    assert_eq!(r.code, 489);
}

#[test]
fn rfc3903_s6_supported_events_and_their_body_types() {
    let ev = |s| EventHeader::parse(s).expect("event");
    assert!(PresenceState::supports(&ev("presence")));
    assert!(PresenceState::supports(&ev("dialog")));
    assert!(PresenceState::supports(&ev("dialog;sla")));
    assert!(!PresenceState::supports(&ev("presence.winfo")));
    assert_eq!(PresenceState::body_type(&ev("presence")), Some(PIDF));
    assert_eq!(PresenceState::body_type(&ev("dialog;sla")), Some(DIALOG));
    assert_eq!(PresenceState::body_type(&ev("reg")), None);
}

#[test]
fn rfc3903_s6_step3_more_than_one_if_match_is_400() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    let mut r = Req::refresh(&a.etag);
    r.if_match.push(a.etag.clone());
    assert_eq!(f.refused(r).code, 400);
}

#[test]
fn rfc3903_s6_step3_unknown_if_match_is_412() {
    let mut f = Fixture::new();
    f.ok(Req::initial(pidf("t", "open")));
    assert_eq!(f.refused(Req::refresh("nosuchtag")).code, 412);
}

#[test]
fn rfc3903_s6_step3_expired_if_match_is_412_even_before_collection() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    f.advance(600);
    assert_eq!(f.refused(Req::refresh(&a.etag)).code, 412);
}

#[test]
fn rfc3903_s6_step3_if_match_of_another_event_is_412() {
    let mut f = Fixture::new();
    let a = f.ok(Req {
        event: "dialog",
        content_type: Some(DIALOG),
        ..Req::initial(dialog_body("d1"))
    });
    let r = f.refused(Req {
        event: "dialog;sla",
        ..Req::refresh(&a.etag)
    });
    assert_eq!(r.code, 412);
}

#[test]
fn rfc3903_s6_step4_absent_expires_gets_the_configured_default() {
    let mut f = Fixture::new();
    let a = f.ok(Req {
        expires: None,
        ..Req::initial(pidf("t", "open"))
    });
    assert_eq!(a.expires, 3600);
}

#[test]
fn rfc3903_s6_step4_expires_below_minimum_is_423_with_min_expires() {
    let mut f = Fixture::new();
    let r = f.refused(Req {
        expires: Some(59),
        ..Req::initial(pidf("t", "open"))
    });
    assert_eq!(r.code, 423);
    assert_eq!(r.min_expires, Some(60));
}

#[test]
fn rfc3903_s6_step4_expires_above_maximum_is_capped() {
    let mut f = Fixture::new();
    let a = f.ok(Req {
        expires: Some(86_400),
        ..Req::initial(pidf("t", "open"))
    });
    assert_eq!(a.expires, 3600);
}

#[test]
fn rfc3903_s6_step5_body_of_a_type_the_event_does_not_take_is_415() {
    let mut f = Fixture::new();
    let r = f.refused(Req {
        content_type: Some(DIALOG),
        ..Req::initial(pidf("t", "open"))
    });
    assert_eq!(r.code, 415);
}

#[test]
fn rfc3903_s6_step5_body_without_content_type_is_415() {
    let mut f = Fixture::new();
    let r = f.refused(Req {
        content_type: None,
        ..Req::initial(pidf("t", "open"))
    });
    assert_eq!(r.code, 415);
}

#[test]
fn rfc3903_s6_step5_content_type_parameters_and_case_are_accepted() {
    let mut f = Fixture::new();
    f.ok(Req {
        content_type: Some("Application/PIDF+XML; charset=UTF-8"),
        ..Req::initial(pidf("t", "open"))
    });
}

#[test]
fn rfc3903_s6_step5_neither_body_nor_if_match_is_400() {
    let mut f = Fixture::new();
    let r = f.refused(Req::initial(b"\r\n".to_vec()));
    assert_eq!(r.code, 400);
}

#[test]
fn rfc3903_s6_step5_unparsable_body_is_400_and_previous_state_stays() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    let before = f.doc();
    let r = f.refused(Req::modify(
        &a.etag,
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf'".to_vec(),
    ));
    assert_eq!(r.code, 400);
    assert_eq!(f.doc(), before);
    // The publication is untouched: its tag still works.
    f.ok(Req::refresh(&a.etag));
}

#[test]
fn rfc3903_s6_step5_body_of_the_wrong_document_is_400() {
    let mut f = Fixture::new();
    let r = f.refused(Req::initial(dialog_body("d")));
    assert_eq!(r.code, 400);
}

#[test]
fn rfc3903_s6_body_over_the_limit_is_413() {
    let mut f = Fixture::new();
    let mut body = pidf("t", "open");
    let pad = b"<!--".iter().chain([b'x'; 70_000].iter()).chain(b"-->");
    body.extend(pad);
    assert_eq!(f.refused(Req::initial(body)).code, 413);
}

#[test]
fn rfc3903_s6_step5_expires_zero_with_if_match_removes_the_publication() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    let (res, ops) = f.send(Req {
        expires: Some(0),
        ..Req::refresh(&a.etag)
    });
    let removed = res.expect("accepted");
    assert_eq!(removed.expires, 0);
    assert!(removed.changed);
    assert_eq!(f.st.len(), 0);
    assert_eq!(f.doc(), None);
    assert!(ops.contains(&StoreOp::Delete {
        table: StoreTable::PresentityPublications,
        key: a.etag.clone()
    }));
    assert_eq!(f.refused(Req::refresh(&a.etag)).code, 412);
}

#[test]
fn rfc3903_s6_initial_publish_with_expires_zero_stores_nothing() {
    let mut f = Fixture::new();
    let (res, ops) = f.send(Req {
        expires: Some(0),
        ..Req::initial(pidf("t", "open"))
    });
    let a = res.expect("accepted");
    assert_eq!((a.expires, a.changed), (0, false));
    assert!(ops.is_empty());
    assert!(f.st.is_empty());
}

#[test]
fn rfc3903_s6_refresh_without_body_gets_new_etag_and_keeps_document() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    let before = f.doc();
    let r = f.ok(Req::refresh(&a.etag));
    assert_ne!(r.etag, a.etag);
    assert!(!r.changed);
    assert_eq!(f.doc(), before);
    assert_eq!(
        f.refused(Req::refresh(&a.etag)).code,
        412,
        "old tag is gone"
    );
    f.ok(Req::refresh(&r.etag));
}

#[test]
fn rfc3903_s6_modify_replaces_the_document_and_reports_a_change() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    let m = f.ok(Req::modify(&a.etag, pidf("t", "closed")));
    assert!(m.changed);
    assert_ne!(m.etag, a.etag);
    let doc = f.doc().expect("doc");
    assert!(doc.contains("closed") && !doc.contains("open"), "{doc}");
    assert_eq!(f.st.len(), 1);
}

#[test]
fn rfc3903_s6_modify_with_the_same_body_is_not_a_change() {
    let mut f = Fixture::new();
    let a = f.ok(Req::initial(pidf("t", "open")));
    let m = f.ok(Req::modify(&a.etag, pidf("t", "open")));
    assert!(!m.changed);
}

#[test]
fn rfc3903_s6_step8_every_success_deletes_the_old_row_and_puts_the_new_one() {
    let mut f = Fixture::new();
    let (a, ops) = f.send(Req::initial(pidf("t", "open")));
    let a = a.expect("ok");
    assert!(matches!(&ops[..], [StoreOp::Put { key, .. }] if *key == a.etag));
    let (r, ops) = f.send(Req::refresh(&a.etag));
    let r = r.expect("ok");
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(
        ops[0],
        StoreOp::Delete {
            table: StoreTable::PresentityPublications,
            key: a.etag
        }
    );
    assert!(matches!(&ops[1], StoreOp::Put { key, .. } if *key == r.etag));
}

#[test]
fn rfc3903_s6_publication_limit_per_presentity_is_503_with_retry_after() {
    let mut f = Fixture {
        st: PresenceState::new(PresenceStateConfig {
            max_publications_per_presentity: 2,
            ..PresenceStateConfig::default()
        }),
        ..Fixture::new()
    };
    f.ok(Req::initial(pidf("a", "open")));
    f.advance(100);
    f.ok(Req {
        event: "dialog",
        content_type: Some(DIALOG),
        ..Req::initial(dialog_body("d"))
    });
    let r = f.refused(Req::initial(pidf("c", "open")));
    assert_eq!(r.code, 503);
    assert_eq!(
        r.retry_after,
        Some(500),
        "until the first publication expires"
    );
}

#[test]
fn rfc3903_s6_expired_publications_do_not_count_against_the_limit() {
    let mut f = Fixture {
        st: PresenceState::new(PresenceStateConfig {
            max_publications_per_presentity: 1,
            ..PresenceStateConfig::default()
        }),
        ..Fixture::new()
    };
    let a = f.ok(Req::initial(pidf("a", "open")));
    f.advance(600);
    let (res, ops) = f.send(Req::initial(pidf("b", "open")));
    assert!(res.is_ok());
    assert!(ops.contains(&StoreOp::Delete {
        table: StoreTable::PresentityPublications,
        key: a.etag
    }));
    assert_eq!(f.st.len(), 1);
}

#[test]
fn rfc3903_s4_dialog_and_dialog_sla_are_distinct_state() {
    let mut f = Fixture::new();
    f.ok(Req {
        event: "dialog;sla",
        content_type: Some(DIALOG),
        ..Req::initial(dialog_body("sla1"))
    });
    let plain =
        f.st.document(ANNA, &EventKey::dialog(), 1, None)
            .expect("dialog doc");
    let sla =
        f.st.document(ANNA, &EventKey::dialog_sla(), 1, None)
            .expect("sla doc");
    assert!(!String::from_utf8_lossy(&plain).contains("sla1"));
    assert!(String::from_utf8_lossy(&sla).contains("sla1"));
    assert_eq!(f.st.presentities(&EventKey::dialog_sla()), vec![ANNA]);
    assert!(f.st.presentities(&EventKey::dialog()).is_empty());
}

#[test]
fn rfc3903_s6_bad_input_never_panics() {
    let mut f = Fixture::new();
    let bodies: [&[u8]; 7] = [
        b"\xff\xfe",
        b"<",
        b"<presence/>",
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='x'>",
        b"<?xml version='1.0'?>",
        b"<!DOCTYPE a [<!ENTITY e '&e;&e;'>]><presence xmlns='urn:ietf:params:xml:ns:pidf'>&e;</presence>",
        b"\0\0\0",
    ];
    for body in bodies {
        for tags in [vec![], vec![String::new()], vec!["\r\n".to_string()]] {
            let _ = f.send(Req {
                if_match: tags,
                ..Req::initial(body.to_vec())
            });
        }
    }
    // Only the entity-laden one is a PIDF document (the reference is dropped, not expanded).
    assert_eq!(f.st.len(), 1);
    let doc = f.doc().expect("composed");
    assert!(xmpp_sip_gateway::core::presence::parse_pidf(doc.as_bytes()).is_ok());
    // An undeclared prefix cannot be written back correctly: refused.
    let r = f.refused(Req::initial(
        b"<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf'><q:x/></p:presence>".to_vec(),
    ));
    assert_eq!(r.code, 400);
}
