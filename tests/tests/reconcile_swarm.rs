//! `ci-warm reconcile` end to end on the real swarm with the demo recipe, under both deployers
//! (`stack`, and `abra` through the simulator): upgrades, rollbacks of version and data, holds,
//! approvals, a killed run, a busy lock, backup-bot exclusions, a refused deploy command.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use ci_warm_tests::both_deployers;
use ci_warm_tests::deployers::Kind;
use ci_warm_tests::docker::require_docker;
use ci_warm_tests::recipe::{DemoRecipe, Release, release};
use ci_warm_tests::stack::TestStack;
use ci_warm_tests::state_files;
use ci_warm_tests::{ci_warm_bin, images};

struct World {
    st: TestStack,
    recipe: DemoRecipe,
    config: PathBuf,
    state_dir: PathBuf,
}

impl World {
    async fn new(
        kind: Kind,
        test: &str,
        upto: &str,
        initial: &str,
        stateful: bool,
    ) -> Option<World> {
        World::with_env(kind, test, upto, initial, stateful, &[]).await
    }

    /// [`World::new`] with more keys in the app's env file (written into the stack deployer's
    /// env file; for abra configured as the app's `env`, which its bootstrap writes).
    async fn with_env(
        kind: Kind,
        test: &str,
        upto: &str,
        initial: &str,
        stateful: bool,
        env: &[(&str, &str)],
    ) -> Option<World> {
        require_docker().await?;
        images::ensure_images().expect("demo images");
        let st = TestStack::new(test);
        let recipe =
            DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(upto)).expect("demo recipe");
        let state_dir = st.path().join("state");
        let config = st.path().join("config.json");
        let probes = serde_json::json!([{"url": format!("http://127.0.0.1:{}/health", st.port)}]);
        let app = kind.demo_app(&st, &recipe.url(), stateful, initial, probes, env);
        let json = serde_json::json!({
            "state_dir": state_dir,
            "deployer": kind.deployer(&st),
            "health": {"timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS, "interval_ms": 500},
            "snapshot": {"reserve_bytes": 0, "reserve_percent": 0},
            "apps": {"demo": app},
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        Some(World {
            st,
            recipe,
            config,
            state_dir,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ci_warm_bin());
        c.arg("--config").arg(&self.config).args(args);
        c.env(STRICT_NO_INPUT.0, STRICT_NO_INPUT.1);
        c
    }

    fn ci_warm(&self, args: &[&str]) -> Output {
        ci_warm_tests::run_ci_warm_with_env(
            &self.config,
            args,
            &[(STRICT_NO_INPUT.0, STRICT_NO_INPUT.1.as_ref())],
        )
    }

    fn reconcile(&self) -> i32 {
        self.ci_warm(&["reconcile", "demo"])
            .status
            .code()
            .unwrap_or(-1)
    }

    fn publish(&self, r: &Release) {
        self.recipe.publish(r).expect("publish");
    }

    fn state(&self) -> Value {
        state_files::app_state(&self.state_dir, "demo")
    }

    fn last_good(&self) -> String {
        self.state()["last_good"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn alerts(&self) -> Vec<Value> {
        state_files::alerts(&self.state_dir)
    }

    fn kinds(&self) -> Vec<String> {
        self.alerts()
            .iter()
            .map(|a| a["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn volume_file(&self, name: &str) -> Option<String> {
        let dir = self.st.volume_path("data").expect("data volume");
        std::fs::read_to_string(dir.join(name)).ok()
    }

    fn serving(&self) -> String {
        self.st
            .wait_for("/version", 200, Duration::from_secs(180))
            .expect("the app answers")
            .trim()
            .to_owned()
    }
}

/// The strict setting of an INFERRED abra fact: a command left without `-n` would prompt, and
/// with no terminal fail (the simulator's FATA). The scenarios here run under it, the ones of
/// abra_deployer.rs under the lenient default, so ci-warm passes `-n` on every call either way.
/// The stack deployer ignores it.
const STRICT_NO_INPUT: (&str, &str) = ("ABRA_SIM_REQUIRE_NO_INPUT", "1");

const V100: &str = "1.0.0+1.0.0";
const V110: &str = "1.1.0+1.0.0";
const MARKER: &str = "created by 1.0.0+1.0.0\n";

both_deployers!(stateful_upgrade_keeps_data_and_rollback_restores_it_once => stateful_upgrade_keeps_data_and_rollback_restores_it_once_stack, stateful_upgrade_keeps_data_and_rollback_restores_it_once_abra);

async fn stateful_upgrade_keeps_data_and_rollback_restores_it_once(kind: Kind) {
    let Some(w) = World::new(kind, "rc_stateful", V110, V100, true).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0, "bootstrap");
    assert_eq!(w.last_good(), V100);
    assert_eq!(w.reconcile(), 0, "upgrade");
    assert_eq!(w.last_good(), V110);
    assert_eq!(w.serving(), V110);
    assert_eq!(
        w.volume_file("marker").as_deref(),
        Some(MARKER),
        "marker kept over the upgrade"
    );
    let log_before = w.volume_file("versions.log").expect("versions.log");

    // The broken version writes junk into the volume and never gets healthy.
    w.publish(&release("1.2.0+1.0.0").unwrap());
    assert_eq!(w.reconcile(), 4, "rolled back and recovered");
    assert_eq!(w.last_good(), V110);
    assert_eq!(w.serving(), V110);
    assert_eq!(
        w.volume_file("marker").as_deref(),
        Some(MARKER),
        "marker restored"
    );
    assert_eq!(
        w.volume_file("junk-1.2.0+1.0.0"),
        None,
        "junk removed by the restore"
    );
    assert_eq!(
        w.volume_file("versions.log").unwrap(),
        format!("{log_before}{V110}\n"),
        "the volume is the pre-upgrade snapshot plus the redeployed start"
    );
    let alerts = w.alerts();
    assert_eq!(w.kinds(), ["rolled-back"]);
    assert_eq!(alerts[0]["recovered"], true);
    assert_eq!(alerts[0]["attempted"], "1.2.0+1.0.0");
    assert!(
        alerts[0]["error"][0]
            .as_str()
            .unwrap()
            .contains("probe http://127.0.0.1"),
        "the failed check is named: {}",
        alerts[0]["error"]
    );

    // The next tick neither redeploys the failed version nor alerts again.
    let log = w.volume_file("versions.log").unwrap();
    assert_eq!(w.reconcile(), 0);
    assert_eq!(
        w.volume_file("versions.log").unwrap(),
        log,
        "no deploy happened"
    );
    assert_eq!(w.alerts().len(), 1);

    // A newer safe version is taken.
    w.publish(&Release::new(
        "1.2.1+1.0.0",
        "1.0.0",
        "ok",
        "Fixes 1.2.0.\n",
    ));
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.last_good(), "1.2.1+1.0.0");
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
}

both_deployers!(stateless_upgrade_and_rollback_to_the_previous_version => stateless_upgrade_and_rollback_to_the_previous_version_stack, stateless_upgrade_and_rollback_to_the_previous_version_abra);

async fn stateless_upgrade_and_rollback_to_the_previous_version(kind: Kind) {
    let Some(w) = World::new(kind, "rc_stateless", V110, V100, false).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.serving(), V110);
    w.publish(&release("1.2.0+1.0.0").unwrap());
    assert_eq!(w.reconcile(), 4);
    assert_eq!(w.serving(), V110, "the previous version serves again");
    assert_eq!(w.kinds(), ["rolled-back"]);
    assert_eq!(w.alerts()[0]["recovered"], true);
    assert!(
        !w.state_dir.join("demo/snapshot").exists(),
        "a stateless app is never snapshotted"
    );
}

both_deployers!(holds_alert_once_safe_minor_flows_and_approve_releases => holds_alert_once_safe_minor_flows_and_approve_releases_stack, holds_alert_once_safe_minor_flows_and_approve_releases_abra);

async fn holds_alert_once_safe_minor_flows_and_approve_releases(kind: Kind) {
    let Some(w) = World::new(kind, "rc_holds", V110, V110, true).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0);
    w.publish(&release("1.3.0+1.1.0").unwrap());
    w.publish(&release("2.0.0+2.0.0").unwrap());
    w.publish(&Release::new(
        "1.1.1+1.0.0",
        "1.0.0",
        "ok",
        "A safe patch.\n",
    ));
    assert_eq!(w.reconcile(), 0);
    assert_eq!(
        w.last_good(),
        "1.1.1+1.0.0",
        "the safe minor is taken while others are held"
    );
    let mut kinds = w.kinds();
    kinds.sort();
    assert_eq!(kinds, ["held-major", "held-manual-migration"]);
    let manual = w
        .alerts()
        .into_iter()
        .find(|a| a["kind"] == "held-manual-migration")
        .unwrap();
    assert!(
        manual["notes"]
            .as_str()
            .unwrap()
            .contains("Manual migration required")
    );
    assert_eq!(manual["attempted"], "1.3.0+1.1.0");

    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.alerts().len(), 2, "a hold alerts once");

    assert!(
        w.ci_warm(&["approve", "demo", "1.3.0+1.1.0"])
            .status
            .success()
    );
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.last_good(), "1.3.0+1.1.0");
    assert!(
        w.ci_warm(&["approve", "demo", "2.0.0+2.0.0"])
            .status
            .success()
    );
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.last_good(), "2.0.0+2.0.0");
    assert_eq!(
        w.volume_file("marker").as_deref(),
        Some("created by 1.1.0+1.0.0\n")
    );
    assert_eq!(w.alerts().len(), 2);
}

both_deployers!(killed_mid_upgrade_is_rolled_back_by_the_next_run => killed_mid_upgrade_is_rolled_back_by_the_next_run_stack, killed_mid_upgrade_is_rolled_back_by_the_next_run_abra);

async fn killed_mid_upgrade_is_rolled_back_by_the_next_run(kind: Kind) {
    let Some(w) = World::new(kind, "rc_kill", V100, V100, true).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0);
    // Becomes healthy only after a minute: the run is still gating when it is killed.
    w.publish(&Release::new(V110, "1.0.0", "slow:60", "Slow to start.\n"));
    let mut child = w.command(&["reconcile", "demo"]).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let step = w.state()["intent"]["step"].as_str().map(str::to_owned);
        if step.as_deref() == Some("gate") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upgrade never reached its gate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(
        w.state()["intent"].is_object(),
        "the journal survives the kill"
    );

    assert_eq!(w.reconcile(), 4, "interrupted, recovered");
    assert_eq!(w.kinds(), ["interrupted"]);
    assert_eq!(w.alerts()[0]["recovered"], true);
    assert_eq!(w.last_good(), V100);
    assert!(w.state()["intent"].is_null());
    assert_eq!(w.serving(), V100);
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
}

both_deployers!(concurrent_reconciles_one_is_busy => concurrent_reconciles_one_is_busy_stack, concurrent_reconciles_one_is_busy_abra);

async fn concurrent_reconciles_one_is_busy(kind: Kind) {
    let Some(w) = World::new(kind, "rc_busy", V110, V100, true).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0);
    // Another holder of the app's lock, taken the way every ci-warm command takes it: held by
    // this test, so the busy run is chosen, not hoped for (a spawned run might not have taken
    // the lock yet on a slow machine, or have finished on a fast one).
    let held = ci_warm::platform::lock::acquire(&w.state_dir.join("demo"), "demo", false)
        .expect("take the app's lock");
    let b = w.command(&["reconcile", "demo"]).output().expect("run b");
    assert_eq!(b.status.code(), Some(75), "the second run is busy");
    assert!(String::from_utf8_lossy(&b.stderr).contains("busy"));
    assert_eq!(w.last_good(), V100, "the busy run changed nothing");
    drop(held);
    assert_eq!(w.reconcile(), 0, "once the lock is free the upgrade runs");
    assert_eq!(w.last_good(), V110);
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
    assert!(w.alerts().is_empty());
}

/// `docker stack rm`, then wait until no container (running or stopped) holds the volume.
fn undeploy(stack: &str) {
    let out = Command::new("docker")
        .args(["stack", "rm", stack])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let volume = format!("volume={stack}_data");
    let label = format!("label=com.docker.stack.namespace={stack}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Exited one-shot containers are never removed by swarm and would hold the volume.
        let _ = Command::new("docker")
            .args(["container", "prune", "-f", "--filter", &label])
            .output();
        let users = Command::new("docker")
            .args(["ps", "-aq", "--filter", &volume])
            .output()
            .unwrap();
        if users.stdout.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers still hold {stack}_data"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

both_deployers!(snapshot_is_refused_while_deployed_and_restores_a_wiped_volume => snapshot_is_refused_while_deployed_and_restores_a_wiped_volume_stack, snapshot_is_refused_while_deployed_and_restores_a_wiped_volume_abra);

async fn snapshot_is_refused_while_deployed_and_restores_a_wiped_volume(kind: Kind) {
    let Some(w) = World::new(kind, "rc_snap", V100, V100, true).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0);
    let busy = w.ci_warm(&["snapshot", "take", "demo"]);
    assert!(
        !busy.status.success(),
        "a snapshot of a volume in use is refused"
    );
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    assert!(!w.state_dir.join("demo/snapshot").exists());

    undeploy(&w.st.name);
    assert!(w.ci_warm(&["snapshot", "take", "demo"]).status.success());
    assert!(w.ci_warm(&["snapshot", "verify", "demo"]).status.success());
    let volume = w.st.volume_path("data").unwrap();
    for entry in std::fs::read_dir(&volume).unwrap() {
        let p = entry.unwrap().path();
        std::fs::remove_file(&p).unwrap_or_else(|_| std::fs::remove_dir_all(&p).unwrap());
    }
    std::fs::write(volume.join("junk"), "after the wipe").unwrap();
    assert!(w.ci_warm(&["snapshot", "restore", "demo"]).status.success());
    assert_eq!(
        w.volume_file("marker").as_deref(),
        Some(MARKER),
        "marker survives take -> wipe -> restore"
    );
    assert_eq!(w.volume_file("junk"), None);
}

/// A cache volume the recipe excludes with backup-bot's label, in an overlay compose file that
/// the env file's COMPOSE_FILE names (the label is read from the compose files of the version
/// being snapshotted: after the undeploy there are no services to read it from).
const CACHE_OVERLAY: &str = r#"version: "3.8"
services:
  app:
    volumes:
      - cache:/cache
    deploy:
      labels:
        - "backupbot.backup.volumes.cache=false"
volumes:
  cache:
"#;

both_deployers!(a_backupbot_excluded_volume_is_neither_snapshotted_nor_restored => a_backupbot_excluded_volume_is_neither_snapshotted_nor_restored_stack, a_backupbot_excluded_volume_is_neither_snapshotted_nor_restored_abra);

async fn a_backupbot_excluded_volume_is_neither_snapshotted_nor_restored(kind: Kind) {
    // Exclusions are read from the compose files that the app's env file names, whichever
    // deployer deploys them (abra's env file is the one its bootstrap creates).
    let compose_file = "compose.yml:compose.cache.yml";
    let Some(w) = World::with_env(
        kind,
        "rc_bbot",
        V100,
        V110,
        true,
        &[("COMPOSE_FILE", compose_file)],
    )
    .await
    else {
        return;
    };
    let with_cache = |tag: &str| {
        let r = release(tag).unwrap();
        w.recipe
            .publish_files(
                tag,
                &[
                    ("compose.yml", &ci_warm_tests::recipe::compose(&r)),
                    ("compose.cache.yml", CACHE_OVERLAY),
                    (&format!("release/{tag}"), &r.notes),
                ],
                // Annotated, as a recipe's releases are (abra's lint R014 refuses others).
                true,
            )
            .unwrap();
    };
    with_cache(V110);
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.last_good(), V110);
    let cache = w.st.volume_path("cache").expect("cache volume");
    std::fs::write(cache.join("before"), "cache before the upgrade").unwrap();

    // A broken release: snapshot, deploy, gate fails, rollback with the data restored.
    with_cache("1.2.0+1.0.0");
    assert_eq!(w.reconcile(), 4, "{:?}", w.kinds());
    assert_eq!(w.last_good(), V110);
    let status = w.ci_warm(&["--json", "status", "demo", "--no-health"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let volumes = &status["apps"][0]["snapshot"]["volumes"];
    assert_eq!(volumes, &serde_json::json!(["data"]), "{status}");

    // Restoring touches only what the snapshot holds: the cache stays as it is.
    undeploy(&w.st.name);
    std::fs::remove_file(cache.join("before")).unwrap();
    std::fs::write(cache.join("after"), "written after the snapshot").unwrap();
    let data = w.st.volume_path("data").unwrap();
    std::fs::write(data.join("junk"), "after the snapshot").unwrap();
    let out = w.ci_warm(&["snapshot", "restore", "demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.volume_file("junk"), None, "data is restored");
    assert!(cache.join("after").exists(), "the cache is not restored");
    assert!(!cache.join("before").exists(), "the cache is not restored");
}

both_deployers!(a_release_whose_deploy_command_fails_is_rolled_back_with_its_data => a_release_whose_deploy_command_fails_is_rolled_back_with_its_data_stack, a_release_whose_deploy_command_fails_is_rolled_back_with_its_data_abra);

/// A release whose deploy *command* fails (docker refuses its compose file: nothing gets
/// deployed at all, which is not an unhealthy deploy) is rolled back like a failed gate:
/// the previous version and its data come back, the version is recorded as failed, one alert.
async fn a_release_whose_deploy_command_fails_is_rolled_back_with_its_data(kind: Kind) {
    let Some(w) = World::new(kind, "rc_deployfail", V100, V100, true).await else {
        return;
    };
    assert_eq!(w.reconcile(), 0);
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
    let r = release(V110).unwrap();
    let refused = ci_warm_tests::recipe::compose(&r).replacen(
        "services:",
        "services:\n  broken:\n    image: ci-warm-demo:1.0.0\n    deploy:\n      replicas: not-a-number",
        1,
    );
    w.recipe
        .publish_files(
            V110,
            &[
                ("compose.yml", &refused),
                (&format!("release/{V110}"), &r.notes),
            ],
            true,
        )
        .unwrap();
    assert_eq!(w.reconcile(), 4, "rolled back: {:?}", w.kinds());
    assert_eq!(w.kinds(), ["rolled-back"]);
    let alert = &w.alerts()[0];
    assert_eq!(alert["recovered"], true, "{alert}");
    // It failed at the deploy command (named in the message), not at the gate.
    let command = match kind {
        Kind::Stack => "docker stack deploy".to_owned(),
        Kind::Abra => format!("app deploy {}", kind.domain(&w.st)),
    };
    let message = alert["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&command) && !message.contains("probe"),
        "{alert}"
    );
    assert_eq!(w.last_good(), V100);
    assert!(w.state()["intent"].is_null());
    assert!(w.state()["failed"][V110].is_object(), "{}", w.state());
    assert_eq!(w.serving(), V100);
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
}

/// A container outside the stack that keeps a volume of it mounted (an operator's debugging
/// shell, a backup job): the real engine's reason for an undeploy that never frees the volumes.
/// Removed on drop, so a failing assertion leaves nothing behind that holds the test's volume.
struct VolumeHolder(String);

impl VolumeHolder {
    fn start(stack: &str) -> VolumeHolder {
        let name = format!("{stack}_holder");
        // Read-only and with its own data dir: it holds the volume without touching it.
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(["-v", &format!("{stack}_data:/held:ro")])
            .args(["-e", "DATA_DIR=/own", "-e", "PORT=0"])
            .arg(images::image("1.0.0"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        VolumeHolder(name)
    }

    fn remove(&self) {
        let out = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker rm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for VolumeHolder {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

both_deployers!(an_undeploy_that_fails_before_the_snapshot_redeploys_the_old_version => an_undeploy_that_fails_before_the_snapshot_redeploys_the_old_version_stack, an_undeploy_that_fails_before_the_snapshot_redeploys_the_old_version_abra);

/// The undeploy before a stateful upgrade's snapshot fails (the stack's services are removed,
/// but a container outside the stack keeps its volume past `undeploy.timeout_secs`): nothing is
/// snapshotted and the new version never runs, so the old version is redeployed on its
/// untouched data, one `undeploy-failed` alert names the app, the undeploy and the holder, no
/// version is recorded as failed, and once the volume is free the next run upgrades.
async fn an_undeploy_that_fails_before_the_snapshot_redeploys_the_old_version(kind: Kind) {
    let Some(w) = World::new(kind, "rc_undeployfail", V100, V100, true).await else {
        return;
    };
    // A short undeploy wait keeps the test quick; the failure is the same at the default.
    let mut config: Value = serde_json::from_slice(&std::fs::read(&w.config).unwrap()).unwrap();
    config["undeploy"] = serde_json::json!({"timeout_secs": 10});
    std::fs::write(&w.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    assert_eq!(w.reconcile(), 0, "bootstrap");
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
    let holder = VolumeHolder::start(&w.st.name);
    w.publish(&release(V110).unwrap());

    let out = w.ci_warm(&["--json", "reconcile", "demo"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(out.status.code(), Some(1), "aborted: {report}");
    assert_eq!(report[0]["outcome"], "aborted", "{report}");
    assert_eq!(w.kinds(), ["undeploy-failed"]);
    let alert = &w.alerts()[0];
    assert_eq!(alert["recovered"], true, "{alert}");
    assert_eq!(alert["attempted"], V110, "{alert}");
    assert_eq!(alert["last_good"], V100, "{alert}");
    let message = alert["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("undeploying demo before its snapshot failed")
            && message.contains(&holder.0)
            && message.contains(&format!("{V100} is redeployed and healthy")),
        "{alert}"
    );
    let state = w.state();
    assert_eq!(state["last_good"], V100);
    assert!(state["intent"].is_null(), "{state}");
    assert_eq!(
        state["failed"],
        serde_json::json!({}),
        "not the version's fault"
    );
    assert_eq!(state["last_run"]["outcome"], "aborted");
    assert!(
        state["last_run"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("undeploying demo")),
        "{state}"
    );
    assert!(
        !w.state_dir.join("demo/snapshot").exists(),
        "nothing was snapshotted"
    );
    assert_eq!(w.serving(), V100);
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
    let log = w.volume_file("versions.log").unwrap_or_default();
    assert!(!log.contains(V110), "the new version never ran: {log}");

    // The volume is free again: the next run upgrades with the data kept, and alerts nothing.
    holder.remove();
    assert_eq!(w.reconcile(), 0, "upgrade");
    assert_eq!(w.last_good(), V110);
    assert_eq!(w.serving(), V110);
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));
    assert_eq!(w.kinds(), ["undeploy-failed"], "one alert in all");
}
