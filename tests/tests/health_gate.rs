//! The health gate on the real swarm: a version that never gets healthy fails naming the probe,
//! a wrong version label fails naming the label, and an update swarm itself rolled back fails
//! naming the rollback state; a one-shot migration service with `restart_policy: on-failure`
//! that exited 0 does not hold the gate back.
//!
//! Uses the small gate demo workload in `gate_support/` (shared with `deployer_stack.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ci_warm::platform::deploy::stack::StackDeployer;
use ci_warm::platform::deploy::{DeployTarget, Deployer, Revision};
use ci_warm::platform::docker::{Engine, ServiceObs, SwarmView, UpdateState};
use ci_warm::upgrade::health::{Expected, GateTiming, HealthGate, Verdict};
use ci_warm::upgrade::probe::HttpProbe;

#[allow(dead_code)]
#[path = "gate_support/mod.rs"]
mod support;

use support::{IMAGE, Stack};

/// A one-service demo recipe. `update` adds swarm's automatic rollback on a failed update.
fn compose(port: u16, healthcheck: bool, update: bool) -> String {
    let healthcheck = if healthcheck {
        r#"    healthcheck:
      test: ["CMD", "/demo", "check"]
      interval: 1s
      timeout: 2s
      start_period: 20s
"#
    } else {
        ""
    };
    let update = if update {
        r#"      update_config:
        failure_action: rollback
        monitor: 3s
      rollback_config:
        monitor: 1s
"#
    } else {
        ""
    };
    format!(
        r#"version: "3.8"
services:
  app:
    image: {IMAGE}
    init: true
    environment:
      PORT: "{port}"
      DEMO_MODE: ${{DEMO_MODE}}
    ports:
      - target: {port}
        published: {port}
        mode: host
{healthcheck}    deploy:
      endpoint_mode: dnsrr
      restart_policy:
        delay: 1s
{update}      labels:
        - "coop-cloud.${{STACK_NAME}}.version=${{RECIPE_VERSION}}"
"#
    )
}

struct Fixture {
    engine: Arc<Engine>,
    stack: Stack,
    port: u16,
    deployer: StackDeployer,
}

impl Fixture {
    async fn new(test: &str) -> Option<Fixture> {
        let engine = Arc::new(support::require_docker().await?);
        support::demo_image();
        Some(Fixture {
            deployer: StackDeployer::new(engine.clone()),
            engine,
            stack: Stack::new(test),
            port: support::free_port(),
        })
    }

    /// Writes the recipe and env file for this version and mode, and deploys it.
    async fn deploy(&self, version: &str, mode: &str, healthcheck: bool, update: bool) {
        self.deploy_compose(version, mode, &compose(self.port, healthcheck, update))
            .await;
    }

    /// Deploys `compose_yml` as this version and mode.
    async fn deploy_compose(&self, version: &str, mode: &str, compose_yml: &str) {
        self.stack.write("compose.yml", compose_yml);
        let env_file = self.stack.write(
            "app.env",
            &format!("RECIPE_VERSION={version}\nDEMO_MODE={mode}\n"),
        );
        self.deployer
            .deploy(&DeployTarget {
                app: "demo".into(),
                domain: "demo.ci.test".into(),
                stack: self.stack.name.clone(),
                checkout: self.stack.path().to_owned(),
                env_file,
                revision: Revision::Version(version.into()),
                pin: None,
            })
            .await
            .unwrap();
    }

    async fn gate(&self, version: &str, timeout: Duration) -> Verdict {
        HealthGate::new(
            self.engine.as_ref(),
            GateTiming {
                timeout,
                interval: Duration::from_millis(500),
                probe_timeout: Duration::from_secs(2),
            },
        )
        .wait(
            &Expected {
                stack: self.stack.name.clone(),
                revision: Revision::Version(version.into()),
                home: None,
            },
            &[self.probe()],
        )
        .await
        .unwrap()
    }

    /// Waits until the stack's app service is in the state a test is about, so the gate's verdict
    /// is about that state and not about how fast this machine got there. Fails on expiry.
    async fn wait_for_app(&self, what: &str, ready: impl Fn(&ServiceObs) -> bool) {
        let app = format!("{}_app", self.stack.name);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let services = self.engine.services(&self.stack.name).await.unwrap();
            if services.iter().any(|s| s.name == app && ready(s)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{app} never became {what}: {services:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The status the app's probe URL answers now, if it answers at all.
    fn probe_status(&self) -> Option<u16> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(b"GET /health HTTP/1.0\r\nHost: demo.ci.test\r\n\r\n")
            .ok()?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    fn probe(&self) -> HttpProbe {
        HttpProbe::get(self.probe_url())
    }

    fn probe_url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }
}

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Healthy => panic!("expected the gate to fail"),
        Verdict::Unhealthy { reason } => reason,
    }
}

#[tokio::test]
async fn never_healthy_version_fails_naming_the_probe() {
    let Some(f) = Fixture::new("unhealthy").await else {
        return;
    };
    let t0 = Instant::now();
    // No container healthcheck: swarm calls the task running, only the probe knows better.
    f.deploy("1.0.0+1.0.0", "unhealthy", false, false).await;
    // The gate below is about an app that runs and answers 503: wait until it does.
    let deadline = Instant::now() + Duration::from_secs(180);
    while f.probe_status() != Some(503) {
        assert!(Instant::now() < deadline, "the app never answered 503");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = reason(f.gate("1.0.0+1.0.0", Duration::from_secs(8)).await);
    assert_eq!(
        r,
        format!("probe {}: status 503, expected 200", f.probe_url()),
        "after {:?}",
        t0.elapsed()
    );
    eprintln!("never-healthy gate failed after {:?}", t0.elapsed());
}

#[tokio::test]
async fn wrong_version_label_fails_naming_the_label() {
    let Some(f) = Fixture::new("label").await else {
        return;
    };
    let t0 = Instant::now();
    f.deploy("1.0.0+1.0.0", "ok", true, false).await;
    // First the deployment passes for the version it really is (a passing gate returns at once,
    // so the long deadline only serves a slow machine); then, converged and healthy, the only
    // thing left for the gate to find wrong is the label.
    assert_eq!(
        f.gate("1.0.0+1.0.0", Duration::from_secs(180)).await,
        Verdict::Healthy
    );
    let r = reason(f.gate("1.1.0+1.0.0", Duration::from_secs(8)).await);
    assert_eq!(
        r,
        format!(
            "version label coop-cloud.{}.version = 1.0.0+1.0.0, expected 1.1.0+1.0.0",
            f.stack.name
        )
    );
    eprintln!("label checks done after {:?}", t0.elapsed());
}

#[tokio::test]
async fn update_rolled_back_by_swarm_fails_naming_the_rollback() {
    let Some(f) = Fixture::new("rollback").await else {
        return;
    };
    let t0 = Instant::now();
    f.deploy("1.0.0+1.0.0", "ok", true, true).await;
    assert_eq!(
        f.gate("1.0.0+1.0.0", Duration::from_secs(180)).await,
        Verdict::Healthy
    );
    // The new tasks crash at once: swarm's update fails and it rolls back to 1.0.0 by itself.
    f.deploy("1.1.0+1.0.0", "crash", true, true).await;
    f.wait_for_app("rolled back by swarm", |s| {
        matches!(
            s.update_state,
            Some(UpdateState::RollbackStarted | UpdateState::RollbackCompleted)
        )
    })
    .await;
    let r = reason(f.gate("1.1.0+1.0.0", Duration::from_secs(8)).await);
    let app = format!("{}_app", f.stack.name);
    assert!(
        r.starts_with(&format!("service {app} is in update state rollback_")),
        "{r}"
    );
    // Swarm restored the previous spec, labels included: the label check says so too.
    assert!(r.contains("= 1.0.0+1.0.0, expected 1.1.0+1.0.0"), "{r}");
    eprintln!("rollback detected after {:?}: {r}", t0.elapsed());
}

#[tokio::test]
async fn an_on_failure_one_shot_that_exited_0_is_converged() {
    let Some(f) = Fixture::new("oneshot").await else {
        return;
    };
    let t0 = Instant::now();
    // A migration job beside the app: it runs once and exits 0; `on-failure` never restarts a
    // clean exit, so the service stays at 0/1 running for good.
    let yml = format!(
        r#"{}  migrate:
    image: {IMAGE}
    command: ["exit", "0"]
    deploy:
      restart_policy:
        condition: on-failure
        delay: 1s
"#,
        compose(f.port, false, false)
    );
    f.deploy_compose("1.0.0+1.0.0", "ok", &yml).await;
    // The verdict below is about a migration that has finished: wait until swarm says so.
    let migrate = format!("{}_migrate", f.stack.name);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let services = f.engine.services(&f.stack.name).await.unwrap();
        let done = services.iter().any(|s| {
            s.name == migrate
                && s.tasks
                    .iter()
                    .any(|t| t.state == ci_warm::platform::docker::TaskState::Complete)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{migrate} never completed: {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A passing gate returns at once; the long deadline only serves a slow machine. Before
    // the fix this timed out with "service ..._migrate: 0/1 running" (a false rollback).
    assert_eq!(
        f.gate("1.0.0+1.0.0", Duration::from_secs(60)).await,
        Verdict::Healthy
    );
    eprintln!("one-shot converged after {:?}", t0.elapsed());
}
