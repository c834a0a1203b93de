//! `publish` mode (OpenSIPS/Kamailio compatible, EPA): XMPP users' aggregated presence is
//! PUBLISHed; SIP watchers are learnt from presence.winfo (standards.md §10, §11).

mod bridge_support;
mod support;

use bridge_support::*;
use support::*;
use xmpp_sip_gateway::core::modules::bridge::SipSideMode;
use xmpp_sip_gateway::core::sip::Method;
use xmpp_sip_gateway::core::xmpp::stanza::PresenceType;

fn winfo(version: u32, state: &str, watchers: &[(&str, &str, &str)]) -> String {
    let mut w = String::new();
    for (id, status, uri) in watchers {
        w.push_str(&format!(
            "<watcher id='{id}' status='{status}' event='subscribe'>{uri}</watcher>"
        ));
    }
    format!(
        "<?xml version='1.0'?><watcherinfo xmlns='urn:ietf:params:xml:ns:watcherinfo' version='{version}' state='{state}'>\
         <watcher-list resource='sip:anna@xmpp.example' package='presence'>{w}</watcher-list></watcherinfo>"
    )
}

/// Anna comes online; the XMPP server sends her presence to two contacts.
#[test]
fn one_publish_per_user_not_per_stanza() {
    let mut h = harness(SipSideMode::Publish);
    let mut outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    outs.extend(stanza_in(
        &mut h,
        pres(
            "anna@xmpp.example/desk",
            "carl@sip.example",
            PresenceType::Available,
        ),
    ));
    let p = requests(&outs, Method::Publish);
    assert_eq!(p.len(), 1, "{outs:#?}");
    assert_eq!(p[0].uri, ANNA_URI);
    assert!(!p[0].body.is_empty());
    assert_eq!(header(&p[0], "Event"), Some("presence"));
}

/// The last resource going unavailable removes the publication (Expires: 0).
#[test]
fn last_resource_unavailable_removes_the_publication() {
    let mut h = harness(SipSideMode::Publish);
    let outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    let publish = one_request(&outs, Method::Publish);
    h.answer(&publish, 200, |r| {
        r.headers.push("SIP-ETag", "e1");
        r.headers.push("Expires", "3600");
    });
    let outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Unavailable),
    );
    let remove = one_request(&outs, Method::Publish);
    assert_eq!(header(&remove, "Expires"), Some("0"));
    assert_eq!(header(&remove, "SIP-If-Match"), Some("e1"));
    assert!(remove.body.is_empty());
}

/// Each pending SIP watcher becomes exactly one XMPP subscription request, however often
/// the presence server repeats the full state (the anchors send one per NOTIFY).
#[test]
fn pending_winfo_watcher_becomes_exactly_one_xmpp_subscribe() {
    let mut h = harness(SipSideMode::Publish);
    let outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    let sub = one_request(&outs, Method::Subscribe);
    assert_eq!(header(&sub, "Event"), Some("presence.winfo"));
    h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
    let body = winfo(0, "full", &[("w1", "pending", "sip:carl@sip.example")]);
    let mut n = h.notify(&sub, "ps1", 1, "active;expires=3600", Some(&body));
    n.headers.set("Content-Type", "application/watcherinfo+xml");
    let outs = h.peer_request(n);
    let s = of_kind(&outs, PresenceType::Subscribe);
    assert_eq!(s.len(), 1, "{outs:#?}");
    assert_eq!(s[0].from.to_string(), "carl@sip.example");
    assert_eq!(s[0].to.to_string(), ANNA);
    let body = winfo(1, "full", &[("w1", "pending", "sip:carl@sip.example")]);
    let mut n = h.notify(&sub, "ps1", 2, "active;expires=3600", Some(&body));
    n.headers.set("Content-Type", "application/watcherinfo+xml");
    assert!(
        of_kind(&h.peer_request(n), PresenceType::Subscribe).is_empty(),
        "no duplicate request"
    );
}

/// A watcher that went away and comes back is asked again (counts stay right).
#[test]
fn watcher_that_leaves_and_returns_is_asked_again() {
    let mut h = harness(SipSideMode::Publish);
    let outs = stanza_in(
        &mut h,
        pres("anna@xmpp.example/desk", BEN, PresenceType::Available),
    );
    let sub = one_request(&outs, Method::Subscribe);
    h.answer(&sub, 200, |r| r.headers.push("Expires", "3600"));
    let mut seq = 0;
    let mut send = |h: &mut support::Harness, state: &str, status: &str| {
        seq += 1;
        let body = winfo(seq - 1, state, &[("w1", status, "sip:carl@sip.example")]);
        let mut n = h.notify(&sub, "ps1", seq, "active;expires=3600", Some(&body));
        n.headers.set("Content-Type", "application/watcherinfo+xml");
        of_kind(&h.peer_request(n), PresenceType::Subscribe).len()
    };
    assert_eq!(send(&mut h, "full", "pending"), 1);
    assert_eq!(send(&mut h, "partial", "terminated"), 0);
    assert_eq!(send(&mut h, "partial", "pending"), 1);
}
