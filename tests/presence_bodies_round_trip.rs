//! parse(build(doc)) == doc for generated PIDF, watcherinfo and dialog-info documents.
//!
//! The generators produce what the parsers can represent: text the parsers trim (ids,
//! notes, URIs) is generated without surrounding XML white space, `Activity::Lunch` is
//! left out (it is written as `meal`), and `Other` tokens never spell a known value.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use xmpp_sip_gateway::core::presence::dialog_info::{
    build_dialog_info, parse_dialog_info, Dialog, DialogInfo, DialogState, Direction, Participant,
    StateEvent,
};
use xmpp_sip_gateway::core::presence::pidf::{build_pidf, parse_pidf};
use xmpp_sip_gateway::core::presence::watcherinfo::{
    build_watcherinfo, parse_watcherinfo, Watcher, WatcherEvent, WatcherInfo, WatcherList,
    WatcherStatus,
};
use xmpp_sip_gateway::core::presence::{
    Activity, Basic, Contact, DocState, Note, Person, PresenceDoc, Show, Tuple, UserInput,
};

const XML_WS: &[char] = &[' ', '\t', '\r', '\n'];

/// Any text, markup characters, quotes, white space and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 &<>'\"=;:/@.\\-\t\r\n\u{e9}\u{fc}\u{4e2d}\u{1f600}]{0,16}"
}

/// Text as the parsers hand back trimmed values.
fn trimmed() -> impl Strategy<Value = String> {
    text().prop_map(|s| s.trim_matches(XML_WS).to_string())
}

fn nonempty_trimmed() -> impl Strategy<Value = String> {
    trimmed().prop_filter("non-empty", |s| !s.is_empty())
}

fn note() -> impl Strategy<Value = Note> {
    (option::of(nonempty_trimmed()), trimmed()).prop_map(|(lang, text)| Note { lang, text })
}

fn basic() -> impl Strategy<Value = Basic> {
    prop_oneof![Just(Basic::Open), Just(Basic::Closed)]
}

fn show() -> impl Strategy<Value = Show> {
    prop_oneof![
        Just(Show::Away),
        Just(Show::Chat),
        Just(Show::Dnd),
        Just(Show::Xa)
    ]
}

fn contact() -> impl Strategy<Value = Contact> {
    (trimmed(), option::of(0u16..=1000)).prop_map(|(uri, priority_milli)| Contact {
        uri,
        priority_milli,
    })
}

fn tuple() -> impl Strategy<Value = Tuple> {
    (
        trimmed(),
        option::of(basic()),
        option::of(show()),
        option::of(contact()),
        vec(note(), 0..3),
        option::of(nonempty_trimmed()),
        option::of(nonempty_trimmed()),
    )
        .prop_map(
            |(id, basic, show, contact, notes, timestamp, device_id)| Tuple {
                id,
                basic,
                show,
                contact,
                notes,
                timestamp,
                device_id,
            },
        )
}

fn activity() -> impl Strategy<Value = Activity> {
    let named = prop_oneof![
        Just(Activity::Appointment),
        Just(Activity::Away),
        Just(Activity::Breakfast),
        Just(Activity::Busy),
        Just(Activity::Dinner),
        Just(Activity::Holiday),
        Just(Activity::InTransit),
        Just(Activity::LookingForWork),
        Just(Activity::Meal),
        Just(Activity::Meeting),
        Just(Activity::OnThePhone),
        Just(Activity::Performance),
        Just(Activity::PermanentAbsence),
        Just(Activity::Playing),
        Just(Activity::Presentation),
        Just(Activity::Shopping),
        Just(Activity::Sleeping),
        Just(Activity::Spectator),
        Just(Activity::Steering),
        Just(Activity::Travel),
        Just(Activity::Tv),
        Just(Activity::Unknown),
        Just(Activity::Vacation),
        Just(Activity::Working),
        Just(Activity::Worship),
    ];
    prop_oneof![4 => named, 1 => trimmed().prop_map(Activity::Other)]
}

fn person() -> impl Strategy<Value = Person> {
    (
        trimmed(),
        vec(activity(), 0..4),
        option::of((
            any::<bool>(),
            option::of(any::<u32>()),
            option::of(nonempty_trimmed()),
        )),
        vec(note(), 0..3),
        option::of(nonempty_trimmed()),
    )
        .prop_map(|(id, activities, ui, notes, timestamp)| Person {
            id,
            activities,
            user_input: ui.map(|(idle, idle_threshold, last_input)| UserInput {
                idle,
                idle_threshold,
                last_input,
            }),
            notes,
            timestamp,
        })
}

fn presence_doc() -> impl Strategy<Value = PresenceDoc> {
    (
        trimmed(),
        vec(tuple(), 0..4),
        option::of(person()),
        vec(note(), 0..3),
    )
        .prop_map(|(entity, tuples, person, notes)| PresenceDoc {
            entity,
            tuples,
            person,
            notes,
        })
}

fn doc_state() -> impl Strategy<Value = DocState> {
    prop_oneof![Just(DocState::Full), Just(DocState::Partial)]
}

fn watcher_event() -> impl Strategy<Value = WatcherEvent> {
    let known = prop_oneof![
        Just(WatcherEvent::Subscribe),
        Just(WatcherEvent::Approved),
        Just(WatcherEvent::Deactivated),
        Just(WatcherEvent::Probation),
        Just(WatcherEvent::Rejected),
        Just(WatcherEvent::Timeout),
        Just(WatcherEvent::Giveup),
        Just(WatcherEvent::Noresource),
    ];
    let other = trimmed()
        .prop_filter("not a known event", |s| {
            !matches!(
                WatcherEvent::parse(s),
                WatcherEvent::Subscribe
                    | WatcherEvent::Approved
                    | WatcherEvent::Deactivated
                    | WatcherEvent::Probation
                    | WatcherEvent::Rejected
                    | WatcherEvent::Timeout
                    | WatcherEvent::Giveup
                    | WatcherEvent::Noresource
            )
        })
        .prop_map(WatcherEvent::Other);
    prop_oneof![4 => known, 1 => other]
}

fn watcher() -> impl Strategy<Value = Watcher> {
    (
        nonempty_trimmed(),
        prop_oneof![
            Just(WatcherStatus::Pending),
            Just(WatcherStatus::Active),
            Just(WatcherStatus::Waiting),
            Just(WatcherStatus::Terminated)
        ],
        watcher_event(),
        trimmed(),
        option::of(text()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(text()),
    )
        .prop_map(
            |(id, status, event, uri, display_name, expiration, duration_subscribed, lang)| {
                Watcher {
                    id,
                    status,
                    event,
                    uri,
                    display_name,
                    expiration,
                    duration_subscribed,
                    lang,
                }
            },
        )
}

fn watcher_info() -> impl Strategy<Value = WatcherInfo> {
    (
        any::<u32>(),
        doc_state(),
        vec(
            (trimmed(), trimmed(), vec(watcher(), 0..4)).prop_map(
                |(resource, package, watchers)| WatcherList {
                    resource,
                    package,
                    watchers,
                },
            ),
            0..3,
        ),
    )
        .prop_map(|(version, state, lists)| WatcherInfo {
            version,
            state,
            lists,
        })
}

fn state_event() -> impl Strategy<Value = StateEvent> {
    let known = prop_oneof![
        Just(StateEvent::Cancelled),
        Just(StateEvent::Rejected),
        Just(StateEvent::Replaced),
        Just(StateEvent::LocalBye),
        Just(StateEvent::RemoteBye),
        Just(StateEvent::Error),
        Just(StateEvent::Timeout),
    ];
    let other = trimmed()
        .prop_filter("not a known event", |s| {
            matches!(StateEvent::parse(s), StateEvent::Other(_))
        })
        .prop_map(StateEvent::Other);
    prop_oneof![4 => known, 1 => other]
}

fn participant() -> impl Strategy<Value = Participant> {
    (
        option::of((nonempty_trimmed(), option::of(text()))),
        option::of((trimmed(), vec((text(), text()), 0..3))),
    )
        .prop_map(|(identity, target)| {
            let (identity, identity_display) = match identity {
                Some((i, d)) => (Some(i), d),
                None => (None, None),
            };
            let (target_uri, params) = match target {
                Some((u, p)) => (Some(u), p),
                None => (None, Vec::new()),
            };
            Participant {
                identity,
                identity_display,
                target_uri,
                params,
            }
        })
}

fn dialog() -> impl Strategy<Value = Dialog> {
    (
        (
            nonempty_trimmed(),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(prop_oneof![
                Just(Direction::Initiator),
                Just(Direction::Recipient)
            ]),
        ),
        (
            prop_oneof![
                Just(DialogState::Trying),
                Just(DialogState::Proceeding),
                Just(DialogState::Early),
                Just(DialogState::Confirmed),
                Just(DialogState::Terminated)
            ],
            option::of(state_event()),
            option::of(100u16..=699),
            option::of(any::<u32>()),
            option::of(participant()),
            option::of(participant()),
        ),
    )
        .prop_map(
            |(
                (id, call_id, local_tag, remote_tag, direction),
                (state, state_event, state_code, duration, local, remote),
            )| Dialog {
                id,
                call_id,
                local_tag,
                remote_tag,
                direction,
                state,
                state_event,
                state_code,
                duration,
                local,
                remote,
            },
        )
}

fn dialog_info() -> impl Strategy<Value = DialogInfo> {
    (any::<u32>(), doc_state(), trimmed(), vec(dialog(), 0..4)).prop_map(
        |(version, state, entity, dialogs)| DialogInfo {
            version,
            state,
            entity,
            dialogs,
        },
    )
}

proptest! {
    #[test]
    fn pidf_build_then_parse_gives_the_document_back(doc in presence_doc()) {
        let xml = build_pidf(&doc);
        prop_assert_eq!(parse_pidf(xml.as_bytes()).expect("built PIDF parses"), doc, "{}", xml);
    }

    #[test]
    fn watcherinfo_build_then_parse_gives_the_document_back(doc in watcher_info()) {
        let xml = build_watcherinfo(&doc);
        prop_assert_eq!(parse_watcherinfo(xml.as_bytes()).expect("built watcherinfo parses"), doc, "{}", xml);
    }

    #[test]
    fn dialog_info_build_then_parse_gives_the_document_back(doc in dialog_info()) {
        let xml = build_dialog_info(&doc);
        prop_assert_eq!(parse_dialog_info(xml.as_bytes()).expect("built dialog-info parses"), doc, "{}", xml);
    }
}
