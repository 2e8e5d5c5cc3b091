//! Canonicals on the real swarm with the demo recipe, under both deployers (`stack`, and `abra`
//! through the simulator, where a canonical rests undeployed and every upgrade, quick run and
//! rewarm starts from there): a promotion moves the canonical (data kept), the quick lane passes
//! and fails without ever changing the known-good, a busy canonical refuses a quick run
//! untouched, rewarm rebuilds from nothing; and the nightly sweep (which deploys nothing itself,
//! so it needs no swarm and runs once) orders, records and promotes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use ci_warm_tests::both_deployers;
use ci_warm_tests::deployers::Kind;
use ci_warm_tests::docker::require_docker;
use ci_warm_tests::recipe::DemoRecipe;
use ci_warm_tests::stack::TestStack;
use ci_warm_tests::state_files;
use ci_warm_tests::{ci_warm_bin, images};

const V100: &str = "1.0.0+1.0.0";
const V110: &str = "1.1.0+1.0.0";
const V120: &str = "1.2.0+1.0.0";
const APP: &str = "warm-demo";

fn run(config: &Path, args: &[&str]) -> Output {
    ci_warm_tests::run_ci_warm(config, args)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "ci-warm tests")
        .env("GIT_AUTHOR_EMAIL", "tests@ci-warm.invalid")
        .env("GIT_COMMITTER_NAME", "ci-warm tests")
        .env("GIT_COMMITTER_EMAIL", "tests@ci-warm.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file of a tree with its bytes (directories as empty entries).
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            if p.is_dir() {
                out.insert(rel, vec![]);
                walk(root, &p, out);
            } else {
                out.insert(rel, read(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

struct World {
    st: TestStack,
    config: PathBuf,
    state_dir: PathBuf,
}

impl World {
    /// A canonical `demo` of `recipe` at `version` deployed as `st` by `kind`'s deployer, with
    /// `extra` keys on top of the canonical's own; its config written to `<test dir>/config.json`.
    fn new(kind: Kind, st: TestStack, recipe: &DemoRecipe, version: &str, extra: Value) -> World {
        let state_dir = st.path().join("state");
        let config = st.path().join("config.json");
        let mut canonical = serde_json::json!({
            "version": version,
            "repo": recipe.url(),
            "probes": [{"url": format!("http://127.0.0.1:{}/health", st.port)}],
        });
        let keys = canonical.as_object_mut().unwrap();
        keys.extend(kind.app_keys(&st));
        if let Value::Object(extra) = extra {
            keys.extend(extra);
        }
        let json = serde_json::json!({
            "state_dir": state_dir,
            "deployer": kind.deployer(&st),
            "health": {"timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS, "interval_ms": 500},
            "snapshot": {"reserve_bytes": 0, "reserve_percent": 0},
            "canonicals": {"demo": canonical},
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        World {
            st,
            config,
            state_dir,
        }
    }

    fn ci_warm(&self, args: &[&str]) -> Output {
        run(&self.config, args)
    }
    fn app_dir(&self) -> PathBuf {
        self.state_dir.join(APP)
    }
    fn manifest(&self) -> Vec<u8> {
        read(&self.app_dir().join("snapshot/manifest.json"))
    }
    fn state(&self) -> Value {
        state_files::app_state(&self.state_dir, APP)
    }
    fn registry(&self) -> Vec<u8> {
        std::fs::read(self.state_dir.join("registry.json")).unwrap_or_default()
    }
    fn volume(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.st.volume_path("data").expect("data volume"))
    }
    fn known_good(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.app_dir().join("snapshot/volumes/data"))
    }
    fn volume_file(&self, name: &str) -> Option<String> {
        self.volume()
            .get(Path::new(name))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
    fn services(&self) -> String {
        let out = Command::new("docker")
            .args([
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.st.name),
            ])
            .output()
            .expect("docker service ls");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
    fn results(&self) -> Vec<Value> {
        state_files::json_files(&self.state_dir.join("results/demo"))
    }
    fn quick(&self, r: &str, run_id: &str, cmd: &[&str]) -> (i32, Value) {
        let mut args = vec!["--json", "quick", "demo", "--ref", r, "--run", run_id, "--"];
        args.extend_from_slice(cmd);
        let out = self.ci_warm(&args);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (code(&out), report)
    }
    /// After a failed quick run: the volumes are the known-good, nothing is deployed, the
    /// known-good and the registry are byte-for-byte what they were.
    fn assert_restored(&self, manifest: &[u8], registry: &[u8], what: &str) {
        assert_eq!(self.manifest(), manifest, "{what}: known-good unchanged");
        assert_eq!(self.registry(), registry, "{what}: registry unchanged");
        assert_eq!(self.volume(), self.known_good(), "{what}: volumes restored");
        assert_eq!(self.services(), "", "{what}: undeployed");
        assert!(
            !self.app_dir().join("drift.json").exists(),
            "{what}: no drift left"
        );
        assert_eq!(
            code(&self.ci_warm(&["snapshot", "verify", APP])),
            0,
            "{what}"
        );
    }
}

both_deployers!(promote_moves_the_canonical_and_quick_never_touches_the_known_good => promote_moves_the_canonical_and_quick_never_touches_the_known_good_stack, promote_moves_the_canonical_and_quick_never_touches_the_known_good_abra);

async fn promote_moves_the_canonical_and_quick_never_touches_the_known_good(kind: Kind) {
    let Some(_docker) = require_docker().await else {
        return;
    };
    images::ensure_images().expect("demo images");
    let st = TestStack::new("canon");
    let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(V120)).unwrap();
    // A PR branch on top of 1.1.0: same version label, but the app runs (and logs) as `pr-1`.
    git(&recipe.dir, &["checkout", "--quiet", "-b", "good", V110]);
    let compose = recipe.dir.join("compose.yml");
    let text = std::fs::read_to_string(&compose).unwrap();
    let pr = text.replacen(&format!("RECIPE_VERSION={V110}"), "RECIPE_VERSION=pr-1", 1);
    assert_ne!(pr, text);
    std::fs::write(&compose, pr).unwrap();
    git(&recipe.dir, &["commit", "--quiet", "-am", "pr-1"]);
    git(&recipe.dir, &["checkout", "--quiet", "main"]);
    let broken_commit = git(&recipe.dir, &["rev-parse", &format!("{V120}^{{commit}}")]);
    let v110_commit = git(&recipe.dir, &["rev-parse", &format!("{V110}^{{commit}}")]);
    let w = World::new(
        kind,
        st,
        &recipe,
        V100,
        serde_json::json!({"health_timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS}),
    );

    // No canonical yet: quick says to run cold, with its own exit code, touching nothing.
    let (c, _) = w.quick("good", "q0", &["true"]);
    assert_eq!(c, 69, "no known-good yet");
    assert!(w.results().is_empty());

    // Bootstrap at the config's version; the canonical rests undeployed on its known-good.
    assert_eq!(code(&w.ci_warm(&["reconcile", APP])), 0);
    assert_eq!(w.state()["last_good"], V100);
    assert_eq!(w.services(), "", "a canonical rests undeployed");
    assert_eq!(
        w.volume(),
        w.known_good(),
        "the known-good is the bootstrapped data"
    );
    let marker = w.volume_file("marker").expect("the app created its marker");
    assert!(marker.contains(V100), "{marker}");

    // A green cold run promotes 1.1.0; the reconcile upgrades to it with the data kept.
    let out = w.ci_warm(&[
        "canonical",
        "promote",
        "demo",
        "--version",
        V110,
        "--commit",
        &v110_commit,
        "--mode",
        "cold",
        "--result",
        "pass",
        "--run",
        "cold-1",
    ]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded"));
    let manifest_v100 = w.manifest();
    let out = w.ci_warm(&["--json", "reconcile", APP]);
    assert_eq!(code(&out), 0);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["outcome"], "upgraded", "{report}");
    assert_eq!(w.state()["last_good"], V110);
    assert_eq!(w.volume_file("marker"), Some(marker.clone()), "data kept");
    assert!(w.volume_file("versions.log").unwrap().contains(V110));
    assert_ne!(w.manifest(), manifest_v100, "the known-good moved to 1.1.0");
    assert_eq!(w.volume(), w.known_good());
    let list = w.ci_warm(&["--json", "canonical", "list"]);
    let rows: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["registry"]["version"], V110);
    assert_eq!(rows[0]["last_good"], V110);
    assert_eq!(rows[0]["known_good"], true);

    let manifest = w.manifest();
    let registry = w.registry();

    // Quick pass: the test sees the deployment in its environment; the known-good is untouched.
    let seen = w.st.path().join("seen");
    let (c, report) = w.quick(
        "good",
        "q1",
        &[
            "sh",
            "-c",
            "printf '%s|%s|%s|%s' \"$CI_WARM_DOMAIN\" \"$CI_WARM_STACK\" \"$CI_WARM_RUN\" \"$CI_WARM_MODE\" > \"$0\"",
            seen.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 0, "{report}");
    assert_eq!(report["mode"], "quick");
    assert_eq!(report["result"], "pass");
    assert_eq!(
        String::from_utf8(read(&seen)).unwrap(),
        format!("{}|{}|q1|quick", kind.domain(&w.st), w.st.name)
    );
    assert_eq!(
        w.manifest(),
        manifest,
        "known-good byte-identical after a pass"
    );
    assert_eq!(code(&w.ci_warm(&["snapshot", "verify", APP])), 0);
    assert_eq!(w.registry(), registry, "quick never promotes");
    assert_eq!(w.services(), "", "undeployed after the pass");
    assert!(
        w.app_dir().join("drift.json").exists(),
        "the pass left its data"
    );
    let log = w.volume_file("versions.log").unwrap();
    assert_eq!(
        log.lines().last(),
        Some("pr-1"),
        "the ref ran on the volumes: {log}"
    );
    assert_ne!(w.volume(), w.known_good());

    // Quick fail (the test command exits 1; the ref is a tag this time): restored, undeployed.
    let (c, report) = w.quick(V110, "q2", &["false"]);
    assert_eq!(c, 1, "{report}");
    assert_eq!(
        (report["result"].as_str(), report["failed_step"].as_str()),
        (Some("fail"), Some("test"))
    );
    assert_eq!(report["exit_code"], 1);
    w.assert_restored(&manifest, &registry, "quick fail");

    // Quick with a broken ref (1.2.0 never gets healthy and writes junk): restored, undeployed.
    let (c, report) = w.quick(&broken_commit, "q3", &["true"]);
    assert_eq!(c, 1, "{report}");
    assert_eq!(report["failed_step"], "deploy-ref", "{report}");
    assert_eq!(report["commit"], broken_commit.as_str());
    w.assert_restored(&manifest, &registry, "broken ref");
    assert!(w.volume_file(&format!("junk-{V120}")).is_none());
    let results = w.results();
    assert_eq!(
        results
            .iter()
            .map(|r| r["result"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["pass", "fail", "fail"]
    );
    assert!(results.iter().all(|r| r["mode"] == "quick"));

    // A reconcile holds the canonical's lock: quick is busy and touches nothing.
    let state_before = read(&w.app_dir().join("state.json"));
    {
        let _held = ci_warm::platform::lock::acquire(&w.app_dir(), APP, false).unwrap();
        let (c, _) = w.quick("good", "q4", &["true"]);
        assert_eq!(c, 75, "busy");
    }
    assert_eq!(read(&w.app_dir().join("state.json")), state_before);
    assert_eq!(w.results().len(), 3, "nothing recorded");
    w.assert_restored(&manifest, &registry, "busy");

    // A hung test command is stopped at --timeout and fails the run like any failure.
    let started = std::time::Instant::now();
    let mut args = vec!["--json", "quick", "demo", "--ref", "good", "--run", "q5"];
    args.extend_from_slice(&["--timeout", "2", "--", "sleep", "300"]);
    let out = w.ci_warm(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(code(&out), 1, "{report}");
    assert_eq!(report["failed_step"], "test", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("did not finish within 2s"),
        "{report}"
    );
    // Not a speed limit: a run that waited for the command to end by itself took 300 s or more.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(300),
        "quick waited for the hung command instead of stopping it at --timeout"
    );
    w.assert_restored(&manifest, &registry, "timed-out test");

    // A quick run killed (-9) while the ref is deployed on the canonical's data: the next
    // reconcile finds the unfinished drift, restores the known-good, undeploys and alerts.
    let pid_file = w.st.path().join("test-pid");
    let script = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let mut quick = Command::new(ci_warm_bin())
        .arg("--config")
        .arg(&w.config)
        .args([
            "quick", "demo", "--ref", "good", "--run", "q6", "--", "sh", "-c",
        ])
        .arg(&script)
        .spawn()
        .expect("spawning ci-warm quick");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the test command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    quick.kill().unwrap();
    quick.wait().unwrap();
    let test_pid = std::fs::read_to_string(&pid_file).unwrap();
    let _ = Command::new("kill").args(["-9", test_pid.trim()]).status();
    assert_ne!(w.services(), "", "the killed run left the ref deployed");
    let drift: Value = serde_json::from_slice(&read(&w.app_dir().join("drift.json"))).unwrap();
    assert_eq!(drift["finished"], false, "{drift}");
    assert_eq!(drift["run"], "q6");
    let out = w.ci_warm(&["--json", "reconcile", APP]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        code(&out),
        4,
        "recovered, like any interrupted run: {report}"
    );
    assert_eq!(report[0]["outcome"], "interrupted", "{report}");
    w.assert_restored(&manifest, &registry, "killed quick");
    assert_eq!(w.state()["deployed"], Value::Null);
    let alerts = state_files::alerts(&w.state_dir);
    let interrupted: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["kind"] == "interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "{alerts:?}");
    assert_eq!(interrupted[0]["recovered"], true);
    assert_eq!(interrupted[0]["attempted"], "good");
    // The next reconcile has nothing left to recover.
    assert_eq!(code(&w.ci_warm(&["reconcile", APP])), 0);
    assert_eq!(w.services(), "");

    // Rewarm: fresh volumes at the registry version become the new known-good.
    let out = w.ci_warm(&["canonical", "rewarm", "demo"]);
    assert_eq!(code(&out), 0);
    let fresh = w.volume_file("marker").expect("marker");
    assert!(fresh.contains(V110) && !fresh.contains(V100), "{fresh}");
    assert_eq!(w.volume(), w.known_good());
    assert_ne!(w.manifest(), manifest);
    assert_eq!(w.services(), "");
    assert_eq!(w.state()["last_good"], V110);

    // A rewarm whose fresh deployment fails its gate puts the known-good back and keeps it.
    let manifest = w.manifest();
    let v120_commit = broken_commit.clone();
    let out = w.ci_warm(&[
        "canonical",
        "promote",
        "demo",
        "--version",
        V120,
        "--commit",
        &v120_commit,
        "--mode",
        "cold",
        "--result",
        "pass",
    ]);
    assert_eq!(code(&out), 0);
    assert_eq!(code(&w.ci_warm(&["canonical", "rewarm", "demo"])), 4);
    assert_eq!(w.manifest(), manifest);
    assert_eq!(w.volume(), w.known_good());
    assert_eq!(w.services(), "");
    assert_eq!(w.state()["last_good"], V110);
}

both_deployers!(a_registry_version_the_canonical_gate_holds_is_reported_and_not_the_base => a_registry_version_the_canonical_gate_holds_is_reported_and_not_the_base_stack, a_registry_version_the_canonical_gate_holds_is_reported_and_not_the_base_abra);

/// A green cold run promotes a major bump (2.0.0) that the canonical's own gate holds: the
/// canonical stays on its known-good 1.1.0, says so in `canonical list` and `status`, alerts
/// once (not on every timer tick), and `base resolve` answers 1.1.0 with that reason; the
/// approval lets the next reconcile take 2.0.0.
async fn a_registry_version_the_canonical_gate_holds_is_reported_and_not_the_base(kind: Kind) {
    const V200: &str = "2.0.0+2.0.0";
    let Some(_docker) = require_docker().await else {
        return;
    };
    images::ensure_images().expect("demo images");
    let st = TestStack::new("canonhold");
    let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(V200)).unwrap();
    let v200_commit = git(&recipe.dir, &["rev-parse", &format!("{V200}^{{commit}}")]);
    let w = World::new(kind, st, &recipe, V110, serde_json::json!({}));
    let alerts = || state_files::alerts(&w.state_dir);
    assert_eq!(code(&w.ci_warm(&["reconcile", APP])), 0, "bootstrap");
    assert_eq!(w.state()["last_good"], V110);
    let manifest = w.manifest();

    let out = w.ci_warm(&[
        "canonical",
        "promote",
        "demo",
        "--version",
        V200,
        "--commit",
        &v200_commit,
        "--mode",
        "cold",
        "--result",
        "pass",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    for tick in 0..2 {
        let out = w.ci_warm(&["--json", "reconcile", APP]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(code(&out), 0, "tick {tick}: {report}");
        assert_eq!(report[0]["outcome"], "held", "tick {tick}: {report}");
        let held = alerts();
        assert_eq!(held.len(), 1, "one alert, tick {tick}: {held:?}");
        assert_eq!(held[0]["kind"], "held-major");
        assert_eq!(held[0]["attempted"], V200);
    }
    assert_eq!(w.state()["last_good"], V110, "the canonical stays on 1.1.0");
    assert_eq!(w.manifest(), manifest, "its known-good untouched");
    assert_eq!(w.services(), "", "resting undeployed");

    let hold = serde_json::json!({"target": V200, "holds": V110, "kind": "held-major",
        "reason": format!("{V200} is a major bump from {V110}")});
    let rows: Value =
        serde_json::from_slice(&w.ci_warm(&["--json", "canonical", "list"]).stdout).unwrap();
    assert_eq!(rows[0]["registry"]["version"], V200);
    assert_eq!(rows[0]["target"], V200);
    assert_eq!(rows[0]["hold"], hold, "{rows}");
    let status: Value =
        serde_json::from_slice(&w.ci_warm(&["--json", "status", "--no-health"]).stdout).unwrap();
    assert_eq!(status["apps"][0]["app"], APP);
    assert_eq!(status["apps"][0]["canonical_hold"], hold, "{status}");
    let cache = w.st.path().join("cache");
    let out = w.ci_warm(&[
        "--json",
        "base",
        "resolve",
        "demo",
        "--head-ref",
        "fedcba9876543210fedcba9876543210fedcba98",
        "--head-version",
        "2.1.0+2.0.0",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    let base: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(base["value"], V110, "{base}");
    assert!(
        base["reason"].as_str().unwrap().starts_with(&format!(
            "the canonical's gate holds registry version {V200}"
        )),
        "{base}"
    );

    // Approved: the next reconcile takes 2.0.0 and the hold is over.
    assert_eq!(code(&w.ci_warm(&["approve", APP, V200])), 0);
    let out = w.ci_warm(&["--json", "reconcile", APP]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(report[0]["outcome"], "upgraded", "{report}");
    assert_eq!(w.state()["last_good"], V200);
    let rows: Value =
        serde_json::from_slice(&w.ci_warm(&["--json", "canonical", "list"]).stdout).unwrap();
    assert_eq!(rows[0]["hold"], Value::Null, "{rows}");
}

/// The sweep runs the cold command itself and deploys nothing, so no swarm is needed: three
/// enrolled recipes (one demo repository), max 2, the never-tested and then the oldest run; the
/// failing one is recorded and the next still runs; the green one promotes.
#[test]
fn sweep_runs_the_least_recently_tested_and_promotes_green() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = DemoRecipe::with_catalogue(&dir.path().join("recipe"), Some(V110)).unwrap();
    let state_dir = dir.path().join("state");
    let argv_log = dir.path().join("argv");
    let script = dir.path().join("cold.sh");
    // Records its argv one item per line; `beta` fails.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> {}\necho \"cold test of $1\"\n[ \"$1\" != beta ]\n",
            argv_log.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("config.json");
    let canonical = serde_json::json!({"repo": recipe.url()});
    let json = serde_json::json!({
        "state_dir": state_dir,
        "ci_domain": "ci.example.org",
        "canonicals": {"alpha": canonical, "beta": canonical, "gamma": canonical},
        "sweep": {"max_tests": 5, "cold_command": ["sh", script, "{recipe}", "v={version}", "{run}"]},
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    // alpha was tested a minute after gamma; beta never.
    let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (r, secs) in [("gamma", 0), ("alpha", 60)] {
        let at = ci_warm::canonical::results::timestamp(t0 + std::time::Duration::from_secs(secs));
        ci_warm::canonical::results::record(
            &state_dir,
            &ci_warm::canonical::results::RunResult {
                schema: 1,
                recipe: r.into(),
                mode: ci_warm::canonical::results::Mode::Cold,
                result: ci_warm::canonical::results::Verdict::Fail,
                version: Some(V100.into()),
                commit: None,
                r#ref: None,
                run: Some("old".into()),
                started_at: at.clone(),
                finished_at: at,
                duration_secs: 1.0,
                log: None,
                failed_step: Some("test".into()),
                reason: None,
                exit_code: Some(1),
                promotion: None,
            },
        )
        .unwrap();
    }

    let out = run(&config, &["--json", "sweep", "--max-tests", "2"]);
    assert_eq!(code(&out), 1, "a failed run makes the sweep exit 1");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ran: Vec<(&str, &str)> = report["ran"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["recipe"].as_str().unwrap(), i["result"].as_str().unwrap()))
        .collect();
    assert_eq!(ran, [("beta", "fail"), ("gamma", "pass")]);

    // Every placeholder landed inside its own argv item.
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    let lines: Vec<&str> = argv.lines().collect();
    assert_eq!(lines.len(), 6, "{argv}");
    assert_eq!(&lines[..2], ["beta", &format!("v={V110}")]);
    assert!(
        lines[2].starts_with("sweep-") && lines[2].ends_with("-beta"),
        "{argv}"
    );
    assert_eq!(&lines[3..5], ["gamma", &format!("v={V110}")]);

    // Results: mode cold, result, duration, log path; the log holds the command's output.
    let gamma = &report["ran"][1];
    assert_eq!(gamma["mode"], "cold");
    assert!(gamma["duration_secs"].as_f64().unwrap() >= 0.0);
    let log = PathBuf::from(gamma["log"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "cold test of gamma\n"
    );
    assert!(
        gamma["promotion"].as_str().unwrap().starts_with("seeded"),
        "{gamma}"
    );
    let beta = &report["ran"][0];
    assert_eq!(beta["exit_code"], 1);
    assert!(beta["promotion"].is_null());
    for i in report["ran"].as_array().unwrap() {
        let file = PathBuf::from(i["result_file"].as_str().unwrap());
        let on_disk: Value = serde_json::from_slice(&read(&file)).unwrap();
        assert_eq!(on_disk["result"], i["result"]);
    }

    // Only the green run promoted, with its version, commit and run id.
    let registry: Value = serde_json::from_slice(&read(&state_dir.join("registry.json"))).unwrap();
    let entries = registry["canonicals"].as_object().unwrap();
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["gamma"]);
    assert_eq!(entries["gamma"]["version"], V110);
    assert_eq!(entries["gamma"]["mode"], "cold");
    assert_eq!(
        entries["gamma"]["commit"],
        git(&recipe.dir, &["rev-parse", &format!("{V110}^{{commit}}")]).as_str()
    );
    assert_eq!(entries["gamma"]["run"], gamma["run"]);

    // The next sweep starts with the one left out (alpha), then the failed beta.
    let out = run(&config, &["--json", "sweep", "--max-tests", "2"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ran: Vec<&str> = report["ran"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["recipe"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["alpha", "beta"]);
}

/// A cold run that hangs is stopped at `sweep.timeout_secs`, recorded as failed, and the sweep
/// goes on to the next recipe (which promotes).
#[test]
fn a_hung_cold_run_is_stopped_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = DemoRecipe::with_catalogue(&dir.path().join("recipe"), Some(V110)).unwrap();
    let state_dir = dir.path().join("state");
    let script = dir.path().join("cold.sh");
    // `hung` never finishes (and its child would outlive a kill of the shell alone).
    std::fs::write(
        &script,
        "#!/bin/sh\nif [ \"$1\" = hung ]; then sleep 300 & wait; fi\nexit 0\n",
    )
    .unwrap();
    let config = dir.path().join("config.json");
    let canonical = serde_json::json!({"repo": recipe.url()});
    let json = serde_json::json!({
        "state_dir": state_dir,
        "ci_domain": "ci.example.org",
        "canonicals": {"hung": canonical, "next": canonical},
        "sweep": {"cold_command": ["sh", script, "{recipe}"], "timeout_secs": 2},
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let out = run(&config, &["--json", "sweep"]);
    // Not a speed limit: a sweep that waited for `hung` to end by itself took 300 s or more.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(300),
        "the sweep waited for the hung command instead of stopping it at its timeout"
    );
    assert_eq!(code(&out), 1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ran = report["ran"].as_array().unwrap();
    assert_eq!(ran.len(), 2, "{report}");
    assert_eq!(
        (ran[0]["recipe"].as_str(), ran[0]["result"].as_str()),
        (Some("hung"), Some("fail"))
    );
    assert_eq!(ran[0]["failed_step"], "test");
    assert!(
        ran[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not finish within 2s"),
        "{report}"
    );
    assert!(ran[0]["promotion"].is_null());
    assert_eq!(
        (ran[1]["recipe"].as_str(), ran[1]["result"].as_str()),
        (Some("next"), Some("pass"))
    );
    let registry: Value = serde_json::from_slice(&read(&state_dir.join("registry.json"))).unwrap();
    let entries = registry["canonicals"].as_object().unwrap();
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["next"]);
}
