//! Keepalive: an idle stream gets a XEP-0199 ping; an answered ping keeps the link, an
//! unanswered one ends it and triggers a reconnect.

mod xmpp_fake_server;

use std::time::Duration;

use xmpp_fake_server::*;
use xmpp_sip_gateway::io::xmpp_link::LinkEvent;

#[tokio::test]
async fn idle_stream_gets_a_ping_and_the_answer_is_consumed() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server);
    cfg.keepalive = Duration::from_millis(50);
    cfg.ping_timeout = Duration::from_secs(10);
    let mut link = Link::start(cfg);
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);

    let ping = conn.next_element().await;
    assert_eq!(ping.name(), "iq");
    assert_eq!(ping.attr("type"), Some("get"));
    assert_eq!(ping.attr("from"), Some(COMPONENT));
    assert_eq!(ping.attr("to"), Some("example"));
    assert!(ping.has_child("ping", "urn:xmpp:ping"));
    let id = ping.attr("id").unwrap().to_string();
    conn.send(&format!(
        "<iq type='result' id='{id}' from='example' to='{COMPONENT}'/>"
    ))
    .await;
    // The answer is not forwarded; the next idle period brings the next ping.
    let second = conn.next_element().await;
    assert!(second.has_child("ping", "urn:xmpp:ping"));
    assert_ne!(second.attr("id"), Some(id.as_str()));
    conn.send("<presence from='anna@xmpp.example' to='ben@sip.example'/>")
        .await;
    assert!(matches!(link.next_event().await, LinkEvent::Stanza(_)));
    link.stop().await.unwrap();
}

#[tokio::test]
async fn unanswered_ping_ends_the_link_and_it_reconnects() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server);
    cfg.keepalive = Duration::from_millis(50);
    cfg.ping_timeout = Duration::from_millis(100);
    let mut link = Link::start(cfg);
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    let ping = conn.next_element().await;
    assert!(ping.has_child("ping", "urn:xmpp:ping"));
    // Say nothing: the link must give up on this connection.
    assert!(matches!(link.next_event().await, LinkEvent::Down(_)));
    let _conn = server.accept_authenticated().await;
    assert_eq!(link.next_event_after_retries().await, LinkEvent::Up);
    link.stop().await.unwrap();
}
