//! HTTP management API (axum), the gateway's `pua_mi` (anchors.md §1.4). Owner: io-admin.
//!
//! Routes:
//!
//! | route                 | body                 | 200 answer                               |
//! |-----------------------|----------------------|------------------------------------------|
//! | `POST /publish`       | [`PublishCommand`]   | [`PublishOutcome`] `{code, reason, etag, expires}` |
//! | `POST /subscribe`     | [`SubscribeCommand`] | [`SubscribeOutcome`] `{code, reason, id}` |
//! | `GET /publications`   |                      | `[PublicationView]`                      |
//! | `GET /subscriptions`  |                      | `[SubscriptionView]`                     |
//! | `GET /health`         |                      | [`HealthView`]                           |
//!
//! HTTP status: 200 when the engine carried the command out, even if the SIP code inside is
//! an error (pua_mi's async reply reports "code reason" the same way); 400 with
//! `{"error": message}` when the request body is not valid JSON, has unknown fields or wrong
//! types; 503 when the engine is gone; 504 when no reply came within the reply timeout
//! (default 40 s, longer than Timer F's 32 s so a PUBLISH that times out in SIP still gets
//! its 408 through). The request's Content-Type is not checked, so `curl -d` works as is.
//!
//! Semantic checks (empty event, body without content type, bad URI, unknown ETag) belong
//! to the admin module in the core, which answers them with SIP-style codes inside a 200.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::core::engine::{AdminRequestId, Input};
use crate::core::modules::admin::{AdminCommand, AdminReply, PublishCommand, SubscribeCommand};

/// Default address of the management API (loopback only by default: it has no auth).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8560";

/// Default wait for the engine's reply; above Timer F (64·T1 = 32 s, RFC 3261 §17.1.2.2).
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(40);

/// One operator command handed to the daemon. The daemon assigns an
/// `engine::AdminRequestId`, feeds `Input::Admin`, and sends the `Output::AdminReply`
/// with that id into `reply`. Dropping `reply` unanswered makes the HTTP answer 503.
#[derive(Debug)]
pub struct AdminCall {
    pub command: AdminCommand,
    pub reply: oneshot::Sender<AdminReply>,
}

/// The daemon's side of admin calls: assigns each [`AdminCall`] an [`AdminRequestId`], turns
/// it into `Input::Admin`, and routes `Output::AdminReply` back to the waiting request.
///
/// ```text
/// Some(call) = admin_rx.recv()          => engine.handle_input(now, pending.register(call))
/// Output::AdminReply { id, reply }      => pending.complete(id, reply)
/// ```
#[derive(Debug, Default)]
pub struct PendingAdmin {
    next_id: u64,
    waiting: HashMap<AdminRequestId, oneshot::Sender<AdminReply>>,
}

impl PendingAdmin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `call.reply` under a fresh id and returns the input to hand to the engine.
    /// Also forgets calls whose HTTP request has already given up (timed out).
    pub fn register(&mut self, call: AdminCall) -> Input {
        self.waiting.retain(|_, reply| !reply.is_closed());
        self.next_id = self.next_id.wrapping_add(1);
        let id = AdminRequestId(self.next_id);
        self.waiting.insert(id, call.reply);
        Input::Admin {
            id,
            command: call.command,
        }
    }

    /// Delivers the engine's reply. Returns false when nobody waits for `id` any more (the
    /// HTTP request timed out, or the id is unknown); the reply is then dropped with a log.
    pub fn complete(&mut self, id: AdminRequestId, reply: AdminReply) -> bool {
        match self.waiting.remove(&id) {
            Some(tx) => {
                let delivered = tx.send(reply).is_ok();
                if !delivered {
                    tracing::debug!(id = id.0, "admin reply after the HTTP request gave up");
                }
                delivered
            }
            None => {
                tracing::warn!(id = id.0, "admin reply for an unknown request");
                false
            }
        }
    }

    /// How many calls wait for a reply.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Settings of the HTTP driver.
#[derive(Clone, Debug)]
pub struct AdminHttpOptions {
    /// How long a request waits for the engine's reply before answering 504.
    pub reply_timeout: Duration,
}

impl Default for AdminHttpOptions {
    fn default() -> Self {
        AdminHttpOptions {
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }
}

#[derive(Clone)]
struct AppState {
    commands: mpsc::Sender<AdminCall>,
    options: Arc<AdminHttpOptions>,
}

/// Serves the management API on `listener` until `shutdown` is cancelled, with the default
/// options. Returns when the server has stopped (in-flight requests finish first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    commands: mpsc::Sender<AdminCall>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, commands, shutdown, AdminHttpOptions::default()).await
}

/// [`serve`] with explicit options (the reply timeout).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    commands: mpsc::Sender<AdminCall>,
    shutdown: CancellationToken,
    options: AdminHttpOptions,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "management API listening");
    }
    axum::serve(listener, router(commands, options))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The routes, for embedding in another server or testing without a socket.
pub fn router(commands: mpsc::Sender<AdminCall>, options: AdminHttpOptions) -> Router {
    let state = AppState {
        commands,
        options: Arc::new(options),
    };
    Router::new()
        .route("/publish", post(publish))
        .route("/subscribe", post(subscribe))
        .route("/publications", get(publications))
        .route("/subscriptions", get(subscriptions))
        .route("/health", get(health))
        .route("/rules", get(list_rules).post(set_rule))
        .route("/watchers", get(watchers))
        .route("/agent/publications", get(agent_publications))
        .route("/bindings", get(bindings))
        .route("/usrloc", get(usrloc))
        .route("/bla", get(bla))
        .route("/users", get(list_users).post(add_user))
        .route("/users/remove", post(remove_user))
        .fallback(not_found)
        .with_state(state)
}

/// An HTTP-level failure, answered as `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Parses the body ourselves so every failure is a 400 with serde's message (axum's `Json`
/// answers 415/422 in plain text, which `ctl` and scripts would have to special-case).
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        tracing::debug!(error = %e, "admin request rejected");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

/// Hands `command` to the engine and waits for its reply.
async fn call(state: &AppState, command: AdminCommand) -> Result<AdminReply, ApiError> {
    let (tx, rx) = oneshot::channel();
    let timeout = state.options.reply_timeout;
    let exchange = async {
        state
            .commands
            .send(AdminCall { command, reply: tx })
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine is not running"))?;
        rx.await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine stopped before replying",
            )
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(?timeout, "admin command got no reply in time");
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no reply from the engine within {} s",
                    timeout.as_secs_f64()
                ),
            ))
        }
    }
}

fn unexpected(reply: &AdminReply) -> ApiError {
    tracing::error!(
        ?reply,
        "engine answered an admin command with the wrong reply kind"
    );
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "engine answered with the wrong reply kind",
    )
}

async fn publish(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let command: PublishCommand = parse_body(&body)?;
    tracing::info!(presentity = %command.presentity, event = %command.event, expires = command.expires, "admin publish");
    match call(&state, AdminCommand::Publish(command)).await? {
        AdminReply::Published(outcome) => Ok(Json(outcome).into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn subscribe(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let command: SubscribeCommand = parse_body(&body)?;
    tracing::info!(presentity = %command.presentity, watcher = %command.watcher, event = %command.event, expires = command.expires, "admin subscribe");
    match call(&state, AdminCommand::Subscribe(command)).await? {
        AdminReply::Subscribed(outcome) => Ok(Json(outcome).into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn publications(State(state): State<AppState>) -> Result<Response, ApiError> {
    match call(&state, AdminCommand::ListPublications).await? {
        AdminReply::Publications(list) => Ok(Json(list).into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn subscriptions(State(state): State<AppState>) -> Result<Response, ApiError> {
    match call(&state, AdminCommand::ListSubscriptions).await? {
        AdminReply::Subscriptions(list) => Ok(Json(list).into_response()),
        other => Err(unexpected(&other)),
    }
}

async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    match call(&state, AdminCommand::Health).await? {
        AdminReply::Health(view) => Ok(Json(view).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// The JSON of a listing or refusal reply of the presence agent, registrar or users.
fn site_reply(reply: AdminReply) -> Result<Response, ApiError> {
    match reply {
        AdminReply::Rules(v) => Ok(Json(v).into_response()),
        AdminReply::Watchers(v) => Ok(Json(v).into_response()),
        AdminReply::AgentPublications(v) => Ok(Json(v).into_response()),
        AdminReply::Users(v) => Ok(Json(v).into_response()),
        AdminReply::Bindings(v) => Ok(Json(v).into_response()),
        AdminReply::Usrloc(v) => Ok(Json(v).into_response()),
        AdminReply::Bla(v) => Ok(Json(v).into_response()),
        AdminReply::Error { code, reason } => Err(ApiError::new(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
        )),
        other => Err(unexpected(&other)),
    }
}

/// `POST /rules`: `{"presentity", "watcher", "action": "allow"|"deny"|"pending"|null}`
/// (null removes the rule; the domain default applies again).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    presentity: String,
    watcher: String,
    action: Option<String>,
}

async fn set_rule(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: RuleBody = parse_body(&body)?;
    let action = match b.action.as_deref() {
        None => None,
        Some(a) => Some(
            crate::core::watcher_rules::RuleAction::parse(a).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown action {a:?} (expected allow, deny or pending)"),
                )
            })?,
        ),
    };
    tracing::info!(presentity = %b.presentity, watcher = %b.watcher, ?action, "admin rule");
    let command = AdminCommand::SetRule {
        presentity: b.presentity,
        watcher: b.watcher,
        action,
    };
    site_reply(call(&state, command).await?)
}

async fn list_rules(State(state): State<AppState>) -> Result<Response, ApiError> {
    site_reply(call(&state, AdminCommand::ListRules).await?)
}

#[derive(serde::Deserialize)]
struct PresentityQuery {
    presentity: Option<String>,
}

async fn watchers(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PresentityQuery>,
) -> Result<Response, ApiError> {
    site_reply(
        call(
            &state,
            AdminCommand::ListWatchers {
                presentity: q.presentity,
            },
        )
        .await?,
    )
}

async fn agent_publications(State(state): State<AppState>) -> Result<Response, ApiError> {
    site_reply(call(&state, AdminCommand::ListPresentityPublications).await?)
}

#[derive(serde::Deserialize)]
struct AorQuery {
    aor: Option<String>,
}

async fn bindings(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<AorQuery>,
) -> Result<Response, ApiError> {
    site_reply(call(&state, AdminCommand::ListBindings { aor: q.aor }).await?)
}

/// `GET /usrloc`: the AORs usrloc publishes (404 when the module is off).
async fn usrloc(State(state): State<AppState>) -> Result<Response, ApiError> {
    site_reply(call(&state, AdminCommand::ListUsrloc).await?)
}

/// `GET /bla`: the shared lines with their phones and state (404 when the module is off).
async fn bla(State(state): State<AppState>) -> Result<Response, ApiError> {
    site_reply(call(&state, AdminCommand::ListBla).await?)
}

/// `POST /users`: `{"username", "domain", "password"}`; `POST /users/remove` without
/// the password.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    username: String,
    domain: String,
    password: Option<String>,
}

async fn add_user(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: UserBody = parse_body(&body)?;
    let Some(password) = b.password else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "password is required",
        ));
    };
    tracing::info!(username = %b.username, domain = %b.domain, "admin add user");
    let command = AdminCommand::AddUser {
        username: b.username,
        domain: b.domain,
        password,
    };
    site_reply(call(&state, command).await?)
}

async fn remove_user(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: UserBody = parse_body(&body)?;
    tracing::info!(username = %b.username, domain = %b.domain, "admin remove user");
    let command = AdminCommand::RemoveUser {
        username: b.username,
        domain: b.domain,
    };
    site_reply(call(&state, command).await?)
}

async fn list_users(State(state): State<AppState>) -> Result<Response, ApiError> {
    site_reply(call(&state, AdminCommand::ListUsers).await?)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}
