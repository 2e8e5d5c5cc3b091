//! A small client of Keycloak's admin REST API: the admin logs in through the master realm's
//! token endpoint with the `admin-cli` client, and every admin call carries the bearer token.
//!
//! Admin tokens are short-lived (60 s by default), and a CI run may create a realm, run tests
//! for minutes, then delete it with the same client. So the token is renewed before it expires,
//! and a 401 on an admin call (expired early, revoked, keycloak restarted) triggers one fresh
//! login and one retry; only a second 401 is an error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::config::secret::SecretString;
use crate::platform::text;

/// Renew this long before the token's announced expiry, so a request never leaves with a token
/// that dies in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach keycloak at {url} ({what}): {cause}")]
    Unreachable {
        url: String,
        what: String,
        cause: String,
    },
    #[error(
        "keycloak at {url} refused the admin login of user {user:?} ({status}: {detail}); check \
         keycloak.admin_user and the admin password file"
    )]
    Login {
        url: String,
        user: String,
        status: StatusCode,
        detail: String,
    },
    #[error("keycloak at {url} answered {what} with {status}: {detail}")]
    Rejected {
        url: String,
        what: String,
        status: StatusCode,
        detail: String,
    },
    #[error("keycloak at {url} answered {what} with something unreadable: {cause}")]
    Decode {
        url: String,
        what: String,
        cause: String,
    },
}

/// A realm as `GET /admin/realms` lists it (only the fields used here).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RealmRep {
    pub realm: String,
    /// Keycloak's realm attributes: string values.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl RealmRep {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(serde_json::Value::as_str)
    }
}

/// What `POST /admin/realms` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// 409: a realm of that name exists already.
    Exists,
}

#[derive(Debug)]
struct Token {
    access: SecretString,
    renew_at: Instant,
}

/// A logged-in admin session.
#[derive(Debug)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    user: String,
    password: SecretString,
    token: tokio::sync::Mutex<Option<Token>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl Admin {
    /// Logs in at once, so a wrong password is reported before anything else happens.
    pub async fn login(url: &str, user: &str, password: SecretString) -> Result<Admin, AdminError> {
        let http = reqwest::Client::builder()
            // A 307/308 would make reqwest resend the login form, admin password included, to
            // wherever the Location points; refuse redirects and say where it pointed instead.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| AdminError::Unreachable {
                url: url.to_owned(),
                what: "building the HTTP client".into(),
                cause: chain(&e),
            })?;
        let admin = Admin {
            http,
            base: url.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            password,
            token: tokio::sync::Mutex::new(None),
        };
        let token = admin.fetch_token().await?;
        *admin.token.lock().await = Some(token);
        Ok(admin)
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn fetch_token(&self) -> Result<Token, AdminError> {
        let what = "the admin login (POST /realms/master/protocol/openid-connect/token)";
        let started = Instant::now();
        let resp = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.base
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", self.user.as_str()),
                ("password", self.password.expose()),
            ])
            .send()
            .await
            .map_err(|e| self.unreachable(what, &e))?;
        let status = resp.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST) {
            return Err(AdminError::Login {
                url: self.base.clone(),
                user: self.user.clone(),
                status,
                detail: detail(resp, &self.secrets(&[])).await,
            });
        }
        if !status.is_success() {
            return Err(self.rejected(what, status, resp, &[]).await);
        }
        let body: TokenResponse = resp.json().await.map_err(|e| AdminError::Decode {
            url: self.base.clone(),
            what: what.into(),
            cause: chain(&e),
        })?;
        let life = Duration::from_secs(body.expires_in).saturating_sub(EXPIRY_MARGIN);
        tracing::debug!(url = %self.base, expires_in = body.expires_in, "keycloak admin login");
        Ok(Token {
            access: SecretString::new(body.access_token),
            renew_at: crate::platform::deadline::after(started, life),
        })
    }

    /// The current token, renewed when it is (nearly) expired or `stale` is the one that just
    /// got a 401.
    async fn bearer(&self, stale: Option<&SecretString>) -> Result<SecretString, AdminError> {
        let mut guard = self.token.lock().await;
        let usable = guard
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at && Some(&t.access) != stale);
        if let Some(t) = usable {
            return Ok(t.access.clone());
        }
        let fresh = self.fetch_token().await?;
        let access = fresh.access.clone();
        *guard = Some(fresh);
        Ok(access)
    }

    /// Sends an admin call, logging in again once on a 401.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, AdminError> {
        let what = format!("{method} {path}");
        let token = self.bearer(None).await?;
        let resp = self.attempt(&method, path, body, &token, &what).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        tracing::info!(url = %self.base, call = %what, "admin token no longer accepted; logging in again");
        let token = self.bearer(Some(&token)).await?;
        let resp = self.attempt(&method, path, body, &token, &what).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self
                .rejected(&what, StatusCode::UNAUTHORIZED, resp, &secrets_in(body))
                .await);
        }
        Ok(resp)
    }

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
        token: &SecretString,
        what: &str,
    ) -> Result<reqwest::Response, AdminError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.map_err(|e| self.unreachable(what, &e))
    }

    /// Every realm, with its attributes.
    pub async fn realms(&self) -> Result<Vec<RealmRep>, AdminError> {
        let what = "GET /admin/realms";
        let resp = self.send(Method::GET, "/admin/realms", None).await?;
        self.json(what, resp).await
    }

    /// One realm, or `None` when it does not exist.
    pub async fn realm(&self, name: &str) -> Result<Option<RealmRep>, AdminError> {
        let path = format!("/admin/realms/{name}");
        let resp = self.send(Method::GET, &path, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.json(&format!("GET {path}"), resp).await.map(Some)
    }

    /// `POST /admin/realms` with a full realm representation (clients and users included, so
    /// the realm appears complete or not at all).
    pub async fn create_realm(&self, rep: &serde_json::Value) -> Result<Created, AdminError> {
        let what = "POST /admin/realms";
        let resp = self.send(Method::POST, "/admin/realms", Some(rep)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Created::Created),
            StatusCode::CONFLICT => Ok(Created::Exists),
            // The representation holds the new client's secret and user's password.
            status => Err(self
                .rejected(what, status, resp, &secrets_in(Some(rep)))
                .await),
        }
    }

    /// `DELETE /admin/realms/{name}`; `false` when it did not exist (404).
    pub async fn delete_realm(&self, name: &str) -> Result<bool, AdminError> {
        let path = format!("/admin/realms/{name}");
        let resp = self.send(Method::DELETE, &path, None).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(self
                .rejected(&format!("DELETE {path}"), status, resp, &[])
                .await),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        resp: reqwest::Response,
    ) -> Result<T, AdminError> {
        let status = resp.status();
        if !status.is_success() {
            return Err(self.rejected(what, status, resp, &[]).await);
        }
        resp.json().await.map_err(|e| AdminError::Decode {
            url: self.base.clone(),
            what: what.to_owned(),
            cause: chain(&e),
        })
    }

    fn unreachable(&self, what: &str, e: &reqwest::Error) -> AdminError {
        AdminError::Unreachable {
            url: self.base.clone(),
            what: what.to_owned(),
            cause: chain(e),
        }
    }

    async fn rejected(
        &self,
        what: &str,
        status: StatusCode,
        resp: reqwest::Response,
        sent: &[String],
    ) -> AdminError {
        AdminError::Rejected {
            url: self.base.clone(),
            what: what.to_owned(),
            status,
            detail: detail(resp, &self.secrets(sent)).await,
        }
    }

    /// Every secret a response could echo: the admin password, the current token (when the
    /// token is not being renewed right now), and what the request sent.
    fn secrets(&self, sent: &[String]) -> Vec<String> {
        let mut out = vec![self.password.expose().to_owned()];
        if let Ok(guard) = self.token.try_lock()
            && let Some(t) = guard.as_ref()
        {
            out.push(t.access.expose().to_owned());
        }
        out.extend(sent.iter().cloned());
        out
    }
}

/// The secret values of a request body: every string under a `secret`, `value` (a
/// credential's) or `password` key, at any depth.
fn secrets_in(body: Option<&serde_json::Value>) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    match child {
                        serde_json::Value::String(s)
                            if matches!(k.as_str(), "secret" | "value" | "password") =>
                        {
                            out.push(s.clone());
                        }
                        _ => walk(child, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(b) = body {
        walk(b, &mut out);
    }
    out
}

/// The most of Keycloak's error text an error message carries.
const MAX_DETAIL: usize = 200;

/// A bounded, sanitized excerpt of an error response: Keycloak's `error_description`,
/// `errorMessage` and `error` JSON fields, with every secret in `secrets` (raw or
/// form-encoded) replaced by `<redacted>` and control characters escaped. The body itself is
/// never shown: a server (or a proxy's login page) that echoes the request would put the admin
/// password, a client secret or a token into ci-warm's error.
async fn detail(resp: reqwest::Response, secrets: &[String]) -> String {
    if resp.status().is_redirection() {
        let to = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map_or_else(
                || "nowhere".to_owned(),
                |to| text::escaped(&text::redact_userinfo(to)),
            );
        return format!(
            "a redirect to {to}, which ci-warm does not follow; set keycloak.url to the URL \
             keycloak answers on itself"
        );
    }
    let text = resp.text().await.unwrap_or_default();
    let fields: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .map(|v| {
            ["error", "error_description", "errorMessage"]
                .iter()
                .filter_map(|key| {
                    v.get(key)
                        .and_then(serde_json::Value::as_str)
                        .map(|s| format!("{key}: {}", redact_secrets(s, secrets)))
                })
                .collect()
        })
        .unwrap_or_default();
    if !fields.is_empty() {
        return text::escaped(&text::bounded(&fields.join("; "), MAX_DETAIL));
    }
    match text.trim().len() {
        0 => "no details".to_owned(),
        n => format!(
            "a body of {n} bytes without Keycloak's JSON error fields (not shown: it may echo \
             what was sent)"
        ),
    }
}

/// `s` with every secret (as sent, and form-encoded as a login sends it) replaced.
fn redact_secrets(s: &str, secrets: &[String]) -> String {
    let mut out = s.to_owned();
    for secret in secrets.iter().filter(|x| !x.is_empty()) {
        for form in [secret.clone(), form_encoded(secret)] {
            out = out.replace(&form, "<redacted>");
        }
    }
    out
}

/// `application/x-www-form-urlencoded` of one value (what reqwest's `.form` sends).
fn form_encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// reqwest's top-level message ("error sending request") hides the cause; walk the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
