//! The health gate on the real swarm: a version that never gets healthy fails naming the probe,
//! a wrong version label fails naming the label, and an update swarm itself rolled back fails
//! naming the rollback state.
//!
//! Uses the small gate demo workload in `gate_support/` (shared with `deployer_stack.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ci_warm::platform::deploy::stack::StackDeployer;
use ci_warm::platform::deploy::{DeployTarget, Deployer, Revision};
use ci_warm::platform::docker::Engine;
use ci_warm::upgrade::health::{Expected, GateTiming, HealthGate, HttpProbe, Verdict};

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
        self.stack
            .write("compose.yml", &compose(self.port, healthcheck, update));
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
            },
            &[self.probe()],
        )
        .await
        .unwrap()
    }

    fn probe(&self) -> HttpProbe {
        HttpProbe {
            url: self.probe_url(),
            status: 200,
            body_contains: None,
            host: None,
        }
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
    let r = reason(f.gate("1.1.0+1.0.0", Duration::from_secs(8)).await);
    assert_eq!(
        r,
        format!(
            "version label coop-cloud.{}.version = 1.0.0+1.0.0, expected 1.1.0+1.0.0",
            f.stack.name
        )
    );
    // The same deployment passes for the version it really is.
    assert_eq!(
        f.gate("1.0.0+1.0.0", Duration::from_secs(30)).await,
        Verdict::Healthy
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
        f.gate("1.0.0+1.0.0", Duration::from_secs(30)).await,
        Verdict::Healthy
    );
    // The new tasks crash at once: swarm's update fails and it rolls back to 1.0.0 by itself.
    f.deploy("1.1.0+1.0.0", "crash", true, true).await;
    let r = reason(f.gate("1.1.0+1.0.0", Duration::from_secs(45)).await);
    let app = format!("{}_app", f.stack.name);
    assert!(
        r.starts_with(&format!("service {app} is in update state rollback_")),
        "{r}"
    );
    // Swarm restored the previous spec, labels included: the label check says so too.
    assert!(r.contains("= 1.0.0+1.0.0, expected 1.1.0+1.0.0"), "{r}");
    eprintln!("rollback detected after {:?}: {r}", t0.elapsed());
}
