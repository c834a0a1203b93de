//! Every body parser returns `Ok` or `Err` — never panics — on arbitrary bytes and on
//! randomly mutated valid documents; the version tables accept any parsed sequence.

use proptest::collection::vec;
use proptest::prelude::*;
use xmpp_sip_gateway::core::presence::dialog_info::{parse_dialog_info, DialogTable};
use xmpp_sip_gateway::core::presence::pidf::{build_pidf, parse_pidf};
use xmpp_sip_gateway::core::presence::watcherinfo::{parse_watcherinfo, WatcherTable};
use xmpp_sip_gateway::core::presence::{
    parse_body, Body, BodyError, DIALOG_INFO, PIDF, WATCHERINFO,
};

const PIDF_SEED: &str = "<?xml version='1.0' encoding='UTF-8'?>
<!-- seed --><presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model'
 xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='pres:anna@xmpp.example'>
<tuple id='ID-desk'><status><basic>open</basic><show xmlns='jabber:client'>dnd</show>
<x:foo xmlns:x='urn:x' mustUnderstand='1'><x:bar/></x:foo></status>
<dm:deviceID>urn:uuid:1</dm:deviceID><contact priority='0.039'>sip:anna@xmpp.example;gr=desk</contact>
<note xml:lang='en'>In a &amp; meeting &#233;</note><timestamp>2026-11-26T08:00:00Z</timestamp></tuple>
<tuple id='ID-phone'><status><basic>closed</basic></status><contact priority='1'>sip:anna@x</contact></tuple>
<note>doc</note>
<dm:person id='p1'><rpid:activities><rpid:away/><rpid:lunch/><rpid:other>xa</rpid:other></rpid:activities>
<rpid:user-input idle-threshold='600' last-input='2026-11-26T07:00:00Z'>idle</rpid:user-input>
<dm:note>n</dm:note><dm:timestamp>2026-11-26T08:00:00Z</dm:timestamp></dm:person>
</presence>";

const WINFO_SEED: &str = "<?xml version='1.0'?>
<watcherinfo xmlns='urn:ietf:params:xml:ns:watcherinfo' version='3' state='partial'>
<watcher-list resource='sip:anna@xmpp.example' package='presence'>
<watcher id='w1' status='pending' event='subscribe' display-name='Carl' expiration='600'
 duration-subscribed='10' xml:lang='en'>sip:carl@sip.example</watcher>
<watcher id='w2' status='terminated' event='rejected'>sip:dora@sip.example</watcher>
</watcher-list></watcherinfo>";

const DIALOG_SEED: &str = "<?xml version='1.0'?>
<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='5' state='partial' entity='sip:bob@sip.example'>
<dialog id='d1' call-id='c1' local-tag='l' remote-tag='r' direction='recipient'>
<state event='rejected' code='486'>terminated</state><duration>12</duration>
<local><identity display='Bob'>sip:bob@sip.example</identity><target uri='sip:bob@10.0.0.1'>
<param pname='x-line-id' pvalue='0'/><param pname='+sip.rendering' pval='yes'/></target></local>
<remote><identity>sip:carl@sip.example</identity></remote></dialog>
<dialog id='d2' notify-state='full'><state reason='timeout'>confirmed</state></dialog>
</dialog-info>";

/// Bytes that change XML structure when inserted.
const INTERESTING: &[u8] = b"<>/&;'\"=:!?-[] \t\r\nx#0\xff\xc3\xef\xbb\xbf";

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    /// Copies `len` bytes starting at the first index to the second index.
    Duplicate(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        3 => proptest::sample::select(INTERESTING),
        1 => any::<u8>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), any::<usize>(), 0usize..64)
            .prop_map(|(a, b, n)| Mutation::Duplicate(a, b, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(seed: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % bytes.len());
            }
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Replace(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Mutation::Duplicate(from, to, n) if !bytes.is_empty() => {
                let from = from % bytes.len();
                let end = (from + n).min(bytes.len());
                let chunk = bytes[from..end].to_vec();
                let to = to % (bytes.len() + 1);
                bytes.splice(to..to, chunk);
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            _ => {}
        }
    }
    bytes
}

/// Runs every entry point on `bytes`; only a panic can fail this.
fn exercise(bytes: &[u8]) {
    for ct in [
        Some(PIDF),
        Some(WATCHERINFO),
        Some(DIALOG_INFO),
        Some("text/plain"),
        None,
    ] {
        let _ = parse_body(ct, bytes);
    }
    if let Ok(doc) = parse_pidf(bytes) {
        // Anything we read, we can write and read again.
        let again = parse_pidf(build_pidf(&doc).as_bytes());
        assert!(again.is_ok(), "rebuilt PIDF does not parse: {again:?}");
    }
    if let Ok(doc) = parse_watcherinfo(bytes) {
        let _ = WatcherTable::new().apply(&doc);
    }
    if let Ok(doc) = parse_dialog_info(bytes) {
        let _ = DialogTable::new().apply(&doc);
    }
}

#[test]
fn seeds_are_valid_documents() {
    assert!(matches!(
        parse_body(Some(PIDF), PIDF_SEED.as_bytes()),
        Ok(Body::Pidf(_))
    ));
    assert!(matches!(
        parse_body(Some(WATCHERINFO), WINFO_SEED.as_bytes()),
        Ok(Body::Watcherinfo(_))
    ));
    assert!(matches!(
        parse_body(Some(DIALOG_INFO), DIALOG_SEED.as_bytes()),
        Ok(Body::DialogInfo(_))
    ));
}

#[test]
fn billion_laughs_doctype_is_not_expanded() {
    let body = "<?xml version='1.0'?><!DOCTYPE presence [<!ENTITY a 'aaaaaaaaaa'>\
        <!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'><!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]>\
        <presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'><note>&c;</note></presence>";
    let doc = parse_pidf(body.as_bytes()).expect("parses without expansion");
    assert_eq!(doc.notes[0].text, "");
}

#[test]
fn ten_thousand_nested_elements_are_too_large_not_a_stack_overflow() {
    let body = format!(
        "<presence xmlns='urn:ietf:params:xml:ns:pidf'>{}",
        "<x>".repeat(10_000)
    );
    assert!(matches!(
        parse_pidf(body.as_bytes()),
        Err(BodyError::TooLarge(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_markup_soup_never_panics(s in "(<|>|/|&|;|'|=|[a-z:]{1,6}|#x?[0-9a-f]{1,8}| |!--|\\?|\\[CDATA\\[|]]>){0,64}") {
        exercise(s.as_bytes());
    }

    #[test]
    fn mutated_pidf_never_panics(m in vec(mutation(), 1..8)) {
        exercise(&mutate(PIDF_SEED, &m));
    }

    #[test]
    fn mutated_watcherinfo_never_panics(m in vec(mutation(), 1..8)) {
        exercise(&mutate(WINFO_SEED, &m));
    }

    #[test]
    fn mutated_dialog_info_never_panics(m in vec(mutation(), 1..8)) {
        exercise(&mutate(DIALOG_SEED, &m));
    }

    #[test]
    fn tables_accept_any_sequence_of_mutated_documents(
        winfo in vec(vec(mutation(), 0..4), 1..6),
        dialogs in vec(vec(mutation(), 0..4), 1..6),
    ) {
        let mut wt = WatcherTable::new();
        for m in &winfo {
            if let Ok(doc) = parse_watcherinfo(&mutate(WINFO_SEED, m)) {
                let _ = wt.apply(&doc);
            }
        }
        let mut dt = DialogTable::new();
        for m in &dialogs {
            if let Ok(doc) = parse_dialog_info(&mutate(DIALOG_SEED, m)) {
                let _ = dt.apply(&doc);
            }
        }
    }
}
