//! A stanza that does not parse is bounced with the mapped error and the link stays up;
//! an error stanza is never answered (standards.md §16 case 5).

mod xmpp_fake_server;

use xmpp_fake_server::*;
use xmpp_sip_gateway::core::xmpp::stanza::{Condition, Stanza};
use xmpp_sip_gateway::io::xmpp_link::LinkEvent;

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

#[tokio::test]
async fn malformed_presence_is_bounced_and_the_link_stays_up() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);

    conn.send(
        "<presence from='anna@xmpp.example/desk' to='ben@sip.example' id='b1' type='online'/>",
    )
    .await;
    let bounce = conn.next_element().await;
    assert_eq!(bounce.name(), "presence");
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(bounce.attr("id"), Some("b1"));
    assert_eq!(bounce.attr("from"), Some("ben@sip.example"));
    assert_eq!(bounce.attr("to"), Some("anna@xmpp.example/desk"));
    let error = bounce.children().find(|c| c.name() == "error").unwrap();
    assert!(error.has_child("bad-request", STANZAS), "{bounce:?}");
    assert_eq!(
        link.next_event().await,
        LinkEvent::Bad {
            condition: Condition::BadRequest,
            reason: "unknown presence type \"online\"".into(),
            bounced: true
        }
    );

    // Still up: the next good stanza is delivered on the same connection.
    conn.send("<presence from='anna@xmpp.example/desk' to='ben@sip.example'/>")
        .await;
    assert!(matches!(
        link.next_event().await,
        LinkEvent::Stanza(Stanza::Presence(_))
    ));
    link.stop().await.unwrap();
}

#[tokio::test]
async fn iq_with_malformed_jid_is_bounced_jid_malformed() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    conn.send(
        "<iq type='get' id='q7' from='anna@xmpp.example/desk' to='b&lt;n@sip.example'>\
         <ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let bounce = conn.next_element().await;
    assert_eq!(bounce.name(), "iq");
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(bounce.attr("id"), Some("q7"));
    // The offending `to` cannot be a sender: the bounce comes from the component.
    assert_eq!(bounce.attr("from"), Some("sip.example"));
    let error = bounce.children().find(|c| c.name() == "error").unwrap();
    assert!(error.has_child("jid-malformed", STANZAS), "{bounce:?}");
    link.stop().await.unwrap();
}

/// Case 5: a malformed error stanza gets no error back; the next stanza still flows.
#[tokio::test]
async fn malformed_error_stanza_is_not_answered_case_5() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    conn.send("<presence type='error' from='anna@xmpp.example' to='bad jid@sip.example'/>")
        .await;
    assert!(matches!(
        link.next_event().await,
        LinkEvent::Bad { bounced: false, .. }
    ));
    // If an error had been written, it would be the next element instead of this one.
    link.outbound
        .send(
            Stanza::from_element(
                xmpp_sip_gateway::core::xmpp::stanza::Element::new(
                    "message",
                    "jabber:component:accept",
                )
                .with_attr("from", "ben@sip.example")
                .with_attr("to", "anna@xmpp.example")
                .with_attr("id", "marker"),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let next = conn.next_element().await;
    assert_eq!(next.attr("id"), Some("marker"));
    link.stop().await.unwrap();
}
