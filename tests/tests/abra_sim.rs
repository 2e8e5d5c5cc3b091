//! Contract tests of the abra simulator (`abra-sim`) on the real swarm: each step checks one
//! fact of `shared/abra-contract.md` against what the engine then holds. Waits have bounded
//! deadlines that fail on expiry; nothing depends on how fast the machine is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ci_warm_tests::docker::{self, require_docker};
use ci_warm_tests::images;
use ci_warm_tests::recipe::{DemoRecipe, ENV_SAMPLE};
use ci_warm_tests::stack::{TestStack, remove_stack};

const SIM: &str = env!("CARGO_BIN_EXE_abra-sim");

/// One compose variant of the test recipe.
#[derive(Clone, Copy)]
struct Variant {
    tag: &'static str,
    mode: &'static str,
    start_period: &'static str,
    migrate: bool,
    secrets: bool,
    /// A placement nothing satisfies: the task stays pending (a cold pull that never ends).
    unschedulable: bool,
}

const BASE: Variant = Variant {
    tag: "",
    mode: "ok",
    start_period: "2s",
    migrate: true,
    secrets: true,
    unschedulable: false,
};

fn compose(v: Variant) -> String {
    let placement = if v.unschedulable {
        "      placement:\n        constraints:\n          - node.labels.abra_sim_never == yes\n"
    } else {
        ""
    };
    let app_secrets = if v.secrets {
        "    secrets:\n      - db_password\n      - api_key\n"
    } else {
        ""
    };
    let mut c = format!(
        r#"version: "3.8"
services:
  app:
    image: ci-warm-demo:1.0.0
    environment:
      - DEMO_MODE={mode}
      - RECIPE_VERSION={tag}
      - PORT=8080
      - DATA_DIR=/data
    volumes:
      - data:/data
{app_secrets}    ports:
      - target: 8080
        published: ${{PORT}}
        protocol: tcp
        mode: host
    healthcheck:
      test: ["CMD", "/demo-app", "healthcheck"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: {start_period}
    stop_grace_period: 2s
    deploy:
      endpoint_mode: dnsrr
{placement}      labels:
        - "coop-cloud.${{STACK_NAME}}.version={tag}"
      restart_policy:
        condition: on-failure
        max_attempts: 3
"#,
        mode = v.mode,
        tag = v.tag,
        start_period = v.start_period,
    );
    if v.migrate {
        c.push_str(&format!(
            r#"  migrate:
    image: ci-warm-demo:1.0.0
    command: ["oneshot"]
    environment:
      - RECIPE_VERSION={tag}
    deploy:
      endpoint_mode: dnsrr
      restart_policy:
        condition: none
      update_config:
        failure_action: continue
"#,
            tag = v.tag
        ));
    }
    c.push_str("volumes:\n  data:\n");
    if v.secrets {
        c.push_str(
            "secrets:\n  db_password:\n    external: true\n    name: ${STACK_NAME}_db_password_${SECRET_DB_PASSWORD_VERSION}\n  api_key:\n    external: true\n    name: ${STACK_NAME}_api_key_${SECRET_API_KEY_VERSION}\n",
        );
    }
    c
}

const SECRETS_SAMPLE: &str =
    "SECRET_DB_PASSWORD_VERSION=v1 # length=24\nSECRET_API_KEY_VERSION=v1 # generate=false\n";

/// A recipe whose releases are annotated tags (abra's lint R014 refuses lightweight ones).
fn recipe(dir: &Path, variants: &[Variant], sample_extra: &str) -> DemoRecipe {
    let r = DemoRecipe::create(dir).expect("recipe skeleton");
    let sample = format!("{ENV_SAMPLE}TIMEOUT=120\n{sample_extra}");
    for v in variants {
        r.publish_files(
            v.tag,
            &[("compose.yml", &compose(*v)), (".env.sample", &sample)],
            true,
        )
        .expect("publish");
    }
    r
}

/// `$ABRA_DIR` with `servers/` a symlink (contract §1.1) to a directory holding `default/`,
/// and `recipes/demo` cloned from `origin`.
fn abra_dir(base: &Path, origin: &DemoRecipe) -> PathBuf {
    let root = base.join("abra");
    let servers = base.join("servers-real");
    std::fs::create_dir_all(servers.join("default")).unwrap();
    std::fs::create_dir_all(root.join("recipes")).unwrap();
    std::os::unix::fs::symlink(&servers, root.join("servers")).unwrap();
    let out = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(&origin.dir)
        .arg(root.join("recipes/demo"))
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

/// `app new demo <version> -s default -D <domain> -n -o`.
fn new_args<'a>(domain: &'a str, version: &'a str) -> [&'a str; 10] {
    [
        "app", "new", "demo", version, "-s", "default", "-D", domain, "-n", "-o",
    ]
}

struct Sim {
    root: PathBuf,
    log: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Sim {
    fn run(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = Command::new(SIM)
            .args(args)
            .env("ABRA_DIR", &self.root)
            .env("ABRA_SIM_LOG", &self.log)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running abra-sim");
        eprintln!(
            "abra {args:?} -> {:?} in {:?}\n--stdout--\n{}--stderr--\n{}",
            out.status.code(),
            started.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(0), "abra {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must FATA: exit 1, `FATA <message...>` on stdout (contract §4.8).
    fn fata(&self, args: &[&str], message: &str) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "abra {args:?} should exit 1");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("FATA ") && l.contains(message)),
            "no `FATA ...{message}...` on stdout of abra {args:?}: {stdout}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("FATA"),
            "FATA went to stderr too"
        );
        stdout
    }

    fn env_file(&self, domain: &str) -> PathBuf {
        self.root
            .join("servers/default")
            .join(format!("{domain}.env"))
    }

    fn env_line(&self, domain: &str, key: &str) -> Option<String> {
        std::fs::read_to_string(self.env_file(domain))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
    }

    /// Appends (or overrides) keys in the app's env file, as cc-ci's harness does after
    /// `app new`.
    fn set_env(&self, domain: &str, lines: &str) {
        let p = self.env_file(domain);
        let mut t = std::fs::read_to_string(&p).unwrap();
        t.push_str(lines);
        std::fs::write(&p, t).unwrap();
    }

    fn recipe_head(&self) -> String {
        git_out(&self.root.join("recipes/demo"), &["rev-parse", "HEAD"])
    }
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the stack, then the app's swarm secrets (`<stack>_*`), also when the test panics.
struct SecretsGuard(String);

impl Drop for SecretsGuard {
    fn drop(&mut self) {
        let left = remove_stack(&self.0);
        if !left.is_empty() {
            eprintln!("warning: {} left {left:?}", self.0);
        }
        for s in secret_names(&self.0) {
            let _ = Command::new("docker").args(["secret", "rm", &s]).output();
        }
    }
}

fn secret_names(stack: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["secret", "ls", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("{stack}_")))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

async fn labels(docker: &bollard::Docker, service: &str) -> HashMap<String, String> {
    docker::service_labels(docker, service)
        .await
        .unwrap_or_else(|e| panic!("labels of {service}: {e:#}"))
}

/// Polls until no service, container or network of the stack is left (volumes stay).
async fn wait_removed(docker: &bollard::Docker, stack: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<String> = docker::stack_leftovers(docker, stack)
            .await
            .unwrap()
            .into_iter()
            .filter(|l| !l.starts_with("volume "))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stack {stack} not removed within {timeout:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The demo images, a test stack with its secrets guard (dropped first: stack, then
/// secrets), the stack name and the app domain that maps to it (`.` for `_`).
async fn app_under_test(test: &str) -> (TestStack, SecretsGuard, String, String) {
    tokio::task::spawn_blocking(|| images::ensure_images().expect("demo images"))
        .await
        .unwrap();
    let st = TestStack::new(test);
    let guard = SecretsGuard(st.name.clone());
    let stack = st.name.clone();
    let domain = stack.replace('_', ".");
    (st, guard, stack, domain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_sim_lifecycle_follows_the_contract() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let t0 = Instant::now();
    let (st, _secrets, stack, domain) = app_under_test("abra_sim").await;
    let v1 = Variant {
        tag: "1.0.0+1.0.0",
        ..BASE
    };
    // 1.1.0 drops the migrate service.
    let v2 = Variant {
        tag: "1.1.0+1.0.0",
        migrate: false,
        ..BASE
    };
    let origin = recipe(&st.path().join("origin"), &[v1, v2], SECRETS_SAMPLE);
    let sim = Sim {
        root: abra_dir(st.path(), &origin),
        log: st.path().join("abra.log"),
        extra_env: vec![],
    };
    let tree = sim.root.join("recipes/demo");
    let tag_commit = |t: &str| git_out(&tree, &["rev-list", "-n1", t]);

    // app new: copies .env.sample, pins TYPE, sets DOMAIN, moves the shared tree to the tag.
    sim.ok(&new_args(&domain, "1.0.0+1.0.0"));
    assert_eq!(
        sim.env_line(&domain, "TYPE").as_deref(),
        Some("demo:1.0.0+1.0.0")
    );
    assert_eq!(
        sim.env_line(&domain, "DOMAIN").as_deref(),
        Some(domain.as_str())
    );
    assert_eq!(sim.recipe_head(), tag_commit("1.0.0+1.0.0"));
    sim.fata(
        &[
            "app", "new", "demo", "-s", "default", "-D", &domain, "-n", "-o",
        ],
        "already exists",
    );
    sim.set_env(&domain, &format!("PORT={}\nTIMEOUT=90\n", st.port));

    // secret generate --all: only generate=false is skipped; values never printed.
    let out = sim.ok(&["app", "secret", "generate", &domain, "--all", "-m"]);
    let made: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(made[0]["name"], "db_password");
    assert_eq!(made.as_array().unwrap().len(), 1, "{made}");
    assert!(!out.contains("value"), "{out}");
    assert_eq!(secret_names(&stack), [format!("{stack}_db_password_v1")]);
    // Generating what exists: docker's AlreadyExists, as a FATA.
    sim.fata(
        &["app", "secret", "generate", &domain, "--all"],
        "AlreadyExists",
    );

    // validateSecrets before anything is deployed.
    sim.fata(
        &["app", "deploy", &domain, "-n", "-o"],
        "secret not inserted (#generate=false): api_key",
    );
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("printf k | docker secret create {stack}_api_key_v1 -"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());

    // Deploy the pinned version: converged when it returns, labels on every service.
    sim.ok(&["app", "deploy", &domain, "-n", "-o"]);
    let converged = docker::wait_converged(&docker, &stack, Duration::from_secs(5))
        .await
        .expect("converged when deploy returned");
    assert_eq!(converged.len(), 2, "{converged:?}");
    for svc in ["app", "migrate"] {
        let l = labels(&docker, &format!("{stack}_{svc}")).await;
        assert_eq!(
            l[&format!("coop-cloud.{stack}.version")],
            "1.0.0+1.0.0",
            "{svc}"
        );
        assert_eq!(l[&format!("coop-cloud.{stack}.recipe")], "demo", "{svc}");
        assert_eq!(l[&format!("coop-cloud.{stack}.chaos")], "false", "{svc}");
        assert!(
            !l.contains_key(&format!("coop-cloud.{stack}.chaos-version")),
            "{svc}"
        );
    }
    st.wait_for("/health", 200, Duration::from_secs(20))
        .unwrap();

    // Deployed already: refused without -f.
    sim.fata(
        &["app", "deploy", &domain, "-n", "-o"],
        &format!("{domain} is already deployed"),
    );

    // Chaos deploy of a dirty tree (an untracked overlay): version = sha8+U, chaos labels,
    // the compose version label kept, TYPE written back.
    std::fs::write(tree.join("compose.ccci.yml"), "version: \"3.8\"\n").unwrap();
    let sha8: String = sim.recipe_head().chars().take(8).collect();
    let out = sim.ok(&["app", "deploy", &domain, "-C", "-n", "-o", "-d"]);
    let chaos_version = format!("{sha8}+U");
    assert!(
        out.lines().any(|l| l.starts_with("DEBU ")
            && l.contains(&format!("version: taking chaos version: {chaos_version}"))),
        "{out}"
    );
    let l = labels(&docker, &format!("{stack}_app")).await;
    assert_eq!(l[&format!("coop-cloud.{stack}.chaos")], "true");
    assert_eq!(
        l[&format!("coop-cloud.{stack}.chaos-version")],
        chaos_version
    );
    assert_eq!(l[&format!("coop-cloud.{stack}.version")], "1.0.0+1.0.0");
    assert_eq!(
        sim.env_line(&domain, "TYPE"),
        Some(format!("demo:{chaos_version}"))
    );

    // A non-chaos deploy refuses the tree with an untracked file, and leaves it where it is.
    sim.fata(
        &["app", "deploy", &domain, "1.1.0+1.0.0", "-f", "-n", "-o"],
        "demo has locally unstaged changes",
    );
    assert_eq!(sim.recipe_head(), tag_commit("1.0.0+1.0.0"));
    std::fs::remove_file(tree.join("compose.ccci.yml")).unwrap();

    // A release that dropped a service: the orphan keeps running (no prune).
    sim.ok(&["app", "deploy", &domain, "1.1.0+1.0.0", "-f", "-n", "-o"]);
    assert_eq!(sim.recipe_head(), tag_commit("1.1.0+1.0.0"));
    assert_eq!(
        sim.env_line(&domain, "TYPE").as_deref(),
        Some("demo:1.1.0+1.0.0")
    );
    let l = labels(&docker, &format!("{stack}_app")).await;
    assert_eq!(l[&format!("coop-cloud.{stack}.version")], "1.1.0+1.0.0");
    assert_eq!(l[&format!("coop-cloud.{stack}.chaos")], "false");
    let orphan = labels(&docker, &format!("{stack}_migrate")).await;
    assert_eq!(
        orphan[&format!("coop-cloud.{stack}.chaos")],
        "true",
        "the orphan is untouched"
    );

    // ls / ps see it.
    let ls = sim.ok(&["app", "ls", "-S", "-m"]);
    let ls: serde_json::Value = serde_json::from_str(ls.trim()).unwrap();
    let app = &ls["default"]["apps"][0];
    assert_eq!(app["status"], "deployed", "{ls}");
    assert_eq!(app["version"], "1.1.0+1.0.0", "{ls}");
    let ps = sim.ok(&["app", "ps", &domain, "-m"]);
    assert!(ps.contains("\"service\":\"migrate\""), "{ps}");

    // Undeploy: the stack goes (volumes and secrets stay), the version is written back.
    sim.ok(&["app", "undeploy", &domain, "-n"]);
    assert_eq!(
        sim.env_line(&domain, "TYPE").as_deref(),
        Some("demo:1.1.0+1.0.0")
    );
    wait_removed(&docker, &stack, Duration::from_secs(60)).await;
    sim.fata(
        &["app", "undeploy", &domain, "-n"],
        &format!("{domain} is not deployed?"),
    );
    assert_eq!(
        docker::stack_volumes(&docker, &stack).await.unwrap(),
        [format!("{stack}_data")]
    );
    assert_eq!(secret_names(&stack).len(), 2);

    // The invocation log holds every call, with ABRA_DIR and the exit code.
    let log = std::fs::read_to_string(&sim.log).unwrap();
    let calls: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 14, "{log}");
    let last = calls.last().unwrap();
    assert_eq!(last["argv"][1], "app");
    assert_eq!(last["argv"][2], "undeploy");
    assert_eq!(last["exit"], 1);
    assert_eq!(last["abra_dir"], sim.root.display().to_string());
    assert_eq!(calls.iter().filter(|c| c["exit"] == 0).count(), 8, "{log}");
    eprintln!("lifecycle took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abra_sim_monitor_fails_in_start_period_skips_with_c_and_times_out() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let t0 = Instant::now();
    let (st, _secrets, _stack, domain) = app_under_test("abra_sim_mon").await;
    // Healthy only after 6 s, inside a 60 s start_period (the collabora case).
    let slow = Variant {
        tag: "1.0.0+1.0.0",
        mode: "slow:6",
        start_period: "60s",
        migrate: false,
        secrets: false,
        ..BASE
    };
    let stuck = Variant {
        tag: "1.1.0+1.0.0",
        unschedulable: true,
        migrate: false,
        secrets: false,
        ..BASE
    };
    let origin = recipe(&st.path().join("origin"), &[slow, stuck], "");
    // An env-interpolated start_period, committed after the releases.
    let mut interpolated = compose(Variant {
        tag: "1.2.0+1.0.0",
        secrets: false,
        ..BASE
    });
    interpolated = interpolated.replace("start_period: 2s", "start_period: ${START}");
    origin
        .publish_files("1.2.0+1.0.0", &[("compose.yml", &interpolated)], true)
        .unwrap();
    let sim = Sim {
        root: abra_dir(st.path(), &origin),
        log: st.path().join("abra.log"),
        extra_env: vec![("ABRA_SIM_MONITOR_INTERVAL_MS".into(), "250".into())],
    };

    // app new validates the literal compose: `${START}` is no duration. Nothing is written.
    sim.fata(
        &new_args(&domain, "1.2.0+1.0.0"),
        "start_period Does not match format 'duration'",
    );
    assert!(!sim.env_file(&domain).exists());

    sim.ok(&new_args(&domain, "1.0.0+1.0.0"));
    sim.set_env(&domain, &format!("PORT={}\n", st.port));

    // The new task is in its start_period with failing probes: deploy failed, TYPE untouched.
    std::fs::write(
        sim.env_file(&domain),
        std::fs::read_to_string(sim.env_file(&domain))
            .unwrap()
            .replace("TYPE=demo:1.0.0+1.0.0", "TYPE=demo"),
    )
    .unwrap();
    let started = Instant::now();
    sim.fata(
        &["app", "deploy", &domain, "1.0.0+1.0.0", "-n", "-o"],
        "deploy failed",
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.env_line(&domain, "TYPE").as_deref(), Some("demo"));

    // -c: the same deploy returns without the monitor; swarm converges on its own afterwards.
    sim.ok(&[
        "app",
        "deploy",
        &domain,
        "1.0.0+1.0.0",
        "-f",
        "-c",
        "-n",
        "-o",
    ]);
    assert_eq!(
        sim.env_line(&domain, "TYPE").as_deref(),
        Some("demo:1.0.0+1.0.0")
    );
    st.wait_converged(&docker, Duration::from_secs(90))
        .await
        .expect("swarm converges after the start period");

    // A task that can never be scheduled: deploy timed out after TIMEOUT.
    sim.set_env(&domain, "TIMEOUT=3\n");
    let started = Instant::now();
    sim.fata(
        &["app", "deploy", &domain, "1.1.0+1.0.0", "-f", "-n", "-o"],
        "deploy timed out",
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(60),
        "deploy timed out after {took:?}"
    );
    assert_eq!(
        sim.env_line(&domain, "TYPE").as_deref(),
        Some("demo:1.0.0+1.0.0")
    );
    eprintln!("monitor test took {:?}", t0.elapsed());
}
