//! The component link authenticates with the XEP-0114 handshake and then moves stanzas
//! both ways (standards.md §16 cases 1 and 2).

mod xmpp_fake_server;

use xmpp_fake_server::*;
use xmpp_sip_gateway::core::xmpp::address::JidParts;
use xmpp_sip_gateway::core::xmpp::stanza::{Presence, PresenceType, Stanza};
use xmpp_sip_gateway::io::xmpp_link::LinkEvent;

/// Case 1: header to the component name in jabber:component:accept, then the SHA-1 hash.
#[tokio::test]
async fn link_sends_header_to_component_name_and_case_1_handshake() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept().await;
    let header = conn.read_header().await;
    assert!(
        header.contains("to='sip.example'") || header.contains("to=\"sip.example\""),
        "{header}"
    );
    assert!(header.contains("jabber:component:accept"), "{header}");
    conn.send_header(STREAM_ID).await;
    let hs = conn.next_element().await;
    assert_eq!(hs.name(), "handshake");
    assert_eq!(hs.ns(), "jabber:component:accept");
    assert_eq!(hs.text(), EXPECTED_HASH);
    conn.send("<handshake/>").await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    link.stop().await.unwrap();
}

/// Case 2: after `<handshake/>`, inbound stanzas reach the engine as typed stanzas.
#[tokio::test]
async fn inbound_presence_is_delivered_after_handshake() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    conn.send(
        "<presence from='anna@xmpp.example/desk' to='ben@sip.example'>\
         <show>away</show><status>lunch</status></presence>",
    )
    .await;
    let LinkEvent::Stanza(Stanza::Presence(p)) = link.next_event().await else {
        panic!("expected a presence")
    };
    assert_eq!(p.from.to_string(), "anna@xmpp.example/desk");
    assert_eq!(p.statuses, vec![(None, "lunch".to_string())]);
    link.stop().await.unwrap();
}

#[tokio::test]
async fn outbound_stanza_is_written_on_the_stream() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    let presence = Presence::new(
        JidParts::parse("ben@sip.example/ph7").unwrap(),
        JidParts::parse("anna@xmpp.example").unwrap(),
        PresenceType::Subscribed,
    );
    link.outbound
        .send(Stanza::Presence(presence))
        .await
        .unwrap();
    let el = conn.next_element().await;
    assert_eq!(el.name(), "presence");
    assert_eq!(el.ns(), "jabber:component:accept");
    assert_eq!(el.attr("type"), Some("subscribed"));
    assert_eq!(el.attr("from"), Some("ben@sip.example/ph7"));
    assert_eq!(el.attr("to"), Some("anna@xmpp.example"));
    link.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_the_stream_with_a_footer() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    link.shutdown.cancel();
    let rest = conn.until_closed().await;
    assert!(
        rest.contains(":stream>") || rest.contains("</stream"),
        "{rest:?}"
    );
    link.stop().await.unwrap();
}
