//! The operator surface on the real swarm, under both deployers (`stack`, and `abra` through
//! the simulator): after an upgrade, a hold and a rollback of the demo app, `ci-warm status
//! --json` matches `state.json`, the metrics file parses and counts them, a failing `on_alert`
//! hook is logged without failing the run, and `alerts poll` hands each alert over once.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use ci_warm_tests::both_deployers;
use ci_warm_tests::deployers::Kind;
use ci_warm_tests::docker::require_docker;
use ci_warm_tests::images;
use ci_warm_tests::recipe::{DemoRecipe, release};
use ci_warm_tests::stack::TestStack;

const V100: &str = "1.0.0+1.0.0";
const V110: &str = "1.1.0+1.0.0";
const BROKEN: &str = "1.2.0+1.0.0";
const MAJOR: &str = "2.0.0+2.0.0";

struct World {
    st: TestStack,
    recipe: DemoRecipe,
    config: PathBuf,
    state_dir: PathBuf,
    metrics: PathBuf,
    hook_log: PathBuf,
}

impl World {
    fn ci_warm(&self, args: &[&str]) -> Output {
        ci_warm_tests::run_ci_warm(&self.config, args)
    }

    fn reconcile(&self) -> Output {
        let metrics = self.metrics.to_string_lossy().into_owned();
        self.ci_warm(&["reconcile", "demo", "--metrics-file", &metrics])
    }

    fn state(&self) -> Value {
        ci_warm_tests::state_files::app_state(&self.state_dir, "demo")
    }

    fn status(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--json", "status"];
        args.extend_from_slice(extra);
        let out = self.ci_warm(&args);
        assert!(out.status.success(), "status exits 0");
        serde_json::from_slice(&out.stdout).expect("status --json is valid JSON")
    }
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value as V;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            V::Counter(x) | V::Gauge(x) | V::Untyped(x) => x,
            _ => f64::NAN,
        })
}

both_deployers!(status_metrics_and_alerts_after_upgrade_hold_and_rollback => status_metrics_and_alerts_after_upgrade_hold_and_rollback_stack, status_metrics_and_alerts_after_upgrade_hold_and_rollback_abra);

async fn status_metrics_and_alerts_after_upgrade_hold_and_rollback(kind: Kind) {
    if require_docker().await.is_none() {
        return;
    }
    images::ensure_images().expect("demo images");
    let st = TestStack::new("status");
    let recipe =
        DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(V110)).expect("demo recipe");
    let state_dir = st.path().join("state");
    let config = st.path().join("config.json");
    let hook_log = st.path().join("hook.log");
    let probes = serde_json::json!([{"url": format!("http://127.0.0.1:{}/health", st.port)}]);
    let app = kind.demo_app(&st, &recipe.url(), true, V100, probes, &[]);
    let json = serde_json::json!({
        "state_dir": state_dir,
        "deployer": kind.deployer(&st),
        "health": {"timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS, "interval_ms": 500},
        "snapshot": {"reserve_bytes": 0, "reserve_percent": 0},
        // A chat post that fails: logged, never fatal.
        "alerts": {"on_alert": ["/bin/sh", "-c",
            format!("echo \"$1\" >> {}; echo chat is down >&2; exit 7", hook_log.display()),
            "hook"]},
        "apps": {"demo": app},
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let w = World {
        metrics: st.path().join("textfile/ci-warm.prom"),
        st,
        recipe,
        config,
        state_dir,
        hook_log,
    };
    std::fs::create_dir_all(w.metrics.parent().unwrap()).unwrap();

    assert_eq!(w.reconcile().status.code(), Some(0), "bootstrap");
    assert_eq!(w.reconcile().status.code(), Some(0), "upgrade");
    assert_eq!(w.state()["last_good"], V110);

    // One run: the major is held, the broken minor is attempted and rolled back.
    w.recipe.publish(&release(MAJOR).unwrap()).unwrap();
    w.recipe.publish(&release(BROKEN).unwrap()).unwrap();
    let out = w.reconcile();
    assert_eq!(
        out.status.code(),
        Some(4),
        "rolled back and recovered; the failing hook does not change the result"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("on_alert hook failed"),
        "the hook failure is logged"
    );
    assert_eq!(
        std::fs::read_to_string(&w.hook_log)
            .unwrap()
            .lines()
            .count(),
        2,
        "the hook ran for the hold and for the rollback"
    );

    // status --json matches state.json.
    let state = w.state();
    let status = w.status(&["--verify"]);
    assert_eq!(status["schema"], 1);
    assert_eq!(status["pending_alerts"], 2);
    let apps = status["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    let demo = &apps[0];
    assert_eq!(demo["app"], "demo");
    assert_eq!(demo["configured"], true);
    assert_eq!(demo["stack"], w.st.name.as_str());
    assert_eq!(demo["deployed"], state["deployed"]);
    assert_eq!(demo["last_good"], state["last_good"]);
    assert_eq!(demo["last_good"], V110);
    assert_eq!(demo["last_run"], state["last_run"]);
    assert_eq!(demo["last_run"]["outcome"], "rolled-back");
    assert_eq!(demo["intent"], state["intent"]);
    assert!(demo["intent"].is_null());
    let failed: Vec<&str> = demo["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["version"].as_str().unwrap())
        .collect();
    let state_failed: Vec<&str> = state["failed"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(failed, state_failed);
    assert_eq!(failed, [BROKEN]);
    assert_eq!(
        demo["failed"][0]["reason"], state["failed"][BROKEN]["reason"],
        "the failure reason is the gate's"
    );
    assert_eq!(demo["held"].as_array().unwrap().len(), 1);
    assert_eq!(demo["held"][0]["version"], MAJOR);
    assert_eq!(demo["held"][0]["kind"], "held-major");
    assert!(
        state["alerted_holds"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!("held-major:{MAJOR}")))
    );
    assert_eq!(
        demo["health"]["state"], "healthy",
        "the rolled-back version serves: {}",
        demo["health"]
    );
    let snap = &demo["snapshot"];
    assert_eq!(snap["volumes"], serde_json::json!(["data"]));
    assert!(snap["bytes"].as_u64().unwrap() > 0);
    assert!(snap["age_secs"].as_u64().unwrap() < 600);
    assert_eq!(snap["verified"]["depth"], "full");
    assert_eq!(snap["verified"]["ok"], true);
    let mut kinds: Vec<String> = demo["pending_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let id = id.as_str().unwrap();
            id.rsplit_once("-demo-").unwrap().1.to_owned()
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["held-major", "rolled-back"]);

    // The terminal table names the app, its versions and the hold.
    let table = w.ci_warm(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("APP "), "{table}");
    assert!(table.contains("healthy") && table.contains(V110));
    assert!(table.contains(&format!("held {MAJOR}")));

    // The metrics file parses and counts the upgrade and the rollback.
    let text = std::fs::read_to_string(&w.metrics).expect("metrics file written");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(scrape.samples.len(), samples, "every sample line parses");
    let demo_l = [("app", "demo")];
    assert_eq!(
        metric(&scrape, "ci_warm_upgrades_total", &demo_l),
        Some(1.0)
    );
    assert_eq!(
        metric(&scrape, "ci_warm_rollbacks_total", &demo_l),
        Some(1.0)
    );
    assert_eq!(metric(&scrape, "ci_warm_held_versions", &demo_l), Some(1.0));
    assert_eq!(
        metric(&scrape, "ci_warm_last_run_exit_code", &demo_l),
        Some(4.0)
    );
    assert_eq!(
        metric(&scrape, "ci_warm_snapshot_size_bytes", &demo_l),
        snap["bytes"].as_f64()
    );
    assert!(metric(&scrape, "ci_warm_snapshot_duration_seconds", &demo_l).is_some());
    assert_eq!(
        metric(&scrape, "ci_warm_pending_alerts", &demo_l),
        Some(2.0)
    );

    // The builder loop's poll hands both alerts over; they are archived once acknowledged.
    let polled = w.ci_warm(&["--json", "alerts", "poll"]);
    assert!(polled.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&polled.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2);
    let mut ack = vec!["alerts", "ack"];
    ack.extend(ids.iter().map(String::as_str));
    assert!(w.ci_warm(&ack).status.success());
    assert!(w.ci_warm(&["--json", "alerts", "poll"]).stdout.is_empty());
    assert_eq!(w.status(&["--no-health"])["pending_alerts"], 0);
}
