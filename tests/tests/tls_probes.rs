//! Health probes through a real TLS-terminating, SNI-routing reverse proxy (nginx, standing in
//! for traefik) in front of demo apps on the real swarm: each probe reaches *its* app by name,
//! a certificate for another name fails naming both names, trust comes from `ca_file` (or is
//! skipped, visibly, with `insecure`), and an upgrade and a rollback are gated end to end
//! through the proxy by the app's domain, under both deployers (`stack`, and `abra` through the
//! simulator). The probe tests deploy their apps with the harness (`TestStack`), not through
//! ci-warm, and the config test deploys nothing: those run once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use ci_warm::upgrade::probe::{HttpProbe, Prepared, ProbeOutcome};
use ci_warm_tests::both_deployers;
use ci_warm_tests::deployers::Kind;
use ci_warm_tests::docker::require_docker;
use ci_warm_tests::recipe::{DemoRecipe, release};
use ci_warm_tests::stack::TestStack;
use ci_warm_tests::tls_proxy::{DEFAULT_NAME, TlsProxy};
use ci_warm_tests::{images, run_ci_warm};

const V100: &str = "1.0.0+1.0.0";
const V110: &str = "1.1.0+1.0.0";

/// A demo stack deployed at the newest of `upto`'s catalogue, answering its version.
async fn demo_app(test: &str, upto: &str) -> (TestStack, DemoRecipe) {
    let st = TestStack::new(test);
    let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(upto)).expect("recipe");
    st.deploy(&recipe.dir).expect("stack deploy");
    st.wait_for("/version", 200, Duration::from_secs(180))
        .expect("the app answers on its port");
    (st, recipe)
}

fn through(proxy: &TlsProxy, url: &str) -> HttpProbe {
    HttpProbe {
        connect_to: Some(proxy.connect_to().parse().expect("connect_to")),
        ca_file: Some(proxy.ca_file.clone()),
        ..HttpProbe::get(url)
    }
}

async fn run(probe: &HttpProbe) -> ProbeOutcome {
    Prepared::new(probe, Duration::from_secs(10))
        .run()
        .await
        .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_probe_reaches_its_own_app_by_name_and_trust_is_explicit() {
    if require_docker().await.is_none() {
        return;
    }
    images::ensure_images().expect("demo images");
    let (a, _ra) = demo_app("tls_a", V100).await;
    let (b, _rb) = demo_app("tls_b", V110).await;
    let proxy = TlsProxy::start(&[("a.ci.test", a.port), ("b.ci.test", b.port)]).expect("nginx");

    // Each name reaches its own app (the proxy routes by SNI and Host), not the other one and
    // not the default server (which would answer 421).
    for (name, version) in [("a.ci.test", V100), ("b.ci.test", V110)] {
        let mut p = through(&proxy, &format!("https://{name}/version"));
        p.body_contains = Some(version.to_owned());
        assert_eq!(
            run(&p).await,
            ProbeOutcome::Ok,
            "{name}: {}",
            proxy.error_log()
        );
    }
    let mut wrong = through(&proxy, "https://a.ci.test/version");
    wrong.body_contains = Some(V110.to_owned());
    assert_eq!(
        run(&wrong).await,
        ProbeOutcome::BodyMismatch { status: 200 }
    );

    // A name the proxy has no certificate for gets the default one: the check fails and says
    // which name was expected and which the certificate has.
    let unknown = through(&proxy, "https://c.ci.test/version");
    let ProbeOutcome::Failed(why) = run(&unknown).await else {
        panic!("a certificate for another name passed");
    };
    assert!(
        why.contains("c.ci.test") && why.contains(DEFAULT_NAME),
        "{why}"
    );
    let reason = Prepared::new(&unknown, Duration::from_secs(10))
        .run()
        .await
        .failure()
        .expect("a failure reason");
    assert!(
        reason.starts_with("probe https://c.ci.test/version (via 127.0.0.1:"),
        "{reason}"
    );

    // Without the private CA the certificate is not trusted; `insecure` passes, visibly.
    let mut untrusted = through(&proxy, "https://a.ci.test/version");
    untrusted.ca_file = None;
    let ProbeOutcome::Failed(why) = run(&untrusted).await else {
        panic!("a certificate of an unknown CA passed");
    };
    assert!(why.to_lowercase().contains("issuer"), "{why}");
    untrusted.insecure = true;
    assert_eq!(run(&untrusted).await, ProbeOutcome::Ok);
    assert!(
        Prepared::new(&untrusted, Duration::from_secs(1))
            .probe
            .describe()
            .ends_with("insecure)")
    );
}

/// A host config whose app (deployed by `kind`, at its domain `kind.domain(st)`) has `probe`.
fn write_config(kind: Kind, st: &TestStack, recipe: &DemoRecipe, probe: Value) -> PathBuf {
    let config = st.path().join("config.json");
    let app = kind.demo_app(
        st,
        &recipe.url(),
        true,
        V100,
        serde_json::json!([probe]),
        &[],
    );
    let json = serde_json::json!({
        "state_dir": st.path().join("state"),
        "deployer": kind.deployer(st),
        "health": {"timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS, "interval_ms": 500},
        "snapshot": {"reserve_bytes": 0, "reserve_percent": 0},
        "apps": {"demo": app},
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    config
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn state(dir: &Path) -> Value {
    ci_warm_tests::state_files::app_state(&dir.join("state"), "demo")
}

both_deployers!(upgrade_and_rollback_are_gated_through_the_proxy => upgrade_and_rollback_are_gated_through_the_proxy_stack, upgrade_and_rollback_are_gated_through_the_proxy_abra);

async fn upgrade_and_rollback_are_gated_through_the_proxy(kind: Kind) {
    if require_docker().await.is_none() {
        return;
    }
    images::ensure_images().expect("demo images");
    let st = TestStack::new("tls_gate");
    let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(V100)).expect("recipe");
    // The proxy routes the app's own domain, as traefik does.
    let domain = kind.domain(&st);
    let domain = domain.as_str();
    let proxy = TlsProxy::start(&[(domain, st.port)]).expect("nginx");
    let probe = serde_json::json!({
        "url": format!("https://{domain}/health"),
        "connect_to": proxy.connect_to(),
        "ca_file": proxy.ca_file,
        "body_contains": "ok",
    });
    let config = write_config(kind, &st, &recipe, probe);
    assert_eq!(code(&run_ci_warm(&config, &["config", "check"])), 0);

    assert_eq!(
        code(&run_ci_warm(&config, &["reconcile", "demo"])),
        0,
        "bootstrap"
    );
    assert_eq!(state(st.path())["last_good"], V100);

    // A healthy release passes its gate through the proxy.
    recipe.publish(&release(V110).unwrap()).expect("publish");
    assert_eq!(
        code(&run_ci_warm(&config, &["reconcile", "demo"])),
        0,
        "upgrade"
    );
    assert_eq!(state(st.path())["last_good"], V110);

    // A release that never gets healthy fails the gate through the proxy, naming the probe as
    // it reaches the app, and is rolled back.
    recipe
        .publish(&release("1.2.0+1.0.0").unwrap())
        .expect("publish");
    let out = run_ci_warm(&config, &["reconcile", "demo"]);
    assert_eq!(code(&out), 4, "rolled back");
    let s = state(st.path());
    assert_eq!(s["last_good"], V110);
    let reason = s["failed"]["1.2.0+1.0.0"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "probe https://{domain}/health (via {})",
            proxy.connect_to()
        )),
        "{s}"
    );
    assert_eq!(
        st.wait_for("/version", 200, Duration::from_secs(180))
            .expect("the old version answers again")
            .trim(),
        V110
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_names_a_missing_ca_file_and_status_shows_insecure_probes() {
    let st = TestStack::new("tls_cfg");
    let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(V100)).expect("recipe");
    let missing = st.path().join("no-such-ca.pem");
    let config = write_config(
        Kind::Stack,
        &st,
        &recipe,
        serde_json::json!({"url": "https://demo.ci.test/", "connect_to": "127.0.0.1", "ca_file": missing}),
    );
    let out = run_ci_warm(&config, &["config", "check"]);
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apps.demo.probes[0].ca_file")
            && err.contains(&format!("ca_file {}: cannot read it", missing.display())),
        "{err}"
    );

    let config = write_config(
        Kind::Stack,
        &st,
        &recipe,
        serde_json::json!({"url": "https://demo.ci.test/", "connect_to": "127.0.0.1", "insecure": true}),
    );
    let out = run_ci_warm(&config, &["--json", "status", "--no-health"]);
    assert_eq!(code(&out), 0);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(
        status["apps"][0]["insecure_probes"],
        serde_json::json!(["https://demo.ci.test/"])
    );
    let out = run_ci_warm(&config, &["status", "--no-health"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "demo: probe https://demo.ci.test/ is insecure: its certificate is not checked"
        ),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
