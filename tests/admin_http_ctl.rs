//! `xmpp-sip-gateway ctl` against the real HTTP driver with a test double of the engine:
//! what it prints and which exit code it returns (0 ok, 1 SIP error, 2 HTTP/connection error).

use std::sync::{Arc, Mutex};

use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xmpp_sip_gateway::core::modules::admin::{
    AdminCommand, AdminReply, HealthView, PublishOutcome, RuleView, SubscribeOutcome,
};
use xmpp_sip_gateway::core::watcher_rules::RuleAction;
use xmpp_sip_gateway::ctl::{self, AdminUrl, CtlArgs};
use xmpp_sip_gateway::io::admin_http::{serve_with, AdminCall, AdminHttpOptions};

#[derive(Parser, Debug)]
#[command(name = "ctl")]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|c| c.ctl)
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

async fn run(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let parsed = parse(&refs).expect("arguments parse");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = ctl::run_with(parsed, &mut out, &mut err);
        Run {
            code,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    })
    .await
    .unwrap()
}

fn reply_for(command: &AdminCommand) -> Option<AdminReply> {
    Some(match command {
        AdminCommand::Publish(p) if p.event.is_empty() => AdminReply::Published(PublishOutcome {
            code: 400,
            reason: "Bad event".into(),
            etag: None,
            expires: None,
        }),
        AdminCommand::Publish(_) => AdminReply::Published(PublishOutcome {
            code: 200,
            reason: "OK".into(),
            etag: Some("e.7".into()),
            expires: Some(60),
        }),
        AdminCommand::Subscribe(_) => AdminReply::Subscribed(SubscribeOutcome {
            code: 202,
            reason: "Accepted".into(),
            id: Some("sub-9".into()),
        }),
        AdminCommand::ListPublications => AdminReply::Publications(vec![]),
        AdminCommand::ListSubscriptions => AdminReply::Subscriptions(vec![]),
        AdminCommand::Health => AdminReply::Health(HealthView {
            status: "ok".into(),
            publications: 0,
            subscriptions: 0,
            notifier_dialogs: 0,
        }),
        AdminCommand::SetRule {
            presentity,
            watcher,
            action,
        } => AdminReply::Rules(vec![RuleView {
            presentity: presentity.clone(),
            watcher: watcher.clone(),
            action: action.map(|a| a.as_str()).unwrap_or("none").into(),
        }]),
        _ => AdminReply::Error {
            code: 404,
            reason: "not scripted".into(),
        },
    })
}

/// Starts the API with a fake engine; `answer` false makes the engine drop every reply (503).
async fn start(answer: bool) -> (String, Arc<Mutex<Vec<AdminCommand>>>, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (tx, mut rx) = mpsc::channel::<AdminCall>(8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_engine = seen.clone();
    tokio::spawn(async move {
        while let Some(call) = rx.recv().await {
            seen_engine.lock().unwrap().push(call.command.clone());
            if answer {
                if let Some(reply) = reply_for(&call.command) {
                    let _ = call.reply.send(reply);
                }
            }
        }
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(serve_with(
        listener,
        tx,
        shutdown.clone(),
        AdminHttpOptions::default(),
    ));
    (url, seen, shutdown)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_success_prints_pretty_json_and_exits_0() {
    let (url, _, _s) = start(true).await;
    let r = run(args(&[
        "--admin",
        &url,
        "publish",
        "--presentity",
        "sip:a@example.com",
        "--event",
        "presence",
        "--expires",
        "60",
        "--content-type",
        "application/pidf+xml",
        "--body",
        "<presence/>",
    ]))
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(
        v,
        json!({"code": 200, "reason": "OK", "etag": "e.7", "expires": 60})
    );
    assert!(r.out.contains("\n  \"code\""), "pretty printed: {}", r.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sip_error_prints_reply_and_exits_1() {
    let (url, _, _s) = start(true).await;
    let r = run(args(&[
        "--admin",
        &url,
        "publish",
        "--presentity",
        "sip:a@example.com",
        "--event",
        "",
        "--expires",
        "60",
    ]))
    .await;
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["code"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_body_file_is_sent_as_the_body() {
    let (url, seen, _s) = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.xml");
    std::fs::write(&file, "<presence entity='sip:a@example.com'/>").unwrap();
    let r = run(args(&[
        "--admin",
        &url,
        "publish",
        "--presentity",
        "sip:a@example.com",
        "--event",
        "presence",
        "--expires",
        "-1",
        "--content-type",
        "application/pidf+xml",
        "--body-file",
        file.to_str().unwrap(),
        "--etag",
        "e.6",
        "--extra-headers",
        "X-A: 1",
    ]))
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    let seen = seen.lock().unwrap();
    let AdminCommand::Publish(p) = &seen[0] else {
        panic!("expected a publish, got {:?}", seen[0]);
    };
    assert_eq!(
        p.body.as_deref(),
        Some("<presence entity='sip:a@example.com'/>")
    );
    assert_eq!(p.expires, -1);
    assert_eq!(p.etag.as_deref(), Some("e.6"));
    assert_eq!(p.extra_headers.as_deref(), Some("X-A: 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_body_file_exits_2_without_sending() {
    let (url, seen, _s) = start(true).await;
    let r = run(args(&[
        "--admin",
        &url,
        "publish",
        "--presentity",
        "sip:a@example.com",
        "--event",
        "presence",
        "--expires",
        "60",
        "--content-type",
        "text/plain",
        "--body-file",
        "/no/such/file",
    ]))
    .await;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("cannot read body file"), "{}", r.err);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_success_exits_0() {
    let (url, seen, _s) = start(true).await;
    let r = run(args(&[
        "--admin",
        &url,
        "subscribe",
        "--presentity",
        "sip:b@example.com",
        "--watcher",
        "sip:w@example.com",
        "--event",
        "presence",
        "--expires",
        "600",
    ]))
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["id"], "sub-9");
    assert!(matches!(
        seen.lock().unwrap()[0],
        AdminCommand::Subscribe(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_publications_prints_the_array_and_exits_0() {
    let (url, seen, _s) = start(true).await;
    let r = run(args(&["--admin", &url, "list", "publications"])).await;
    assert_eq!(r.code, 0);
    assert_eq!(serde_json::from_str::<Value>(&r.out).unwrap(), json!([]));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[AdminCommand::ListPublications]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_subscriptions_asks_for_subscriptions() {
    let (url, seen, _s) = start(true).await;
    let r = run(args(&["--admin", &url, "list", "subscriptions"])).await;
    assert_eq!(r.code, 0);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[AdminCommand::ListSubscriptions]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_with_status() {
    let (url, _, _s) = start(true).await;
    let r = run(args(&["--admin", &url, "health"])).await;
    assert_eq!(r.code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&r.out).unwrap()["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_status_exits_2_with_the_server_message() {
    let (url, _, _s) = start(false).await;
    let r = run(args(&["--admin", &url, "health"])).await;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("HTTP 503"), "{}", r.err);
    assert!(r.err.contains("engine stopped"), "{}", r.err);
    assert!(r.out.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_exits_2() {
    // Bind then drop to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = run(args(&[
        "--admin",
        &format!("http://127.0.0.1:{port}"),
        "health",
    ]))
    .await;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("cannot connect"), "{}", r.err);
}

#[test]
fn https_url_is_refused_with_exit_2() {
    let parsed = parse(&["--admin", "https://127.0.0.1:8560", "health"]).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(ctl::run_with(parsed, &mut out, &mut err), 2);
    assert!(String::from_utf8(err).unwrap().contains("only http://"));
}

#[test]
fn body_and_body_file_together_are_a_usage_error() {
    let e = parse(&[
        "publish",
        "--presentity",
        "sip:a@example.com",
        "--event",
        "presence",
        "--expires",
        "1",
        "--body",
        "x",
        "--body-file",
        "f",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn admin_url_defaults_to_loopback_8560() {
    // Run without XSG_ADMIN in the environment of this test binary's default.
    if std::env::var_os("XSG_ADMIN").is_some() {
        return;
    }
    let parsed = parse(&["health"]).unwrap();
    assert_eq!(parsed.admin, "http://127.0.0.1:8560");
}

#[test]
fn admin_url_parses_ipv6_port_and_prefix() {
    let u = AdminUrl::parse("http://[::1]:9000/gw/").unwrap();
    assert_eq!(u.host, "[::1]");
    assert_eq!(u.port, 9000);
    assert_eq!(u.prefix, "/gw");
    assert_eq!(AdminUrl::parse("http://localhost").unwrap().port, 80);
    assert!(AdminUrl::parse("http://host:notaport").is_err());
}

#[test]
fn chunked_response_body_is_decoded() {
    let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
    let r = ctl::parse_response(raw).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{\"a\":1}");
}

#[test]
fn truncated_response_is_an_error() {
    assert!(ctl::parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").is_err());
    assert!(ctl::parse_response(b"garbage").is_err());
}

/// The env-var fallback is only checked through clap's declaration, keeping tests free of
/// process-wide environment changes.
#[test]
fn admin_flag_reads_xsg_admin_env() {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let admin = cmd
        .get_arguments()
        .find(|a| a.get_id() == "admin")
        .expect("--admin exists");
    assert_eq!(admin.get_env(), Some(std::ffi::OsStr::new("XSG_ADMIN")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_set_sends_the_rule_and_exits_0() {
    let (url, seen, _s) = start(true).await;
    let r = run(args(&[
        "--admin",
        &url,
        "rules",
        "set",
        "--presentity",
        "sip:bob@sip.test",
        "--watcher",
        "sip:alice@xmpp.test",
        "--action",
        "allow",
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[AdminCommand::SetRule {
            presentity: "sip:bob@sip.test".into(),
            watcher: "sip:alice@xmpp.test".into(),
            action: Some(RuleAction::Allow),
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_without_auth_exits_2_with_the_refusal() {
    let (url, _, _s) = start(true).await;
    let r = run(args(&["--admin", &url, "users", "list"])).await;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("404"), "{}", r.err);
}
