//! Expiry on a manual clock and persistence/restore of the presence state service
//! (RFC 3903 §4: publications expire unless refreshed; ETags survive a restart).

use std::collections::BTreeMap;
use std::time::Duration;

use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::persist::{StoreOp, StoreTable, StoredRow};
use xmpp_sip_gateway::core::presence_state::{
    Accepted, Changed, EventKey, PresenceState, PresenceStateConfig, PublishInput, STORE_OWNER,
};
use xmpp_sip_gateway::core::sip::headers::EventHeader;
use xmpp_sip_gateway::core::time::{ManualClock, Timestamp};

const ANNA: &str = "sip:anna@example.com";
const BEN: &str = "sip:ben@example.com";

fn pidf(tuple: &str, basic: &str) -> String {
    format!(
        "<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:x@example.com'>\
         <tuple id='{tuple}'><status><basic>{basic}</basic></status></tuple></presence>"
    )
}

fn dialog_body(id: &str) -> String {
    format!(
        "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='0' state='full' entity='sip:x@example.com'>\
         <dialog id='{id}'><state>confirmed</state></dialog></dialog-info>"
    )
}

struct F {
    st: PresenceState,
    ids: IdGenerator,
    clock: ManualClock,
    /// The store, as the SQLite driver would keep it.
    rows: BTreeMap<String, StoredRow>,
}

impl F {
    fn new() -> F {
        F {
            st: PresenceState::new(PresenceStateConfig::default()),
            ids: IdGenerator::seeded(3),
            clock: ManualClock::starting_at(Timestamp::from_secs(5_000_000)),
            rows: BTreeMap::new(),
        }
    }

    fn apply(&mut self, ops: Vec<StoreOp>) {
        for op in ops {
            match op {
                StoreOp::Put {
                    table,
                    key,
                    owner,
                    data,
                    ..
                } => {
                    self.rows.insert(
                        key.clone(),
                        StoredRow {
                            table,
                            key,
                            owner,
                            data,
                        },
                    );
                }
                StoreOp::Delete { key, .. } => {
                    self.rows.remove(&key);
                }
            }
        }
    }

    fn publish(
        &mut self,
        who: &str,
        event: &str,
        if_match: Option<&str>,
        expires: u32,
        body: &str,
        sender: Option<&str>,
    ) -> Accepted {
        let ev = EventHeader::parse(event).expect("event");
        let ct = PresenceState::body_type(&ev);
        let tags: Vec<String> = if_match.into_iter().map(str::to_string).collect();
        let (res, ops) = self.st.publish(
            self.clock.now(),
            &mut self.ids,
            PublishInput {
                presentity: who,
                event: &ev,
                if_match: &tags,
                expires: Some(expires),
                content_type: ct,
                body: body.as_bytes(),
                sender,
                origin: "test",
            },
        );
        self.apply(ops);
        res.expect("accepted")
    }

    fn timeout(&mut self) -> Vec<Changed> {
        let (changed, ops) = self.st.handle_timeout(self.clock.now());
        self.apply(ops);
        changed
    }

    fn restarted(&self) -> PresenceState {
        let mut fresh = PresenceState::new(PresenceStateConfig::default());
        let rows: Vec<StoredRow> = self.rows.values().cloned().collect();
        assert_eq!(fresh.restore(&rows), rows.len());
        fresh
    }

    fn advance(&mut self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn documents(st: &PresenceState) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    for who in [ANNA, BEN] {
        for ev in [
            EventKey::presence(),
            EventKey::dialog(),
            EventKey::dialog_sla(),
        ] {
            out.push(st.document(who, &ev, 7, None));
            out.push(st.document(who, &ev, 7, Some("sip:phone1@h")));
        }
    }
    out
}

#[test]
fn rfc3903_s4_publication_expires_by_itself_at_its_deadline() {
    let mut f = F::new();
    let start = f.clock.now();
    f.publish(ANNA, "presence", None, 120, &pidf("t", "open"), None);
    assert_eq!(f.st.next_deadline(), Some(start + Duration::from_secs(120)));
    f.advance(119);
    assert!(f.timeout().is_empty(), "not yet");
    assert_eq!(f.st.len(), 1);
    f.advance(1);
    assert_eq!(
        f.timeout(),
        vec![Changed {
            presentity: ANNA.into(),
            event: EventKey::presence()
        }]
    );
    assert!(f.st.is_empty());
    assert!(f.rows.is_empty(), "its row was deleted");
    assert_eq!(f.st.next_deadline(), None);
    assert_eq!(f.st.document(ANNA, &EventKey::presence(), 0, None), None);
}

#[test]
fn rfc3903_s4_refresh_moves_the_deadline() {
    let mut f = F::new();
    let a = f.publish(ANNA, "presence", None, 120, &pidf("t", "open"), None);
    f.advance(100);
    f.publish(ANNA, "presence", Some(&a.etag), 120, "", None);
    f.advance(100);
    assert!(f.timeout().is_empty());
    assert_eq!(f.st.len(), 1);
    assert_eq!(f.st.publication_views(f.clock.now())[0].expires_in, 20);
}

#[test]
fn rfc3903_s4_expiry_of_a_fully_shadowed_publication_changes_nothing() {
    let mut f = F::new();
    f.publish(ANNA, "presence", None, 60, &pidf("t", "closed"), None);
    f.publish(ANNA, "presence", None, 600, &pidf("t", "open"), None);
    f.advance(60);
    assert!(f.timeout().is_empty(), "the document is the same");
    assert_eq!(f.st.len(), 1);
}

#[test]
fn rfc3903_s4_expiry_reports_each_changed_presentity_and_event() {
    let mut f = F::new();
    f.publish(BEN, "dialog", None, 60, &dialog_body("d"), None);
    f.publish(ANNA, "presence", None, 60, &pidf("t", "open"), None);
    f.advance(60);
    assert_eq!(
        f.timeout(),
        vec![
            Changed {
                presentity: ANNA.into(),
                event: EventKey::presence()
            },
            Changed {
                presentity: BEN.into(),
                event: EventKey::dialog()
            },
        ]
    );
}

#[test]
fn rfc3903_s4_put_row_carries_owner_subject_expiry_and_the_body_as_text() {
    let mut f = F::new();
    let ev = EventHeader::parse("presence").expect("event");
    let body = pidf("t", "open");
    let (res, ops) = f.st.publish(
        f.clock.now(),
        &mut f.ids,
        PublishInput {
            presentity: ANNA,
            event: &ev,
            if_match: &[],
            expires: Some(300),
            content_type: Some("application/pidf+xml"),
            body: body.as_bytes(),
            sender: None,
            origin: "sip",
        },
    );
    let a = res.expect("ok");
    let [StoreOp::Put {
        table,
        key,
        owner,
        subject,
        expires_at,
        data,
    }] = &ops[..]
    else {
        panic!("one put: {ops:?}");
    };
    assert_eq!(*table, StoreTable::PresentityPublications);
    assert_eq!(*key, a.etag);
    assert_eq!(owner, STORE_OWNER);
    assert_eq!(subject, ANNA);
    assert_eq!(*expires_at, Some(f.clock.now() + Duration::from_secs(300)));
    assert_eq!(data["body"].as_str(), Some(body.as_str()));
}

#[test]
fn rfc3903_s4_restore_rebuilds_the_same_state() {
    let mut f = F::new();
    let a1 = f.publish(ANNA, "presence", None, 600, &pidf("phone", "open"), None);
    f.advance(5);
    f.publish(ANNA, "presence", None, 900, &pidf("laptop", "closed"), None);
    f.advance(5);
    f.publish(
        ANNA,
        "presence",
        Some(&a1.etag),
        600,
        &pidf("phone", "closed"),
        None,
    );
    f.publish(
        BEN,
        "dialog;sla",
        None,
        300,
        &dialog_body("s"),
        Some("sip:phone1@h"),
    );
    f.publish(BEN, "dialog", None, 300, &dialog_body("p"), None);
    f.advance(30);
    let restored = f.restarted();
    let now = f.clock.now();
    assert_eq!(restored.publication_views(now), f.st.publication_views(now));
    assert_eq!(documents(&restored), documents(&f.st));
    assert_eq!(restored.next_deadline(), f.st.next_deadline());
    assert_eq!(restored.len(), f.st.len());
}

#[test]
fn rfc3903_s4_etags_stay_valid_after_a_restart_and_order_is_kept() {
    let mut f = F::new();
    let old = f.publish(ANNA, "presence", None, 600, &pidf("t", "closed"), None);
    f.publish(ANNA, "presence", None, 600, &pidf("t", "open"), None);
    f.st = f.restarted();
    let r = f.publish(ANNA, "presence", Some(&old.etag), 600, "", None);
    assert!(!r.changed);
    let doc =
        f.st.document(ANNA, &EventKey::presence(), 0, None)
            .expect("doc");
    assert!(
        String::from_utf8_lossy(&doc).contains("open"),
        "newest still wins"
    );
    // A new body after the restart is newer than anything restored.
    f.publish(
        ANNA,
        "presence",
        Some(&r.etag),
        600,
        &pidf("t", "closed"),
        None,
    );
    let doc =
        f.st.document(ANNA, &EventKey::presence(), 0, None)
            .expect("doc");
    assert!(String::from_utf8_lossy(&doc).contains("closed"));
}

#[test]
fn rfc3903_s4_rows_that_expired_while_down_are_dropped_at_the_next_timeout() {
    let mut f = F::new();
    f.publish(ANNA, "presence", None, 60, &pidf("t", "open"), None);
    f.advance(3600);
    f.st = f.restarted();
    assert_eq!(f.st.len(), 1);
    assert_eq!(f.timeout().len(), 1);
    assert!(f.st.is_empty());
    assert!(f.rows.is_empty());
}

#[test]
fn rfc3903_s4_restore_skips_foreign_and_undecodable_rows() {
    let mut st = PresenceState::new(PresenceStateConfig::default());
    let rows = vec![
        StoredRow {
            table: StoreTable::Publications,
            key: "k1".into(),
            owner: STORE_OWNER.into(),
            data: serde_json::json!({}),
        },
        StoredRow {
            table: StoreTable::PresentityPublications,
            key: "k2".into(),
            owner: "someone_else".into(),
            data: serde_json::json!({}),
        },
        StoredRow {
            table: StoreTable::PresentityPublications,
            key: "k3".into(),
            owner: STORE_OWNER.into(),
            data: serde_json::json!({"garbage": true}),
        },
        StoredRow {
            table: StoreTable::PresentityPublications,
            key: "k4".into(),
            owner: STORE_OWNER.into(),
            data: serde_json::json!({
                "presentity": ANNA, "event": "presence", "etag": "k4",
                "content_type": "application/pidf+xml", "body": "<not-pidf/>",
                "expires": 60, "expires_at": 1, "body_seq": 1, "origin": "sip", "sender": null
            }),
        },
    ];
    assert_eq!(st.restore(&rows), 0);
    assert!(st.is_empty());
}

#[test]
fn rfc3903_s4_publication_views_show_origin_sender_and_time_left() {
    let mut f = F::new();
    let a = f.publish(
        BEN,
        "dialog;sla",
        None,
        300,
        &dialog_body("s"),
        Some("sip:phone1@h"),
    );
    f.advance(100);
    let views = f.st.publication_views(f.clock.now());
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!(
        (v.presentity.as_str(), v.event.as_str(), v.etag.as_str()),
        (BEN, "dialog;sla", a.etag.as_str())
    );
    assert_eq!(v.expires_in, 200);
    assert_eq!(v.content_type, "application/dialog-info+xml");
    assert_eq!(v.origin, "test");
    assert_eq!(v.sender.as_deref(), Some("sip:phone1@h"));
    let json = serde_json::to_value(v).expect("serialises");
    assert_eq!(json["expires_in"], 200);
}
