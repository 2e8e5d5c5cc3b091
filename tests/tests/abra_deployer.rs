//! ci-warm driving abra as abra behaves (issue #14), on the real swarm through the simulator:
//! each test is one fact of `shared/abra-contract.md` that ci-warm used to get wrong. Waits
//! have bounded deadlines that fail on expiry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use ci_warm_tests::deployers::{Kind, abra_env_file};
use ci_warm_tests::docker::require_docker;
use ci_warm_tests::images;
use ci_warm_tests::recipe::{DemoRecipe, ENV_SAMPLE, Release, compose, release};
use ci_warm_tests::stack::TestStack;

const V100: &str = "1.0.0+1.0.0";
const V110: &str = "1.1.0+1.0.0";
const V120: &str = "1.2.0+1.0.0";

struct World {
    st: TestStack,
    recipe: DemoRecipe,
    config: PathBuf,
    state_dir: PathBuf,
    /// Simulator switches for every ci-warm run.
    env: Vec<(&'static str, &'static str)>,
}

impl World {
    /// A stateless (`stateful`) app `demo`, or (`canonical`) the canonical of recipe `demo`.
    async fn new(
        test: &str,
        recipe: impl FnOnce(&Path) -> DemoRecipe,
        app: Value,
    ) -> Option<World> {
        require_docker().await?;
        images::ensure_images().expect("demo images");
        let st = TestStack::new(test);
        let recipe = recipe(&st.path().join("recipe"));
        let state_dir = st.path().join("state");
        let config = st.path().join("config.json");
        let mut app = app;
        let obj = app.as_object_mut().expect("an object");
        obj.insert("repo".into(), json!(recipe.url()));
        obj.insert(
            "probes".into(),
            json!([{"url": format!("http://127.0.0.1:{}/health", st.port)}]),
        );
        obj.extend(Kind::Abra.app_keys(&st));
        let canonical = obj.remove("canonical").is_some();
        let mut json = json!({
            "state_dir": state_dir,
            "deployer": Kind::Abra.deployer(&st),
            "health": {"timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS, "interval_ms": 500},
            "snapshot": {"reserve_bytes": 0, "reserve_percent": 0},
        });
        if canonical {
            json["canonicals"] = json!({ "demo": app });
        } else {
            obj_recipe(&mut app);
            json["apps"] = json!({ "demo": app });
        }
        std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        Some(World {
            st,
            recipe,
            config,
            state_dir,
            env: vec![],
        })
    }

    fn ci_warm(&self, args: &[&str]) -> Output {
        let log = self.st.path().join("abra-calls.jsonl");
        let mut env: Vec<(&str, &std::ffi::OsStr)> = self
            .env
            .iter()
            .map(|(k, v)| (*k, std::ffi::OsStr::new(*v)))
            .collect();
        env.push(("ABRA_SIM_LOG", log.as_os_str()));
        ci_warm_tests::run_ci_warm_with_env(&self.config, args, &env)
    }

    fn code(&self, args: &[&str]) -> i32 {
        self.ci_warm(args).status.code().unwrap_or(-1)
    }

    /// Every abra call so far: (argv joined by spaces, exit code).
    fn abra_calls(&self) -> Vec<(String, i64)> {
        std::fs::read_to_string(self.st.path().join("abra-calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("a JSON line");
                let argv: Vec<String> = v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap_or_default().to_owned())
                    .collect();
                (argv.join(" "), v["exit"].as_i64().unwrap_or(-1))
            })
            .collect()
    }

    /// The stack's service names, without the `<stack>_` prefix, sorted.
    fn services(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "service",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.st.name),
            ])
            .output()
            .expect("docker service ls");
        let prefix = format!("{}_", self.st.name);
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_start_matches(&prefix).to_owned())
            .collect();
        v.sort();
        v
    }

    fn last_good(&self, app: &str) -> String {
        let bytes = std::fs::read(self.state_dir.join(app).join("state.json")).expect("state");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        v["last_good"].as_str().unwrap_or_default().to_owned()
    }
}

fn obj_recipe(app: &mut Value) {
    app["recipe"] = json!("demo");
}

/// The catalogue compose of `r` without its `migrate` one-shot.
fn without_migrate(r: &Release) -> String {
    let c = compose(r);
    let start = c.find("  migrate:\n").expect("a migrate service");
    let end = c.find("\nvolumes:\n").expect("top-level volumes") + 1;
    format!("{}{}", &c[..start], &c[end..])
}

/// The catalogue compose of `r` with one more service, `extra`.
fn with_extra(r: &Release) -> String {
    compose(r).replace(
        "volumes:\n  data:\n",
        "  extra:\n    image: ci-warm-demo:1.0.0\n    command: [\"oneshot\"]\n    deploy:\n      restart_policy:\n        condition: none\nvolumes:\n  data:\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_undeploy_of_a_resting_canonical_is_already_undeployed() {
    let Some(w) = World::new(
        "abra_rest",
        |d| DemoRecipe::with_catalogue(d, Some(V100)).unwrap(),
        json!({"canonical": true, "version": V100}),
    )
    .await
    else {
        return;
    };
    // Bootstrap (abra app new + deploy), then the canonical rests undeployed.
    assert_eq!(w.code(&["reconcile", "warm-demo"]), 0);
    assert!(
        abra_env_file(&w.st).is_file(),
        "abra app new made the env file"
    );
    assert_eq!(w.services(), Vec::<String>::new(), "resting undeployed");
    // Rewarm begins with an undeploy of the resting canonical: observed, not asked of abra.
    assert_eq!(w.code(&["canonical", "rewarm", "demo"]), 0);
    assert_eq!(w.services(), Vec::<String>::new());
    let calls = w.abra_calls();
    assert!(
        calls.iter().all(|(_, exit)| *exit == 0),
        "no abra call failed: {calls:?}"
    );
    let undeploys = calls.iter().filter(|(a, _)| a.contains("undeploy")).count();
    assert_eq!(
        undeploys, 2,
        "one per deployment, none of a resting app: {calls:?}"
    );
}

/// A stateless app: 1.0.0 (app + migrate) -> 1.1.0 drops `migrate` -> 1.2.0 adds `extra` and
/// never gets healthy -> rolled back to 1.1.0. abra never prunes; ci-warm does.
async fn orphans_are_removed(needs_force: &'static str) {
    let Some(mut w) = World::new(
        "abra_orphans",
        |d| {
            let r = DemoRecipe::with_catalogue(d, Some(V100)).unwrap();
            let v110 = release(V110).unwrap();
            r.publish_files(V110, &[("compose.yml", &without_migrate(&v110))], true)
                .unwrap();
            r
        },
        json!({"stateful": false, "initial_version": V100}),
    )
    .await
    else {
        return;
    };
    w.env.push(("ABRA_SIM_DEPLOYED_NEEDS_FORCE", needs_force));
    assert_eq!(w.code(&["reconcile", "demo"]), 0, "bootstrap");
    assert_eq!(w.services(), ["app", "migrate"]);
    assert_eq!(w.code(&["reconcile", "demo"]), 0, "upgrade");
    assert_eq!(w.last_good("demo"), V110);
    assert_eq!(w.services(), ["app"], "migrate is gone after the upgrade");
    let broken = release(V120).unwrap();
    w.recipe
        .publish_files(V120, &[("compose.yml", &with_extra(&broken))], true)
        .unwrap();
    assert_eq!(w.code(&["reconcile", "demo"]), 4, "rolled back");
    assert_eq!(w.last_good("demo"), V110);
    assert_eq!(w.services(), ["app"], "extra is gone after the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_orphans_are_removed_after_upgrade_and_rollback() {
    orphans_are_removed("1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_orphans_are_removed_when_deployed_needs_no_force() {
    orphans_are_removed("0").await
}

/// abra's monitor calls a task inside its start_period after a failed probe "deploy failed"
/// (contract §4.6, collabora); with `-c` the health gate waits it out and the upgrade stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_slow_start_period_upgrade_is_not_rolled_back() {
    let Some(w) = World::new(
        "abra_slow",
        |d| {
            let r = DemoRecipe::with_catalogue(d, Some(V100)).unwrap();
            let slow = Release::new(V110, "1.0.0", "slow:6", "Slow to start.\n");
            let c = compose(&slow).replace("start_period: 2s", "start_period: 60s");
            r.publish_files(V110, &[("compose.yml", &c)], true).unwrap();
            r
        },
        json!({"stateful": false, "initial_version": V100}),
    )
    .await
    else {
        return;
    };
    assert_eq!(w.code(&["reconcile", "demo"]), 0);
    assert_eq!(
        w.code(&["reconcile", "demo"]),
        0,
        "upgraded, not rolled back"
    );
    assert_eq!(w.last_good("demo"), V110);
}

/// A keycloak-like stateful app with secrets, bootstrapped from nothing: `app new`, only the
/// missing secrets generated (again on the upgrade: none), the configured env written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_bootstrap_of_a_stateful_app_with_secrets() {
    let with_secret = |r: &Release| {
        compose(r)
            .replace(
                "    volumes:\n      - data:/data\n    ports:",
                "    volumes:\n      - data:/data\n    secrets:\n      - db_password\n    ports:",
            )
            .replace(
                "volumes:\n  data:\n",
                "volumes:\n  data:\nsecrets:\n  db_password:\n    external: true\n    name: ${STACK_NAME}_db_password_${SECRET_DB_PASSWORD_VERSION}\n",
            )
    };
    let sample = format!("{ENV_SAMPLE}SECRET_DB_PASSWORD_VERSION=v1 # length=24\n");
    let Some(w) = World::new(
        "abra_boot",
        |d| {
            let r = DemoRecipe::create(d).unwrap();
            for tag in [V100, V110] {
                let c = with_secret(&release(tag).unwrap());
                r.publish_files(tag, &[("compose.yml", &c), (".env.sample", &sample)], true)
                    .unwrap();
            }
            r
        },
        json!({"stateful": true, "initial_version": V100}),
    )
    .await
    else {
        return;
    };
    assert_eq!(w.code(&["reconcile", "demo"]), 0, "bootstrap");
    let env = std::fs::read_to_string(abra_env_file(&w.st)).expect("env file");
    assert!(env.contains(&format!("PORT={}\n", w.st.port)), "{env}");
    let secret = format!("{}_db_password_v1", w.st.name);
    let out = Command::new("docker")
        .args(["secret", "inspect", &secret])
        .output()
        .unwrap();
    assert!(out.status.success(), "{secret} was generated");
    assert_eq!(w.code(&["reconcile", "demo"]), 0, "upgrade");
    assert_eq!(w.last_good("demo"), V110);
    let generates: Vec<_> = w
        .abra_calls()
        .into_iter()
        .filter(|(a, _)| a.contains("secret generate"))
        .collect();
    assert_eq!(generates.len(), 1, "only the missing secret: {generates:?}");
    assert_eq!(
        w.abra_calls()
            .iter()
            .filter(|(a, _)| a.contains("app new"))
            .count(),
        1
    );
}

/// An abra failure quotes its FATA line whichever stream abra prints it on (§4.8).
async fn fata_is_quoted(stream: &'static str) {
    let sample = format!("{ENV_SAMPLE}SECRET_API_KEY_VERSION=v1 # generate=false\n");
    let Some(mut w) = World::new(
        "abra_fata",
        |d| {
            let r = DemoRecipe::create(d).unwrap();
            let c = compose(&release(V100).unwrap())
                .replace(
                    "    volumes:\n      - data:/data\n    ports:",
                    "    volumes:\n      - data:/data\n    secrets:\n      - api_key\n    ports:",
                )
                .replace(
                    "volumes:\n  data:\n",
                    "volumes:\n  data:\nsecrets:\n  api_key:\n    external: true\n    name: ${STACK_NAME}_api_key_${SECRET_API_KEY_VERSION}\n",
                );
            r.publish_files(V100, &[("compose.yml", &c), (".env.sample", &sample)], true)
                .unwrap();
            r
        },
        json!({"stateful": false, "initial_version": V100}),
    )
    .await
    else {
        return;
    };
    w.env.push(("ABRA_SIM_FATA_STREAM", stream));
    let out = w.ci_warm(&["reconcile", "demo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FATA secret not inserted (#generate=false): api_key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_fata_on_stdout_is_quoted() {
    fata_is_quoted("stdout").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_fata_on_stderr_is_quoted() {
    fata_is_quoted("stderr").await
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@ci-warm.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@ci-warm.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A quick run's chaos deploy runs the ref's tree, from ci-warm's own recipe tree: the shared
/// `$ABRA_DIR/recipes/demo` (where a concurrent CI run checked out the broken 1.2.0, with an
/// untracked file) neither changes what is deployed nor is moved by ci-warm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_quick_chaos_deploys_the_ref_not_the_shared_checkout() {
    let Some(w) = World::new(
        "abra_quick",
        |d| DemoRecipe::with_catalogue(d, Some(V120)).unwrap(),
        json!({"canonical": true, "version": V110, "health_timeout_secs": ci_warm_tests::GATE_TIMEOUT_SECS}),
    )
    .await
    else {
        return;
    };
    let dir = &w.recipe.dir;
    git(dir, &["checkout", "--quiet", "-b", "pr", V110]);
    let compose_path = dir.join("compose.yml");
    let text = std::fs::read_to_string(&compose_path).unwrap();
    std::fs::write(
        &compose_path,
        text.replacen(&format!("RECIPE_VERSION={V110}"), "RECIPE_VERSION=pr-1", 1),
    )
    .unwrap();
    git(dir, &["commit", "--quiet", "-am", "pr-1"]);
    git(dir, &["checkout", "--quiet", "main"]);
    // The CI's shared checkout, moved by "another run" to the broken release.
    let shared = ci_warm_tests::deployers::abra_dir(&w.st).join("recipes/demo");
    git(
        w.st.path(),
        &[
            "clone",
            "--quiet",
            dir.to_str().unwrap(),
            shared.to_str().unwrap(),
        ],
    );
    git(&shared, &["checkout", "--quiet", V120]);
    std::fs::write(shared.join("compose.ccci.yml"), "# another run's overlay\n").unwrap();
    let shared_head = git(&shared, &["rev-parse", "HEAD"]);

    assert_eq!(w.code(&["reconcile", "warm-demo"]), 0, "bootstrap");
    let seen = w.st.path().join("seen");
    let probe = format!(
        "docker service inspect {}_app --format '{{{{json .Spec.TaskTemplate.ContainerSpec.Env}}}}' > {}",
        w.st.name,
        seen.display()
    );
    assert_eq!(
        w.code(&[
            "quick", "demo", "--ref", "pr", "--run", "q1", "--", "sh", "-c", &probe
        ]),
        0
    );
    let env = std::fs::read_to_string(&seen).expect("the test ran");
    assert!(env.contains("RECIPE_VERSION=pr-1"), "the ref's tree: {env}");
    assert_eq!(
        git(&shared, &["rev-parse", "HEAD"]),
        shared_head,
        "not moved"
    );
    assert!(shared.join("compose.ccci.yml").exists());
    let calls = w.abra_calls();
    assert!(
        calls.iter().any(|(a, _)| a.contains(" -C")),
        "a chaos deploy: {calls:?}"
    );
}
