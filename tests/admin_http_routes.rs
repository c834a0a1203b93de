//! The management API's HTTP driver on 127.0.0.1:0 against a test double of the engine side
//! (the admin module's semantics have their own tests in the core). anchors.md §1.4.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xmpp_sip_gateway::core::modules::admin::{
    AdminCommand, AdminReply, BlaLineView, BlaPhoneView, HealthView, PublicationView,
    PublishCommand, PublishOutcome, SubscribeCommand, SubscribeOutcome, SubscriptionView,
    UsrlocView,
};
use xmpp_sip_gateway::ctl::{self, AdminUrl, HttpResponse};
use xmpp_sip_gateway::io::admin_http::{serve_with, AdminCall, AdminHttpOptions};

/// How the fake engine treats a call.
enum Behaviour {
    /// Answer with the reply the function gives.
    Answer(fn(&AdminCommand) -> AdminReply),
    /// Keep the reply sender without answering (a lost reply).
    Hold,
    /// Drop the reply sender (the engine stopped mid-command).
    Drop,
}

struct Harness {
    base: AdminUrl,
    seen: Arc<Mutex<Vec<AdminCommand>>>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(behaviour: Behaviour, reply_timeout: Duration) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = mpsc::channel::<AdminCall>(8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_engine = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(call) = rx.recv().await {
            seen_engine.lock().unwrap().push(call.command.clone());
            match &behaviour {
                Behaviour::Answer(f) => {
                    let _ = call.reply.send(f(&call.command));
                }
                Behaviour::Hold => held.push(call.reply),
                Behaviour::Drop => drop(call.reply),
            }
        }
    });
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_with(
        listener,
        tx,
        shutdown.clone(),
        AdminHttpOptions { reply_timeout },
    ));
    Harness {
        base: AdminUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        seen,
        shutdown,
        server,
    }
}

async fn http(
    h: &Harness,
    method: &'static str,
    path: &'static str,
    body: Option<&str>,
) -> HttpResponse {
    let base = h.base.clone();
    let body = body.map(|b| b.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || {
        ctl::request(
            &base,
            method,
            path,
            body.as_deref(),
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap()
    .unwrap()
}

fn json_body(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

fn answer_all(command: &AdminCommand) -> AdminReply {
    match command {
        AdminCommand::Publish(p) if p.etag.as_deref() == Some("nope") => {
            AdminReply::Published(PublishOutcome {
                code: 418,
                reason: "Wrong ETag".into(),
                etag: None,
                expires: None,
            })
        }
        AdminCommand::Publish(_) => AdminReply::Published(PublishOutcome {
            code: 200,
            reason: "OK".into(),
            etag: Some("a.1".into()),
            expires: Some(3600),
        }),
        AdminCommand::Subscribe(_) => AdminReply::Subscribed(SubscribeOutcome {
            code: 202,
            reason: "Accepted".into(),
            id: Some("sub-1".into()),
        }),
        AdminCommand::ListPublications => AdminReply::Publications(vec![PublicationView {
            id: "pub-1".into(),
            presentity: "sip:alice@example.com".into(),
            event: "presence".into(),
            etag: Some("a.1".into()),
            expires_in: Some(3599),
            content_type: Some("application/pidf+xml".into()),
            body: Some("<presence/>".into()),
            owner: "admin".into(),
        }]),
        AdminCommand::ListSubscriptions => AdminReply::Subscriptions(vec![SubscriptionView {
            id: "sub-1".into(),
            presentity: "sip:bob@example.com".into(),
            watcher: "sip:watcher@example.com".into(),
            event: "presence".into(),
            state: "active".into(),
            call_id: Some("c1".into()),
            expires_in: Some(100),
            last_notify_state: Some("active;expires=100".into()),
            last_content_type: None,
            last_body: None,
            owner: "admin".into(),
        }]),
        AdminCommand::Health => AdminReply::Health(HealthView {
            status: "ok".into(),
            publications: 1,
            subscriptions: 2,
            notifier_dialogs: 3,
        }),
        AdminCommand::ListUsrloc => AdminReply::Usrloc(vec![UsrlocView {
            aor: "sip:bob@sip.test".into(),
            state: "closed".into(),
            contacts: vec!["sip:bob@192.0.2.1".into()],
            marked: false,
            removed_in: Some(12),
        }]),
        AdminCommand::ListBla => AdminReply::Bla(vec![BlaLineView {
            line: "sip:line1@sip.test".into(),
            phones: vec![BlaPhoneView {
                contact: "sip:line1@192.0.2.11".into(),
                subscription: Some("active".into()),
                dialogs: vec![("call1".into(), "early".into())],
                version: Some(3),
            }],
        }]),
        other => AdminReply::Error {
            code: 404,
            reason: format!("not scripted: {other:?}"),
        },
    }
}

#[tokio::test]
async fn usrloc_and_bla_routes_list_the_module_views() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(5)).await;
    let r = http(&h, "GET", "/usrloc", None).await;
    assert_eq!(r.status, 200);
    let v = json_body(&r);
    assert_eq!(v[0]["state"], "closed");
    assert_eq!(v[0]["removed_in"], 12);
    let r = http(&h, "GET", "/bla", None).await;
    assert_eq!(r.status, 200);
    let v = json_body(&r);
    assert_eq!(v[0]["phones"][0]["dialogs"][0][1], "early");
    assert_eq!(
        *h.seen.lock().unwrap(),
        vec![AdminCommand::ListUsrloc, AdminCommand::ListBla]
    );
}

const PUBLISH: &str = r#"{"presentity":"sip:alice@example.com","expires":3600,"event":"presence",
 "content_type":"application/pidf+xml","body":"<presence/>"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_hands_the_command_to_the_engine_and_returns_its_outcome() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(&h, "POST", "/publish", Some(PUBLISH)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        json_body(&r),
        json!({"code": 200, "reason": "OK", "etag": "a.1", "expires": 3600})
    );
    assert_eq!(
        h.seen.lock().unwrap().as_slice(),
        &[AdminCommand::Publish(PublishCommand {
            presentity: "sip:alice@example.com".into(),
            expires: 3600,
            event: "presence".into(),
            content_type: Some("application/pidf+xml".into()),
            body: Some("<presence/>".into()),
            etag: None,
            extra_headers: None,
        })]
    );
}

/// Like pua_mi's async reply: the command was carried out, the SIP code says it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sip_error_is_http_200_with_the_code_inside() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let body =
        r#"{"presentity":"sip:alice@example.com","expires":60,"event":"presence","etag":"nope"}"#;
    let r = http(&h, "POST", "/publish", Some(body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        json_body(&r),
        json!({"code": 418, "reason": "Wrong ETag", "etag": null, "expires": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_returns_code_reason_and_id() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let body = r#"{"presentity":"sip:bob@example.com","watcher":"sip:w@example.com","event":"presence","expires":600}"#;
    let r = http(&h, "POST", "/subscribe", Some(body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        json_body(&r),
        json!({"code": 202, "reason": "Accepted", "id": "sub-1"})
    );
    assert_eq!(
        h.seen.lock().unwrap().as_slice(),
        &[AdminCommand::Subscribe(SubscribeCommand {
            presentity: "sip:bob@example.com".into(),
            watcher: "sip:w@example.com".into(),
            event: "presence".into(),
            expires: 600,
        })]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_lists_the_views_as_a_json_array() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(&h, "GET", "/publications", None).await;
    assert_eq!(r.status, 200);
    let v = json_body(&r);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["id"], "pub-1");
    assert_eq!(v[0]["etag"], "a.1");
    assert_eq!(
        h.seen.lock().unwrap().as_slice(),
        &[AdminCommand::ListPublications]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lists_the_views_as_a_json_array() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(&h, "GET", "/subscriptions", None).await;
    assert_eq!(r.status, 200);
    let v = json_body(&r);
    assert_eq!(v[0]["watcher"], "sip:watcher@example.com");
    assert_eq!(v[0]["state"], "active");
    assert_eq!(
        h.seen.lock().unwrap().as_slice(),
        &[AdminCommand::ListSubscriptions]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_engine_view() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(&h, "GET", "/health", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        json_body(&r),
        json!({"status": "ok", "publications": 1, "subscriptions": 2, "notifier_dialogs": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400_with_an_error_message_and_reaches_no_engine() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(&h, "POST", "/publish", Some("{not json")).await;
    assert_eq!(r.status, 400);
    let msg = json_body(&r)["error"].as_str().unwrap().to_string();
    assert!(msg.contains("invalid request body"), "{msg}");
    assert!(h.seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_is_400_naming_the_field() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let body =
        r#"{"presentity":"sip:a@example.com","expires":60,"event":"presence","colour":"red"}"#;
    let r = http(&h, "POST", "/publish", Some(body)).await;
    assert_eq!(r.status, 400);
    let msg = json_body(&r)["error"].as_str().unwrap().to_string();
    assert!(msg.contains("colour"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_is_400() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let body = r#"{"presentity":"sip:b@example.com","watcher":"sip:w@example.com","event":"presence","expires":"soon"}"#;
    let r = http(&h, "POST", "/subscribe", Some(body)).await;
    assert_eq!(r.status, 400);
    assert!(json_body(&r)["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_field_is_400() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(
        &h,
        "POST",
        "/publish",
        Some(r#"{"presentity":"sip:a@example.com"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    let msg = json_body(&r)["error"].as_str().unwrap().to_string();
    assert!(msg.contains("expires"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_json() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    let r = http(&h, "GET", "/nowhere", None).await;
    assert_eq!(r.status, 404);
    assert!(json_body(&r)["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_reply_is_504_after_the_reply_timeout() {
    let h = start(Behaviour::Hold, Duration::from_millis(100)).await;
    let r = http(&h, "GET", "/health", None).await;
    assert_eq!(r.status, 504);
    assert!(json_body(&r)["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reply_is_503() {
    let h = start(Behaviour::Drop, Duration::from_secs(10)).await;
    let r = http(&h, "POST", "/publish", Some(PUBLISH)).await;
    assert_eq!(r.status, 503);
    assert!(json_body(&r)["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_engine_channel_is_503() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<AdminCall>(1);
    drop(rx);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve_with(
        listener,
        tx,
        shutdown.clone(),
        AdminHttpOptions::default(),
    ));
    let base = AdminUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let r = tokio::task::spawn_blocking(move || {
        ctl::request(&base, "GET", "/health", None, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, 503);
    shutdown.cancel();
}

/// With a reply that disagrees with the command the driver answers 500, not a wrong body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_reply_kind_is_500() {
    fn health_for_everything(_: &AdminCommand) -> AdminReply {
        AdminReply::Health(HealthView {
            status: "ok".into(),
            publications: 0,
            subscriptions: 0,
            notifier_dialogs: 0,
        })
    }
    let h = start(
        Behaviour::Answer(health_for_everything),
        Duration::from_secs(10),
    )
    .await;
    let r = http(&h, "POST", "/publish", Some(PUBLISH)).await;
    assert_eq!(r.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_shutdown_stops_the_server() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(10)).await;
    h.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), h.server)
        .await
        .expect("server stops")
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn rules_route_refuses_an_unknown_action_with_400() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(5)).await;
    let r = http(
        &h,
        "POST",
        "/rules",
        Some(r#"{"presentity":"sip:bob@sip.test","watcher":"sip:a@x.test","action":"maybe"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(json_body(&r)["error"].as_str().unwrap().contains("maybe"));
    assert!(
        h.seen.lock().unwrap().is_empty(),
        "never reaches the engine"
    );
}

#[tokio::test]
async fn refusals_of_site_commands_keep_their_code() {
    let h = start(Behaviour::Answer(answer_all), Duration::from_secs(5)).await;
    let r = http(&h, "GET", "/rules", None).await;
    assert_eq!(r.status, 404);
}
