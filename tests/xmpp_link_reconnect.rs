//! Reconnect forever after a lost link, queueing outbound stanzas while down (bounded,
//! oldest dropped) and flushing them in order once the link is back.

mod xmpp_fake_server;

use xmpp_fake_server::*;
use xmpp_sip_gateway::core::xmpp::stanza::{Element, Stanza, NS_COMPONENT};
use xmpp_sip_gateway::io::xmpp_link::LinkEvent;

fn message(id: &str) -> Stanza {
    Stanza::Message(
        Element::new("message", NS_COMPONENT)
            .with_attr("from", "ben@sip.example")
            .with_attr("to", "anna@xmpp.example")
            .with_attr("id", id),
    )
}

#[tokio::test]
async fn closed_socket_reports_down_and_reconnects() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    drop(conn);
    assert!(matches!(link.next_event().await, LinkEvent::Down(_)));
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event_after_retries().await, LinkEvent::Up);
    // The new connection carries stanzas.
    conn.send("<presence from='anna@xmpp.example/desk' to='ben@sip.example'/>")
        .await;
    assert!(matches!(
        link.next_event().await,
        LinkEvent::Stanza(Stanza::Presence(_))
    ));
    link.stop().await.unwrap();
}

#[tokio::test]
async fn stanzas_sent_while_down_are_queued_and_flushed_in_order_after_reconnect() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server);
    cfg.queue_limit = 2;
    let mut link = Link::start(cfg);
    let conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    drop(conn);
    assert!(matches!(link.next_event().await, LinkEvent::Down(_)));

    // The link is down until we accept: these three wait, the oldest is dropped.
    for id in ["m1", "m2", "m3"] {
        link.outbound.send(message(id)).await.unwrap();
    }
    // Channel-buffered stanzas reach the queue during the back-off; hold the server back
    // until the link reports a failed attempt, so they are certainly queued.
    let listener_addr = server.addr();
    drop(server);
    let LinkEvent::ConnectFailed { .. } = link.next_event().await else {
        panic!("expected a failed attempt while the server is gone")
    };
    let server = FakeServer {
        listener: tokio::net::TcpListener::bind(&listener_addr).await.unwrap(),
    };
    let mut conn = server.accept_authenticated().await;
    assert_eq!(link.next_event_after_retries().await, LinkEvent::Up);
    assert_eq!(conn.next_element().await.attr("id"), Some("m2"));
    assert_eq!(conn.next_element().await.attr("id"), Some("m3"));
    link.stop().await.unwrap();
}
