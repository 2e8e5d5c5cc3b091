//! An in-process fake of the parts of Keycloak's REST API that `ci-warm realm` uses. No Keycloak
//! can run on the test machines (neither its image nor its distribution can be fetched there),
//! so this stands in for it, following Keycloak's documented contract (Admin REST API, OIDC
//! token endpoint):
//!
//! - `POST /realms/{realm}/protocol/openid-connect/token` (form, `grant_type=password`): 200
//!   `{access_token, expires_in, refresh_token, token_type: "Bearer", ...}`; a wrong user or
//!   password is 401 `{"error": "invalid_grant", "error_description": "Invalid user
//!   credentials"}`, a wrong client or client secret 401 `invalid_client`, a missing grant type
//!   400 `invalid_request`. It works for every realm, so a test can log in with the credentials
//!   `realm create` wrote, and it is as strict as Keycloak about what such a login needs: an
//!   enabled realm (else 403 `access_denied`), an enabled client with `directAccessGrantsEnabled`
//!   (else 400 `unauthorized_client`) whose secret was set and is given, an enabled user (else
//!   400 `invalid_grant` "Account disabled") with no temporary password, no required action and
//!   (outside master) email, first and last name (else 400 `invalid_grant` "Account is not fully
//!   set up").
//! - `/admin/...` needs `Authorization: Bearer <token of the master realm>`; a missing, unknown
//!   or expired token is 401 `{"error": "HTTP 401 Unauthorized"}`.
//! - `GET /admin/realms`: 200, a list of realm representations (with `attributes`).
//! - `GET /admin/realms/{realm}`: 200 the representation, 404 `{"error": "Realm not found."}`.
//! - `POST /admin/realms`: 201 with `Location`, 409 `{"errorMessage": "Conflict detected. See
//!   logs for details"}` when the realm exists, 400 without a `realm` name.
//! - `DELETE /admin/realms/{realm}`: 204, 404 when missing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub const ADMIN_USER: &str = "admin";

struct Token {
    realm: String,
    expires: Instant,
}

struct Inner {
    /// Where the fake listens; Keycloak's `Location` headers are absolute URLs.
    url: String,
    realms: BTreeMap<String, Value>,
    tokens: HashMap<String, Token>,
    token_ttl: Duration,
    next_id: u64,
    admin_logins: usize,
    unauthorized_served: usize,
    echo: Option<(Echo, EchoAs)>,
    realms_created: usize,
}

/// Where the fake answers an error that echoes the request body, as a misconfigured server or
/// a proxy's login page may.
#[derive(Clone, Copy, Debug)]
pub enum Echo {
    /// The token endpoint (the body is the login form, admin password included).
    Login,
    /// `POST /admin/realms` (the body holds the new realm's client secret and user password).
    CreateRealm,
}

/// How the echo comes back.
#[derive(Clone, Copy, Debug)]
pub enum EchoAs {
    /// Inside Keycloak's JSON error fields.
    Json,
    /// As an HTML page.
    Html,
}

#[derive(Clone)]
pub struct FakeKeycloak {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeKeycloak {
    /// Starts the fake on a free local port with `admin` / `admin_password` in `master`.
    pub async fn start(admin_password: &str) -> FakeKeycloak {
        let master = json!({
            "id": "master",
            "realm": "master",
            "enabled": true,
            "attributes": {"frontendUrl": ""},
            "clients": [{
                "clientId": "admin-cli",
                "publicClient": true,
                "enabled": true,
                "directAccessGrantsEnabled": true,
            }],
            "users": [{
                "username": ADMIN_USER,
                "enabled": true,
                "credentials": [{"type": "password", "value": admin_password}],
            }],
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            url: url.clone(),
            realms: BTreeMap::from([("master".to_owned(), master)]),
            tokens: HashMap::new(),
            token_ttl: Duration::from_secs(60),
            next_id: 0,
            admin_logins: 0,
            unauthorized_served: 0,
            echo: None,
            realms_created: 0,
        }));
        let app = Router::new()
            .route("/realms/{realm}/protocol/openid-connect/token", post(token))
            .route("/admin/realms", get(list_realms).post(create_realm))
            .route("/admin/realms/{realm}", get(get_realm).delete(delete_realm))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), echo))
            .with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeKeycloak { url, inner }
    }

    /// Makes every issued token invalid now, as an expiry or a keycloak restart would.
    pub fn expire_tokens(&self) {
        let mut s = lock(&self.inner);
        let now = Instant::now();
        for t in s.tokens.values_mut() {
            t.expires = now;
        }
    }

    /// From now on, answers requests at `at` with a 400 that echoes their body.
    pub fn echo_bodies(&self, at: Echo, how: EchoAs) {
        lock(&self.inner).echo = Some((at, how));
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        lock(&self.inner).token_ttl = ttl;
    }

    /// Successful logins to the master realm so far.
    pub fn admin_logins(&self) -> usize {
        lock(&self.inner).admin_logins
    }

    /// 401s served on admin endpoints so far.
    pub fn unauthorized_served(&self) -> usize {
        lock(&self.inner).unauthorized_served
    }

    /// Realms created through `POST /admin/realms` so far (deleted ones included).
    pub fn realms_created(&self) -> usize {
        lock(&self.inner).realms_created
    }

    pub fn realm(&self, name: &str) -> Option<Value> {
        lock(&self.inner).realms.get(name).cloned()
    }

    pub fn realm_names(&self) -> Vec<String> {
        lock(&self.inner).realms.keys().cloned().collect()
    }

    /// Adds a realm directly (as if an operator had made it).
    pub fn insert_realm(&self, rep: Value) {
        let name = rep["realm"].as_str().unwrap().to_owned();
        lock(&self.inner).realms.insert(name, rep);
    }
}

async fn echo(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let echo = lock(&s).echo;
    let path = req.uri().path().to_owned();
    let post = req.method() == axum::http::Method::POST;
    let hit = |at| match at {
        Echo::Login => path.ends_with("/protocol/openid-connect/token"),
        Echo::CreateRealm => post && path == "/admin/realms",
    };
    let Some((_, how)) = echo.filter(|(at, _)| hit(*at)) else {
        return next.run(req).await;
    };
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    match how {
        EchoAs::Json => error(
            StatusCode::BAD_REQUEST,
            json!({
                "error": format!("invalid_request {body}"),
                "error_description": format!("cannot parse: {body}"),
                "errorMessage": body,
            }),
        ),
        EchoAs::Html => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html><body><form>{body}</form></body></html>"),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    error(
        status,
        json!({"error": code, "error_description": description}),
    )
}

async fn token(
    State(s): State<Shared>,
    Path(realm): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&s);
    let Some(rep) = s.realms.get(&realm).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            json!({"error": "Realm does not exist"}),
        );
    };
    if rep["enabled"] != true {
        // Keycloak imports a realm without `enabled` as disabled.
        return oauth_error(StatusCode::FORBIDDEN, "access_denied", "Realm not enabled");
    }
    let Some(grant) = form.get("grant_type") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        );
    };
    if grant != "password" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    let bad_client = || {
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        )
    };
    let client_id = form.get("client_id").map(String::as_str).unwrap_or("");
    let clients = rep["clients"].as_array().cloned().unwrap_or_default();
    let Some(client) = clients.iter().find(|c| c["clientId"] == client_id) else {
        return bad_client();
    };
    if client["enabled"] != true {
        return bad_client();
    }
    // A confidential client needs its secret; one created without a secret has one only
    // Keycloak knows, so no caller can present it.
    if client["publicClient"] != true {
        let given = form.get("client_secret").map(String::as_str);
        match client["secret"].as_str() {
            Some(secret) if given == Some(secret) => {}
            _ => return bad_client(),
        }
    }
    // The password grant is off unless the client turns it on (the admin console's default is
    // not the API's).
    if client["directAccessGrantsEnabled"] != true {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "Client not allowed for direct access grants",
        );
    }
    let username = form.get("username").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let users = rep["users"].as_array().cloned().unwrap_or_default();
    let user = users.iter().find(|u| {
        u["username"] == username
            && u["credentials"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "password" && c["value"] == password)
            })
    });
    let Some(user) = user else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        );
    };
    // Keycloak imports a user without `enabled` as disabled.
    if user["enabled"] != true {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Account disabled");
    }
    // A temporary password or any required action blocks the password grant; so, on realms
    // created since Keycloak 24 (verify-profile on), does a user missing an attribute of the
    // default user profile. master's bootstrap admin logs in without them.
    let temporary = user["credentials"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["temporary"] == true));
    let actions = user["requiredActions"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    let incomplete = realm != "master"
        && ["email", "firstName", "lastName"]
            .iter()
            .any(|k| user[*k].as_str().is_none_or(str::is_empty));
    if temporary || actions || incomplete {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Account is not fully set up",
        );
    }
    s.next_id += 1;
    let access = format!("fake-token-{}-{}", realm, s.next_id);
    let ttl = s.token_ttl;
    s.tokens.insert(
        access.clone(),
        Token {
            realm: realm.clone(),
            expires: Instant::now() + ttl,
        },
    );
    if realm == "master" {
        s.admin_logins += 1;
    }
    Json(json!({
        "access_token": access,
        "expires_in": ttl.as_secs(),
        "refresh_expires_in": 1800,
        "refresh_token": format!("fake-refresh-{}", s.next_id),
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": format!("session-{}", s.next_id),
        "scope": "profile email",
    }))
    .into_response()
}

/// The admin API's bearer check: the 401 to answer, if any.
fn unauthorized(s: &mut Inner, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token
        .and_then(|t| s.tokens.get(t))
        .is_some_and(|t| t.realm == "master" && Instant::now() < t.expires);
    if valid {
        return None;
    }
    s.unauthorized_served += 1;
    Some(error(
        StatusCode::UNAUTHORIZED,
        json!({"error": "HTTP 401 Unauthorized"}),
    ))
}

/// What the admin API shows of a realm (never its users' credentials).
fn public(rep: &Value) -> Value {
    let mut out = rep.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("users");
        o.remove("clients");
    }
    out
}

async fn list_realms(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut s = lock(&s);
    if let Some(r) = unauthorized(&mut s, &headers) {
        return r;
    }
    let list: Vec<Value> = s.realms.values().map(public).collect();
    Json(list).into_response()
}

async fn get_realm(
    State(s): State<Shared>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = lock(&s);
    if let Some(r) = unauthorized(&mut s, &headers) {
        return r;
    }
    match s.realms.get(&realm) {
        Some(rep) => Json(public(rep)).into_response(),
        None => error(StatusCode::NOT_FOUND, json!({"error": "Realm not found."})),
    }
}

async fn create_realm(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(mut rep): Json<Value>,
) -> Response {
    let mut s = lock(&s);
    if let Some(r) = unauthorized(&mut s, &headers) {
        return r;
    }
    let Some(name) = rep["realm"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"errorMessage": "Realm name cannot be empty"}),
        );
    };
    if s.realms.contains_key(&name) {
        return error(
            StatusCode::CONFLICT,
            json!({"errorMessage": "Conflict detected. See logs for details"}),
        );
    }
    s.next_id += 1;
    s.realms_created += 1;
    rep["id"] = json!(format!("id-{}", s.next_id));
    s.realms.insert(name.clone(), rep);
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("{}/admin/realms/{name}", s.url))],
    )
        .into_response()
}

async fn delete_realm(
    State(s): State<Shared>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = lock(&s);
    if let Some(r) = unauthorized(&mut s, &headers) {
        return r;
    }
    if realm == "master" {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"errorMessage": "Cannot delete the master realm"}),
        );
    }
    match s.realms.remove(&realm) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, json!({"error": "Realm not found."})),
    }
}
