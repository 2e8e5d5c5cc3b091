//! `ci-warm realm` against an in-process fake Keycloak (tests/fake_keycloak): no Keycloak can run
//! on the test machines, so the fake implements the endpoints used with Keycloak's documented
//! status codes and JSON shapes. The library is driven directly, and the binary end to end.

mod fake_keycloak;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ci_warm::ci::realm::{
    self, Admin, AdminError, CreateRequest, Deleted, MARK_CREATED, MARK_RUN, RealmError,
};
use ci_warm::config::secret::SecretString;
use fake_keycloak::{ADMIN_USER, Echo, EchoAs, FakeKeycloak};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

async fn admin(kc: &FakeKeycloak) -> Admin {
    Admin::login(&kc.url, ADMIN_USER, SecretString::new(PASSWORD))
        .await
        .unwrap()
}

fn request(prefix: &str, run: &str) -> CreateRequest {
    CreateRequest {
        prefix: prefix.into(),
        run: run.into(),
        client_id: prefix.into(),
        username: "ci-test".into(),
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Logs in to the per-run realm with the written credentials, as the app under test would.
async fn login_with(kc: &FakeKeycloak, creds: &Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!(
            "{}/realms/{}/protocol/openid-connect/token",
            kc.url,
            creds["realm"].as_str().unwrap()
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", creds["client_id"].as_str().unwrap()),
            ("client_secret", creds["client_secret"].as_str().unwrap()),
            ("username", creds["username"].as_str().unwrap()),
            ("password", creds["password"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

/// The token endpoint's status and JSON body for a password-grant login with `creds`.
async fn login_answer(kc: &FakeKeycloak, creds: &Value) -> (reqwest::StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/realms/{}/protocol/openid-connect/token",
            kc.url,
            creds["realm"].as_str().unwrap()
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", creds["client_id"].as_str().unwrap()),
            ("client_secret", creds["client_secret"].as_str().unwrap()),
            ("username", creds["username"].as_str().unwrap()),
            ("password", creds["password"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// `login_with` proves the credentials `create` writes really log in only if the fake refuses
/// every login Keycloak would refuse; realms missing one thing that matters must fail here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_logins_keycloak_would_refuse() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let good = json!({
        "realm": "r",
        "enabled": true,
        "clients": [{"clientId": "c", "enabled": true, "publicClient": false, "secret": "s",
                     "directAccessGrantsEnabled": true}],
        "users": [{"username": "u", "enabled": true, "email": "u@r.invalid", "firstName": "U",
                   "lastName": "U",
                   "credentials": [{"type": "password", "value": "p", "temporary": false}]}],
    });
    let creds = json!({"realm": "r", "client_id": "c", "client_secret": "s", "username": "u",
                       "password": "p"});
    kc.insert_realm(good.clone());
    let (status, body) = login_answer(&kc, &creds).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");

    fn drop_key(v: &mut Value, at: &str, key: &str) {
        v.pointer_mut(at)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
    }
    type Break = fn(&mut Value);
    let cases: [(&str, Break, u16, &str, &str); 9] = [
        (
            "realm not enabled",
            |v| drop_key(v, "", "enabled"),
            403,
            "access_denied",
            "Realm not enabled",
        ),
        (
            "client disabled",
            |v| v["clients"][0]["enabled"] = json!(false),
            401,
            "invalid_client",
            "Invalid client",
        ),
        (
            "confidential client without a secret",
            |v| drop_key(v, "/clients/0", "secret"),
            401,
            "invalid_client",
            "Invalid client",
        ),
        (
            "no direct access grants",
            |v| drop_key(v, "/clients/0", "directAccessGrantsEnabled"),
            400,
            "unauthorized_client",
            "direct access grants",
        ),
        (
            "user not enabled",
            |v| drop_key(v, "/users/0", "enabled"),
            400,
            "invalid_grant",
            "Account disabled",
        ),
        (
            "temporary password",
            |v| v["users"][0]["credentials"][0]["temporary"] = json!(true),
            400,
            "invalid_grant",
            "not fully set up",
        ),
        (
            "required action",
            |v| v["users"][0]["requiredActions"] = json!(["UPDATE_PASSWORD"]),
            400,
            "invalid_grant",
            "not fully set up",
        ),
        (
            "no last name",
            |v| drop_key(v, "/users/0", "lastName"),
            400,
            "invalid_grant",
            "not fully set up",
        ),
        (
            "wrong password",
            |v| v["users"][0]["credentials"][0]["value"] = json!("q"),
            401,
            "invalid_grant",
            "Invalid user credentials",
        ),
    ];
    for (name, break_it, status, error, description) in cases {
        let mut rep = good.clone();
        break_it(&mut rep);
        kc.insert_realm(rep);
        let (got, body) = login_answer(&kc, &creds).await;
        assert_eq!(got.as_u16(), status, "{name}: {body}");
        assert_eq!(body["error"], error, "{name}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(description),
            "{name}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_writes_private_credentials_that_work() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("creds.json");
    let creds = realm::create(&a, &request("demo", "1234"), &out, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(creds.realm, "demo-1234");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = read_json(&out);
    assert_eq!(file["schema"], 1);
    assert_eq!(file["realm"], "demo-1234");
    assert_eq!(file["issuer"], format!("{}/realms/demo-1234", kc.url));
    assert_eq!(file["client_id"], "demo");
    assert_eq!(file["run"], "1234");
    assert_eq!(file["client_secret"].as_str().unwrap().len(), 64);
    assert_ne!(file["client_secret"], file["password"]);
    assert_eq!(login_with(&kc, &file).await, reqwest::StatusCode::OK);
    let mut wrong = file.clone();
    wrong["password"] = json!("nope");
    assert_eq!(
        login_with(&kc, &wrong).await,
        reqwest::StatusCode::UNAUTHORIZED
    );

    let rep = kc.realm("demo-1234").unwrap();
    assert_eq!(rep["attributes"][MARK_RUN], "1234");
    assert!(
        rep["attributes"][MARK_CREATED]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(rep["clients"][0]["publicClient"], false);
    // Secrets only in the file, never in the Debug form that could reach a log.
    let debug = format!("{creds:?}");
    assert!(
        !debug.contains(file["password"].as_str().unwrap()),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_land_in_a_planted_or_leftover_file() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("creds.json");
    // A world-readable file (a crashed writer's leftover, or one planted in a shared workspace)
    // at the temporary name a predictable writer (`crate::platform::atomic`) would open and reuse.
    let planted = dir
        .path()
        .join(format!(".tmp-creds.json.{}", std::process::id()));
    std::fs::write(&planted, "").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    realm::create(&a, &request("demo", "1"), &out, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        login_with(&kc, &read_json(&out)).await,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        b"",
        "planted file not reused"
    );
    // No temporary file of ours is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let planted_name = planted.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names, [planted_name, "creds.json".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_creates_never_collide() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for run in 0..8 {
        let kc = kc.clone();
        let out = dir.path().join(format!("run-{run}.json"));
        // Every run is its own process with its own admin session.
        tasks.push(tokio::spawn(async move {
            let a = admin(&kc).await;
            realm::create(
                &a,
                &request("demo", &format!("{run}")),
                &out,
                SystemTime::now(),
            )
            .await
            .map(|c| (c.realm.clone(), out))
        }));
    }
    let mut realms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for t in tasks {
        let (realm, out) = t.await.unwrap().unwrap();
        let file = read_json(&out);
        assert_eq!(file["realm"], realm.as_str());
        assert_eq!(
            login_with(&kc, &file).await,
            reqwest::StatusCode::OK,
            "{realm}"
        );
        secrets.insert(file["client_secret"].as_str().unwrap().to_owned());
        secrets.insert(file["password"].as_str().unwrap().to_owned());
        realms.insert(realm);
    }
    assert_eq!(realms.len(), 8);
    assert_eq!(secrets.len(), 16, "every secret is fresh");
    let mut on_server: BTreeSet<String> = kc.realm_names().into_iter().collect();
    assert!(on_server.remove("master"));
    assert_eq!(on_server, realms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_run_id_is_refused_not_overwritten() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("creds.json");
    // Two runs racing for the same id: exactly one wins, the other learns why.
    let (x, y) = tokio::join!(
        async {
            let a = admin(&kc).await;
            realm::create(
                &a,
                &request("demo", "7"),
                &dir.path().join("x.json"),
                SystemTime::now(),
            )
            .await
        },
        async {
            let a = admin(&kc).await;
            realm::create(
                &a,
                &request("demo", "7"),
                &dir.path().join("y.json"),
                SystemTime::now(),
            )
            .await
        }
    );
    assert_eq!(
        usize::from(x.is_ok()) + usize::from(y.is_ok()),
        1,
        "{x:?} {y:?}"
    );
    let loser = if x.is_ok() { y } else { x };
    let e = loser.unwrap_err();
    assert!(matches!(e, RealmError::Exists { .. }), "{e}");
    assert!(e.to_string().contains("demo-7 exists already"), "{e}");

    let a = admin(&kc).await;
    realm::create(&a, &request("demo", "8"), &out, SystemTime::now())
        .await
        .unwrap();
    let before = std::fs::read(&out).unwrap();
    let e = realm::create(&a, &request("demo", "8"), &out, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(e, RealmError::Exists { .. }), "{e}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "credentials untouched"
    );
    assert_eq!(
        login_with(&kc, &read_json(&out)).await,
        reqwest::StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent_and_refuses_master_and_foreign_realms() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    let dir = tempfile::tempdir().unwrap();
    realm::create(
        &a,
        &request("demo", "1"),
        &dir.path().join("c.json"),
        SystemTime::now(),
    )
    .await
    .unwrap();
    assert_eq!(realm::delete(&a, "demo-1").await.unwrap(), Deleted::Deleted);
    assert!(kc.realm("demo-1").is_none());
    assert_eq!(
        realm::delete(&a, "demo-1").await.unwrap(),
        Deleted::AlreadyGone
    );

    let e = realm::delete(&a, "master").await.unwrap_err();
    assert!(matches!(e, RealmError::Master), "{e}");
    assert!(kc.realm("master").is_some());

    kc.insert_realm(json!({"realm": "company", "enabled": true, "attributes": {}}));
    let e = realm::delete(&a, "company").await.unwrap_err();
    assert!(matches!(e, RealmError::NotPerRun { .. }), "{e}");
    assert!(kc.realm("company").is_some());

    for bad in ["../master", "a/b", "demo-1/../../x", ""] {
        let e = realm::delete(&a, bad).await.unwrap_err();
        assert!(matches!(e, RealmError::Name(_)), "{bad:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_keeps_live_young_and_foreign_realms() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let old = now - Duration::from_secs(8 * 3600);
    for (run, at) in [("1", old), ("2", old), ("3", now), ("4", now)] {
        let out = dir.path().join(format!("{run}.json"));
        realm::create(&a, &request("demo", run), &out, at)
            .await
            .unwrap();
    }
    kc.insert_realm(json!({"realm": "company", "enabled": true}));
    let live: BTreeSet<String> = ["2".to_owned(), "4".to_owned()].into();
    let report = realm::reap(&a, &live, Duration::from_secs(6 * 3600), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(report.deleted, ["demo-1"]);
    assert!(report.failed.is_empty());
    let kept: Vec<(&str, &str)> = report
        .kept
        .iter()
        .map(|k| (k.realm.as_str(), k.why))
        .collect();
    assert_eq!(
        kept,
        [("demo-2", "live"), ("demo-3", "young"), ("demo-4", "live")]
    );
    assert_eq!(report.ignored, ["company", "master"]);
    assert_eq!(
        kc.realm_names(),
        ["company", "demo-2", "demo-3", "demo-4", "master"]
    );

    // Once the runs are over and the grace has passed, everything per-run goes; nothing else.
    let later = SystemTime::now() + Duration::from_secs(7 * 3600);
    let report = realm::reap(&a, &BTreeSet::new(), Duration::from_secs(6 * 3600), later)
        .await
        .unwrap();
    assert_eq!(report.deleted, ["demo-2", "demo-3", "demo-4"]);
    assert_eq!(kc.realm_names(), ["company", "master"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_run_logs_in_again() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    assert_eq!(kc.admin_logins(), 1);
    let dir = tempfile::tempdir().unwrap();
    realm::create(
        &a,
        &request("demo", "1"),
        &dir.path().join("1.json"),
        SystemTime::now(),
    )
    .await
    .unwrap();
    assert_eq!(kc.admin_logins(), 1, "a valid token is reused");

    // The server drops the token while the client still thinks it valid: one 401, one fresh
    // login, one retry, and the call succeeds.
    kc.expire_tokens();
    realm::create(
        &a,
        &request("demo", "2"),
        &dir.path().join("2.json"),
        SystemTime::now(),
    )
    .await
    .unwrap();
    assert_eq!(kc.admin_logins(), 2);
    assert_eq!(kc.unauthorized_served(), 1);
    assert!(kc.realm("demo-2").is_some());

    // A token about to expire is renewed before it is used: no 401 at all.
    kc.set_token_ttl(Duration::from_secs(3));
    kc.expire_tokens();
    let a = admin(&kc).await;
    let logins = kc.admin_logins();
    assert_eq!(realm::delete(&a, "demo-2").await.unwrap(), Deleted::Deleted);
    assert!(kc.admin_logins() > logins);
    assert_eq!(kc.unauthorized_served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_error() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let e = Admin::login(&kc.url, ADMIN_USER, SecretString::new("hunter2"))
        .await
        .unwrap_err();
    assert!(matches!(e, AdminError::Login { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("refused the admin login of user \"admin\"")
            && msg.contains("401")
            && msg.contains("Invalid user credentials")
            && msg.contains("admin password file")
            && msg.contains(&kc.url),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");

    let e = Admin::login(&kc.url, "nobody", SecretString::new(PASSWORD))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"nobody\"") && e.contains("Invalid user credentials"),
        "{e}"
    );
}

/// A 307/308 on the login would have reqwest resend the form, admin password included, to the
/// redirect's target; the admin client refuses to follow and names the target instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_login_never_resends_the_password() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let elsewhere = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "thanks for the password" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, elsewhere).await.unwrap() });
    let to = target.clone();
    let redirector = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let to = format!("{to}{uri}");
        async move {
            (
                axum::http::StatusCode::PERMANENT_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await.unwrap() });

    let e = Admin::login(&url, ADMIN_USER, SecretString::new(PASSWORD))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("308") && msg.contains(&target) && msg.contains("does not follow"),
        "{msg}"
    );
    assert!(!msg.contains(PASSWORD), "{msg}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the form went to the redirect target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_keycloak_is_a_clear_error() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = Admin::login(&url, ADMIN_USER, SecretString::new(PASSWORD))
        .await
        .unwrap_err();
    assert!(matches!(e, AdminError::Unreachable { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&url) && msg.contains("admin login"), "{msg}");
}

// ---- the binary, end to end ----

struct Cli {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Cli {
    /// A config whose `keycloak.admin_password` is a file holding `password`.
    fn with_password_file(kc: &FakeKeycloak, password: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("admin-password");
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        Cli::write(kc, dir, json!({"file": pw}))
    }

    /// A config whose `keycloak.admin_password` is the systemd credential `name`.
    fn with_credential(kc: &FakeKeycloak, name: &str) -> Cli {
        Cli::write(
            kc,
            tempfile::tempdir().unwrap(),
            json!({"credential": name}),
        )
    }

    fn write(kc: &FakeKeycloak, dir: tempfile::TempDir, admin_password: Value) -> Cli {
        let config = dir.path().join("config.json");
        let text = json!({
            "state_dir": dir.path().join("state"),
            "keycloak": {"url": kc.url, "admin_password": admin_password, "reap_grace_secs": 3600},
        });
        std::fs::write(&config, text.to_string()).unwrap();
        Cli { dir, config }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ci-warm"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("CREDENTIALS_DIRECTORY");
        cmd
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().await.unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_create_delete_reap() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let cli = Cli::with_password_file(&kc, PASSWORD);

    // create: the default output in the working directory, its absolute path on stdout.
    let out = cli
        .run(&["realm", "create", "--run", "42", "--prefix", "demo"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = text(&out.stdout).trim().to_owned();
    assert_eq!(
        Path::new(&path),
        cli.dir.path().join("demo-42.credentials.json")
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        login_with(&kc, &read_json(Path::new(&path))).await,
        reqwest::StatusCode::OK
    );
    assert!(!text(&out.stderr).contains(PASSWORD));

    // 8 concurrent processes, 8 realms.
    let runs: Vec<String> = (100..108).map(|n| n.to_string()).collect();
    let children: Vec<_> = runs
        .iter()
        .map(|r| {
            cli.command(&["--json", "realm", "create", "--run", r, "--prefix", "demo"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outs = Vec::new();
    for child in children {
        outs.push(child.wait_with_output().await.unwrap());
    }
    for (run, out) in runs.iter().zip(&outs) {
        assert!(out.status.success(), "{run}: {}", text(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["realm"], format!("demo-{run}"));
        assert!(
            j.get("client_secret").is_none() && j.get("password").is_none(),
            "{j}"
        );
        let file = read_json(Path::new(j["path"].as_str().unwrap()));
        assert_eq!(login_with(&kc, &file).await, reqwest::StatusCode::OK);
    }
    assert_eq!(kc.realm_names().len(), 1 + 1 + 8);

    // delete: master refused with a usage error, a run's realm deleted twice without error.
    let out = cli.run(&["realm", "delete", "--realm", "master"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("master realm"));
    assert!(kc.realm("master").is_some());
    let out = cli
        .run(&["realm", "delete", "--run", "../master", "--prefix", "demo"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    for want in ["deleted", "already-gone"] {
        let out = cli
            .run(&[
                "--json", "realm", "delete", "--run", "42", "--prefix", "demo",
            ])
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j, json!({"realm": "demo-42", "result": want}));
    }

    // reap: everything is young under the config's 1h grace; with 0s, all but the live ones go.
    let out = cli.run(&["--json", "realm", "reap"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["deleted"], json!([]));
    assert_eq!(j["kept"].as_array().unwrap().len(), 8);
    let out = cli
        .run(&[
            "--json",
            "realm",
            "reap",
            "--older-than",
            "0s",
            "--live",
            "100",
            "101",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["deleted"].as_array().unwrap().len(), 6, "{j}");
    assert_eq!(kc.realm_names(), ["demo-100", "demo-101", "master"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_systemd_credentials_and_reports_a_wrong_password() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let creds_dir = tempfile::tempdir().unwrap();
    std::fs::write(creds_dir.path().join("keycloak-admin"), PASSWORD).unwrap();
    let cli = Cli::with_credential(&kc, "keycloak-admin");
    let out = cli.run(&["realm", "reap"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("CREDENTIALS_DIRECTORY"),
        "{}",
        text(&out.stderr)
    );
    let out = cli
        .command(&["realm", "reap"])
        .env("CREDENTIALS_DIRECTORY", creds_dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::write(creds_dir.path().join("keycloak-admin"), "wrong\n").unwrap();
    let out = cli
        .command(&["realm", "create", "--run", "1"])
        .env("CREDENTIALS_DIRECTORY", creds_dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused the admin login") && err.contains("Invalid user credentials"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "{err}");
    assert_eq!(kc.realm_names(), ["master"]);

    let no_kc = tempfile::tempdir().unwrap();
    let config = no_kc.path().join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ci-warm"))
        .arg("--config")
        .arg(&config)
        .args(["realm", "reap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no `keycloak` section"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_credentials_leave_no_realm_behind() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    let out = Path::new("/nonexistent-dir/creds.json");
    let e = realm::create(&a, &request("demo", "9"), out, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(e, RealmError::Output { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent-dir/creds.json"), "{e}");
    assert_eq!(kc.realm_names(), ["master"], "nobody could log in to it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_output_is_refused_before_the_realm_is_created() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let a = admin(&kc).await;
    let d = tempfile::tempdir().unwrap();
    let taken = d.path().join("taken.json");
    std::fs::write(&taken, "another run's credentials").unwrap();
    let readonly = d.path().join("ro");
    std::fs::create_dir(&readonly).unwrap();
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o500)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let mut bad = vec![
        d.path().join("missing-dir/creds.json"),
        taken.clone(),
        d.path().to_owned(),
    ];
    if !root {
        bad.push(readonly.join("creds.json"));
    }
    for (i, out) in bad.iter().enumerate() {
        let e = realm::create(&a, &request("demo", &i.to_string()), out, SystemTime::now())
            .await
            .unwrap_err();
        assert!(
            matches!(e, RealmError::Output { .. }),
            "{}: {e}",
            out.display()
        );
        assert!(e.to_string().contains("no realm was created"), "{e}");
    }
    assert_eq!(
        kc.realms_created(),
        0,
        "a realm was created before the output was known good"
    );
    assert_eq!(
        std::fs::read_to_string(&taken).unwrap(),
        "another run's credentials"
    );
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        2,
        "no temporary file left"
    );
}

/// A run of 32+ hex digits: a client secret, user password or token `realm create` generates.
fn has_generated_secret(s: &str) -> bool {
    s.as_bytes()
        .split(|b| !b.is_ascii_hexdigit())
        .any(|run| run.len() >= 32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_that_echo_the_request_never_reveal_a_secret() {
    // No spaces: the form-encoded echo of this password is the password itself.
    const SECRET: &str = "Adm1n-s3cret.pw";
    for how in [EchoAs::Json, EchoAs::Html] {
        let kc = FakeKeycloak::start(SECRET).await;
        kc.echo_bodies(Echo::Login, how);
        let e = Admin::login(&kc.url, ADMIN_USER, SecretString::new(SECRET))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains(SECRET),
            "{how:?}: the admin password leaked: {e}"
        );
        assert!(e.contains("400"), "{how:?}: {e}");

        let kc = FakeKeycloak::start(SECRET).await;
        let a = Admin::login(&kc.url, ADMIN_USER, SecretString::new(SECRET))
            .await
            .unwrap();
        kc.echo_bodies(Echo::CreateRealm, how);
        let d = tempfile::tempdir().unwrap();
        let e = realm::create(
            &a,
            &request("demo", "7"),
            &d.path().join("c.json"),
            SystemTime::now(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            !has_generated_secret(&e),
            "{how:?}: a realm secret leaked: {e}"
        );
        assert!(!e.contains(SECRET), "{how:?}: {e}");
        assert!(e.contains("400") && e.len() < 1000, "{how:?}: {e}");
    }
}

/// `realm reap --live-from-swarm`: realms of runs whose stacks are running are kept, and a
/// liveness source that is not configured or cannot be read reaps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_live_from_swarm_keeps_running_runs_and_is_never_blind() {
    let kc = FakeKeycloak::start(PASSWORD).await;
    let cli = Cli::with_password_file(&kc, PASSWORD);
    for run in ["r1", "r2"] {
        let out = cli
            .run(&["realm", "create", "--run", run, "--prefix", "demo"])
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let all = || kc.realm_names();
    let before = all();
    let reap = [
        "--json",
        "realm",
        "reap",
        "--older-than",
        "0s",
        "--live-from-swarm",
    ];

    // No liveness source configured: a usage error, nothing reaped.
    let out = cli.run(&reap).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("keycloak.live_runs"));
    assert_eq!(all(), before);

    // Configured, but the swarm cannot be read: an error, nothing reaped.
    let prefix = format!("ciwtreap{}-", std::process::id());
    let mut config: Value = read_json(&cli.config);
    config["keycloak"]["live_runs"] = json!({"stack_pattern": format!("{prefix}{{run}}")});
    std::fs::write(&cli.config, config.to_string()).unwrap();
    let out = cli
        .command(&reap)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing was reaped"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(all(), before);

    // The real swarm: a stack for run r1 exists, none for r2.
    let docker = std::process::Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output();
    let swarm = matches!(&docker, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "active");
    if !swarm {
        assert!(
            std::env::var_os("CI_WARM_REQUIRE_DOCKER").is_none()
                && std::env::var_os("CI").is_none(),
            "no swarm: {docker:?}"
        );
        return;
    }
    let stack = format!("{prefix}r1");
    let service = format!("{stack}_app");
    let created = std::process::Command::new("docker")
        .args([
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--replicas",
            "0",
        ])
        .args(["--name", &service])
        .args(["--label", &format!("com.docker.stack.namespace={stack}")])
        .arg("busybox:latest")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
    let out = cli.run(&reap).await;
    let _ = std::process::Command::new("docker")
        .args(["service", "rm", &service])
        .output();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["deleted"], json!(["demo-r2"]), "{j}");
    assert_eq!(all(), ["demo-r1", "master"]);
}
