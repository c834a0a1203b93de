//! Property: under arbitrary sequences of PUBLISH operations, time advances, timeouts and
//! restarts (replay every StoreOp into a table, `restore` into a fresh instance), the
//! service answers as an independent model of RFC 3903 §6 says, and `document()` equals
//! the composition of the model's live publications (newest body first). Nothing panics.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::persist::{StoreOp, StoredRow};
use xmpp_sip_gateway::core::presence::{parse_dialog_info, parse_pidf};
use xmpp_sip_gateway::core::presence_state::{
    compose_bodies, Changed, EventKey, PresenceState, PresenceStateConfig, PublishInput,
};
use xmpp_sip_gateway::core::sip::headers::EventHeader;
use xmpp_sip_gateway::core::time::Timestamp;

const WHO: [&str; 2] = ["sip:anna@example.com", "sip:ben@example.com"];
const EVENTS: [&str; 3] = ["presence", "dialog", "dialog;sla"];
const SENDERS: [&str; 2] = ["sip:p1@h", "sip:p2@h"];
const LIMIT: usize = 3;

fn pidf_bodies() -> Vec<String> {
    let ns =
        "xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' \
              xmlns:r='urn:ietf:params:xml:ns:pidf:rpid'";
    vec![
        format!("<presence {ns} entity='pres:a@b'><tuple id='t1'><status><basic>open</basic></status></tuple></presence>"),
        format!("<presence {ns} entity='pres:a@b'><tuple id='t1'><status><basic>closed</basic></status></tuple><note>busy</note></presence>"),
        format!("<presence {ns} entity='pres:a@b'><tuple id='t2'><status><basic>open</basic></status></tuple>\
                 <note>away</note><dm:person id='p1'><r:activities><r:away/></r:activities></dm:person></presence>"),
        format!("<x:presence xmlns:x='urn:ietf:params:xml:ns:pidf' xmlns:d='urn:ietf:params:xml:ns:pidf:data-model' \
                 xmlns:e='urn:example:e' entity='pres:a@b'><x:tuple id='t3'><x:status><x:basic>open</x:basic><e:f/></x:status></x:tuple>\
                 <d:person id='p2'><d:note>hi</d:note><e:mood/></d:person><d:device id='dv'><d:deviceID>urn:x</d:deviceID></d:device></x:presence>"),
    ]
}

fn dialog_bodies() -> Vec<String> {
    let d = |inner: &str| {
        format!("<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' state='full' entity='sip:a@b'>{inner}</dialog-info>")
    };
    vec![
        d("<dialog id='a'><state>early</state></dialog>"),
        d("<dialog id='a'><state>confirmed</state></dialog><dialog id='b'><state>trying</state></dialog>"),
        d(""),
        d("<dialog id='c' direction='recipient'><state>terminated</state><z:x xmlns:z='urn:z'/></dialog>"),
    ]
}

const INVALID: &[&str] = &[
    "<presence xmlns='urn:ietf:params:xml:ns:pidf'",
    "<dialog-info/>",
    "\u{0}garbage",
];

#[derive(Clone, Debug)]
enum Tag {
    None,
    Issued(usize),
    Garbage,
    Two,
}

#[derive(Clone, Debug)]
enum Body {
    None,
    Valid(usize),
    Invalid(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Publish {
        who: usize,
        event: usize,
        tag: Tag,
        expires: Option<u32>,
        body: Body,
        sender: Option<usize>,
    },
    Advance(u64),
    Timeout,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let tag = prop_oneof![
        2 => Just(Tag::None),
        4 => (0usize..64).prop_map(Tag::Issued),
        1 => Just(Tag::Garbage),
        1 => Just(Tag::Two),
    ];
    let body = prop_oneof![
        2 => Just(Body::None),
        5 => (0usize..4).prop_map(Body::Valid),
        1 => (0usize..INVALID.len()).prop_map(Body::Invalid),
    ];
    let expires = prop_oneof![
        Just(None),
        Just(Some(0u32)),
        Just(Some(30)),
        Just(Some(60)),
        Just(Some(120)),
        Just(Some(100_000)),
    ];
    prop_oneof![
        8 => (0usize..2, 0usize..3, tag, expires, body, proptest::option::of(0usize..2)).prop_map(
            |(who, event, tag, expires, body, sender)| Op::Publish { who, event, tag, expires, body, sender }
        ),
        3 => (0u64..200).prop_map(Op::Advance),
        1 => Just(Op::Timeout),
        1 => Just(Op::Restart),
    ]
}

#[derive(Clone, Debug)]
struct MPub {
    who: usize,
    event: usize,
    body: String,
    expires_at: u64,
    seq: u64,
    sender: Option<usize>,
}

/// The independent model: live publications by entity-tag.
#[derive(Default)]
struct Model {
    pubs: BTreeMap<String, MPub>,
    seq: u64,
}

impl Model {
    fn key(event: usize) -> EventKey {
        EventKey::parse(EVENTS[event]).expect("key")
    }

    fn doc(&self, who: usize, event: usize, exclude: Option<usize>) -> Option<Vec<u8>> {
        let bodies: Vec<&[u8]> = self
            .bodies(who, event, exclude)
            .into_iter()
            .map(str::as_bytes)
            .collect();
        compose_bodies(&Model::key(event), WHO[who], 5, &bodies)
    }

    /// Live bodies of one slot, newest body first.
    fn bodies(&self, who: usize, event: usize, exclude: Option<usize>) -> Vec<&str> {
        let mut live: Vec<&MPub> = self
            .pubs
            .values()
            .filter(|p| p.who == who && p.event == event)
            .filter(|p| exclude.is_none() || p.sender != exclude)
            .collect();
        live.sort_by_key(|p| std::cmp::Reverse(p.seq));
        live.into_iter().map(|p| p.body.as_str()).collect()
    }

    /// Every view of one slot: full, and without each sender.
    fn views(&self, who: usize, event: usize) -> Vec<Option<Vec<u8>>> {
        std::iter::once(None)
            .chain((0..SENDERS.len()).map(Some))
            .map(|s| self.doc(who, event, s))
            .collect()
    }
}

fn apply_ops(rows: &mut BTreeMap<String, StoredRow>, ops: Vec<StoreOp>) {
    for op in ops {
        match op {
            StoreOp::Put {
                table,
                key,
                owner,
                data,
                ..
            } => {
                rows.insert(
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
                rows.remove(&key);
            }
        }
    }
}

fn config() -> PresenceStateConfig {
    PresenceStateConfig {
        max_publications_per_presentity: LIMIT,
        ..PresenceStateConfig::default()
    }
}

/// The composition rules checked on the neutral model, independently of
/// `compose_bodies`: tuple ids (newest first, newest wins), presence notes from the newest
/// publication with notes, person id and activities from the newest that has them,
/// dialog ids (newest first, newest wins) and their states.
fn semantic_check(
    newest_first: &[&str],
    who: usize,
    event: usize,
    got: Option<&[u8]>,
) -> Result<(), TestCaseError> {
    if event == 0 {
        let docs: Vec<_> = newest_first
            .iter()
            .map(|b| parse_pidf(b.as_bytes()).expect("model bodies are valid"))
            .collect();
        let Some(got) = got else {
            prop_assert!(docs.is_empty());
            return Ok(());
        };
        let got = parse_pidf(got).expect("parses");
        prop_assert_eq!(got.entity.as_str(), WHO[who]);
        let mut want_tuples: Vec<(String, _)> = Vec::new();
        for d in &docs {
            for t in &d.tuples {
                if !want_tuples.iter().any(|(id, _)| *id == t.id) {
                    want_tuples.push((t.id.clone(), t.basic));
                }
            }
        }
        let got_tuples: Vec<(String, _)> =
            got.tuples.iter().map(|t| (t.id.clone(), t.basic)).collect();
        prop_assert_eq!(got_tuples, want_tuples);
        let want_notes: Vec<String> = docs
            .iter()
            .find(|d| !d.notes.is_empty())
            .map(|d| d.notes.iter().map(|n| n.text.clone()).collect())
            .unwrap_or_default();
        let got_notes: Vec<String> = got.notes.iter().map(|n| n.text.clone()).collect();
        prop_assert_eq!(got_notes, want_notes);
        let want_person = docs
            .iter()
            .find_map(|d| d.person.as_ref())
            .map(|p| p.id.clone());
        prop_assert_eq!(got.person.as_ref().map(|p| p.id.clone()), want_person);
        let want_acts = docs
            .iter()
            .filter_map(|d| d.person.as_ref())
            .find(|p| !p.activities.is_empty())
            .map(|p| p.activities.clone())
            .unwrap_or_default();
        prop_assert_eq!(
            got.person.map(|p| p.activities).unwrap_or_default(),
            want_acts
        );
    } else {
        let got = parse_dialog_info(got.expect("dialog documents always exist")).expect("parses");
        prop_assert_eq!(got.entity.as_str(), WHO[who]);
        let mut want: Vec<(String, &'static str)> = Vec::new();
        for b in newest_first {
            for d in parse_dialog_info(b.as_bytes()).expect("valid").dialogs {
                if !want.iter().any(|(id, _)| *id == d.id) {
                    want.push((d.id.clone(), d.state.as_str()));
                }
            }
        }
        let got: Vec<(String, &'static str)> = got
            .dialogs
            .iter()
            .map(|d| (d.id.clone(), d.state.as_str()))
            .collect();
        prop_assert_eq!(got, want);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut st = PresenceState::new(config());
    let mut ids = IdGenerator::seeded(99);
    let mut now: u64 = 1_000_000_000;
    let mut model = Model::default();
    let mut issued: Vec<String> = Vec::new();
    let mut rows: BTreeMap<String, StoredRow> = BTreeMap::new();

    for op in ops {
        match op {
            Op::Advance(s) => now += s * 1000 + 1,
            Op::Restart => {
                let mut fresh = PresenceState::new(config());
                let all: Vec<StoredRow> = rows.values().cloned().collect();
                prop_assert_eq!(fresh.restore(&all), all.len());
                st = fresh;
            }
            Op::Timeout => {
                let (changed, ops) = st.handle_timeout(Timestamp::from_millis(now));
                apply_ops(&mut rows, ops);
                let mut expect = Vec::new();
                let slots: BTreeSet<(usize, usize)> = model
                    .pubs
                    .values()
                    .filter(|p| p.expires_at <= now)
                    .map(|p| (p.who, p.event))
                    .collect();
                for (who, event) in slots {
                    let before = model.views(who, event);
                    model
                        .pubs
                        .retain(|_, p| !(p.who == who && p.event == event && p.expires_at <= now));
                    if before != model.views(who, event) {
                        expect.push(Changed {
                            presentity: WHO[who].to_string(),
                            event: Model::key(event),
                        });
                    }
                }
                expect.sort();
                prop_assert_eq!(changed, expect);
            }
            Op::Publish {
                who,
                event,
                tag,
                expires,
                body,
                sender,
            } => {
                let tags: Vec<String> = match &tag {
                    Tag::None => vec![],
                    Tag::Issued(i) if issued.is_empty() => vec![format!("none{i}")],
                    Tag::Issued(i) => vec![issued[i % issued.len()].clone()],
                    Tag::Garbage => vec!["garbage".into()],
                    Tag::Two => vec!["a".into(), "b".into()],
                };
                let text = match &body {
                    Body::None => String::new(),
                    Body::Valid(i) if event == 0 => pidf_bodies()[*i].clone(),
                    Body::Valid(i) => dialog_bodies()[*i].clone(),
                    Body::Invalid(i) => INVALID[*i].to_string(),
                };
                let ev = EventHeader::parse(EVENTS[event]).expect("event");
                let (res, ops) = st.publish(
                    Timestamp::from_millis(now),
                    &mut ids,
                    PublishInput {
                        presentity: WHO[who],
                        event: &ev,
                        if_match: &tags,
                        expires,
                        content_type: PresenceState::body_type(&ev),
                        body: text.as_bytes(),
                        sender: sender.map(|s| SENDERS[s]),
                        origin: "prop",
                    },
                );

                // The model's verdict (RFC 3903 §6, in order).
                let matched = match tags.len() {
                    0 => Ok(None),
                    1 => match model.pubs.get(&tags[0]) {
                        Some(p) if p.who == who && p.event == event && p.expires_at > now => {
                            Ok(Some(tags[0].clone()))
                        }
                        _ => Err(412),
                    },
                    _ => Err(400),
                };
                let verdict: Result<(Option<String>, u32), u16> = matched.and_then(|m| {
                    let exp = match expires {
                        None => 3600,
                        Some(0) => 0,
                        Some(e) if e < 60 => return Err(423),
                        Some(e) => e.min(3600),
                    };
                    if matches!(body, Body::None) && m.is_none() {
                        return Err(400);
                    }
                    if matches!(body, Body::Invalid(_)) {
                        return Err(400);
                    }
                    if m.is_none() && exp > 0 {
                        let live = model
                            .pubs
                            .values()
                            .filter(|p| p.who == who && p.expires_at > now)
                            .count();
                        if live >= LIMIT {
                            return Err(503);
                        }
                    }
                    Ok((m, exp))
                });

                match (verdict, res) {
                    (Err(code), Err(refusal)) => {
                        prop_assert_eq!(code, refusal.code);
                        prop_assert!(ops.is_empty());
                    }
                    (Ok((matched, exp)), Ok(acc)) => {
                        prop_assert_eq!(acc.expires, exp);
                        prop_assert!(!issued.contains(&acc.etag), "entity-tags are new");
                        let before = model.views(who, event);
                        model.pubs.retain(|_, p| {
                            !(p.who == who && p.event == event && p.expires_at <= now)
                        });
                        let old = matched.and_then(|t| model.pubs.remove(&t));
                        if exp > 0 {
                            let (body, seq) = match (&body, old) {
                                (Body::Valid(_), _) | (_, None) => {
                                    model.seq += 1;
                                    (text.clone(), model.seq)
                                }
                                (_, Some(o)) => (o.body, o.seq),
                            };
                            model.pubs.insert(
                                acc.etag.clone(),
                                MPub {
                                    who,
                                    event,
                                    body,
                                    expires_at: now + u64::from(exp) * 1000,
                                    seq,
                                    sender,
                                },
                            );
                        }
                        prop_assert_eq!(acc.changed, before != model.views(who, event));
                        issued.push(acc.etag);
                    }
                    (v, r) => prop_assert!(false, "model {:?} but service {:?}", v, r),
                }
                apply_ops(&mut rows, ops);
            }
        }

        // After every step: same publications, same deadline, same documents.
        prop_assert_eq!(st.len(), model.pubs.len());
        prop_assert_eq!(rows.len(), model.pubs.len(), "store mirrors the state");
        prop_assert_eq!(
            st.next_deadline(),
            model
                .pubs
                .values()
                .map(|p| Timestamp::from_millis(p.expires_at))
                .min()
        );
        for (who, presentity) in WHO.iter().enumerate() {
            for event in 0..EVENTS.len() {
                for exclude in [None, Some(0), Some(1)] {
                    let got = st.document(
                        presentity,
                        &Model::key(event),
                        5,
                        exclude.map(|s| SENDERS[s]),
                    );
                    let want = model.doc(who, event, exclude);
                    prop_assert_eq!(&got, &want);
                    semantic_check(
                        &model.bodies(who, event, exclude),
                        who,
                        event,
                        got.as_deref(),
                    )?;
                    if let Some(d) = got {
                        let ok = match event {
                            0 => parse_pidf(&d).is_ok(),
                            _ => parse_dialog_info(&d).is_ok_and(|i| i.version == 5),
                        };
                        prop_assert!(ok, "composed document parses");
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rfc3903_s6_service_matches_the_model_across_publishes_expiry_and_restarts(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(ops)?;
    }

    #[test]
    fn rfc3903_s6_arbitrary_bodies_and_tags_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        tag in ".{0,20}",
        ct in proptest::option::of("[a-z/+;= -]{0,30}"),
        event in 0usize..3,
        expires in proptest::option::of(any::<u32>()),
    ) {
        let mut st = PresenceState::new(PresenceStateConfig::default());
        let mut ids = IdGenerator::seeded(1);
        let ev = EventHeader::parse(EVENTS[event]).expect("event");
        let now = Timestamp::from_secs(10);
        for tags in [vec![], vec![tag.clone()]] {
            for ct in [ct.as_deref(), PresenceState::body_type(&ev)] {
                let _ = st.publish(now, &mut ids, PublishInput {
                    presentity: WHO[0], event: &ev, if_match: &tags, expires, content_type: ct,
                    body: &body, sender: None, origin: "prop",
                });
            }
        }
        if let Some(d) = st.document(WHO[0], &EventKey::parse(EVENTS[event]).expect("key"), 0, None) {
            let ok = match event {
                0 => parse_pidf(&d).is_ok(),
                _ => parse_dialog_info(&d).is_ok(),
            };
            prop_assert!(ok);
        }
        let _ = st.handle_timeout(Timestamp::from_secs(u64::from(u32::MAX)));
        prop_assert!(st.is_empty());
    }
}
