//! Fail fast: the very first handshake refused ends `run` with a clear error
//! (product.md, biboumi); a refusal after the link has been up is retried instead.

mod xmpp_fake_server;

use std::time::Duration;
use xmpp_fake_server::*;

use xmpp_sip_gateway::io::xmpp_link::{LinkError, LinkEvent, XmppLinkConfig};

const NOT_AUTHORIZED: &str = "<stream:error><not-authorized \
     xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";

/// Case 2: a `<not-authorized/>` stream error on the first handshake.
#[tokio::test]
async fn wrong_secret_on_first_handshake_returns_handshake_refused() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server);
    cfg.secret = "wrong".into();
    let mut link = Link::start(cfg);
    let mut conn = server.accept().await;
    conn.read_header().await;
    conn.send_header(STREAM_ID).await;
    let hs = conn.next_element().await;
    assert_ne!(hs.text(), EXPECTED_HASH);
    conn.send(NOT_AUTHORIZED).await;
    drop(conn);
    assert!(matches!(
        link.next_event().await,
        LinkEvent::FirstHandshakeRefused { reason } if reason.contains("not-authorized")
    ));
    let result = tokio::time::timeout(WAIT, link.handle)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        result,
        Err(LinkError::HandshakeRefused { ref reason, .. }) if reason.contains("not-authorized")
    ));
}

#[tokio::test]
async fn stream_closed_after_first_handshake_counts_as_refused() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept().await;
    conn.read_header().await;
    conn.send_header(STREAM_ID).await;
    conn.next_element().await;
    drop(conn);
    assert!(matches!(
        link.next_event().await,
        LinkEvent::FirstHandshakeRefused { .. }
    ));
    let result = tokio::time::timeout(WAIT, link.handle)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(LinkError::HandshakeRefused { .. })));
}

#[tokio::test]
async fn refusal_after_the_link_was_up_is_retried() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    drop(conn);
    assert!(matches!(link.next_event().await, LinkEvent::Down(_)));

    let mut conn = server.accept().await;
    conn.read_header().await;
    conn.send_header("second").await;
    conn.next_element().await;
    conn.send(NOT_AUTHORIZED).await;
    drop(conn);

    // Not fatal: reported as a failed attempt, and the link comes back.
    assert!(matches!(
        link.next_event().await,
        LinkEvent::ConnectFailed { reason, .. } if reason.contains("not-authorized")
    ));
    let conn = server.accept_authenticated().await;
    assert_eq!(link.next_event().await, LinkEvent::Up);
    drop(conn);
    link.stop().await.unwrap();
}

/// TCP failures at start (server not up yet) are retried with growing back-off, and the
/// link comes up once the server listens.
#[tokio::test]
async fn server_not_listening_at_start_is_retried_with_backoff() {
    // Bound but not listening: connects are refused until `listen`.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let mut cfg = XmppLinkConfig::new(addr.to_string(), COMPONENT, SECRET);
    cfg.backoff_min = Duration::from_millis(4);
    cfg.backoff_max = Duration::from_millis(16);
    let mut link = Link::start(cfg);
    for (attempt, base_ms) in [(0u32, 4u64), (1, 8), (2, 16), (3, 16)] {
        let LinkEvent::ConnectFailed {
            attempt: a,
            retry_in,
            ..
        } = link.next_event().await
        else {
            panic!("expected a failed attempt")
        };
        assert_eq!(a, attempt);
        let base = Duration::from_millis(base_ms);
        assert!(
            retry_in >= base / 2 && retry_in <= base,
            "attempt {a}: {retry_in:?} outside [{:?}, {base:?}]",
            base / 2
        );
    }
    let server = FakeServer {
        listener: socket.listen(16).unwrap(),
    };
    let _conn = server.accept_authenticated().await;
    assert_eq!(link.next_event_after_retries().await, LinkEvent::Up);
    link.stop().await.unwrap();
}

/// `conflict` (an old session of the component still registered) resolves by itself: it
/// is retried even on the first attempt.
#[tokio::test]
async fn conflict_on_first_handshake_is_retried() {
    let server = FakeServer::bind().await;
    let mut link = Link::start(config(&server));
    let mut conn = server.accept().await;
    conn.read_header().await;
    conn.send_header(STREAM_ID).await;
    conn.next_element().await;
    conn.send(
        "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         </stream:error></stream:stream>",
    )
    .await;
    drop(conn);
    assert!(matches!(
        link.next_event().await,
        LinkEvent::ConnectFailed { reason, .. } if reason.contains("conflict")
    ));
    let _conn = server.accept_authenticated().await;
    assert_eq!(link.next_event_after_retries().await, LinkEvent::Up);
    link.stop().await.unwrap();
}
