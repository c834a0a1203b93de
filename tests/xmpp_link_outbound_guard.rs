//! The link never writes a stanza that breaks XEP-0114 §3 addressing: Prosody closes the
//! whole stream on a foreign `from` (`invalid-from`), so such a stanza is dropped
//! (standards.md §16 case 3, last line of defence).

mod xmpp_fake_server;

use xmpp_fake_server::*;
use xmpp_sip_gateway::core::xmpp::stanza::{Element, Stanza, NS_COMPONENT};
use xmpp_sip_gateway::io::xmpp_link::LinkEvent;

fn message(from: &str, id: &str) -> Stanza {
    Stanza::Message(
        Element::new("message", NS_COMPONENT)
            .with_attr("from", from)
            .with_attr("to", "anna@xmpp.example")
            .with_attr("id", id),
    )
}

#[tokio::test]
async fn stanza_from_outside_the_component_domain_is_not_written() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    link.outbound
        .send(message("mallory@xmpp.example", "foreign"))
        .await
        .unwrap();
    link.outbound
        .send(message("ben@sip.example", "marker"))
        .await
        .unwrap();
    assert_eq!(conn.next_element().await.attr("id"), Some("marker"));
    link.stop().await.unwrap();
}
