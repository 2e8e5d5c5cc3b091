//! The stack deployer on the real swarm: deploy -> healthy -> undeploy, and the undeploy waits
//! until no container (running or stopped) holds the stack's volume, also when a leftover
//! container starts between being listed and being removed.
//!
//! The demo image (`gate_support/`, shared with `health_gate.rs`) is a tiny static binary built
//! here with rustc and imported with `docker import` (no registry needed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ci_warm::platform::deploy::stack::StackDeployer;
use ci_warm::platform::deploy::{DeployTarget, Deployer, GoneWait, Revision, wait_until_gone};
use ci_warm::platform::docker::{
    BoxFuture, ContainerObs, DockerError, NetworkObs, ServiceObs, SwarmJanitor, SwarmView,
    VolumeObs,
};
use ci_warm::upgrade::health::{Expected, GateTiming, HealthGate, Verdict};
use ci_warm::upgrade::probe::HttpProbe;

#[allow(dead_code)]
#[path = "gate_support/mod.rs"]
mod support;

use support::{IMAGE, Stack};

/// A demo recipe: the app (healthchecked, writing to the volume) and a replicated-job migration
/// on the same volume, so the undeploy meets the engine's leftover job containers.
fn compose(port: u16) -> String {
    format!(
        r#"version: "3.8"
services:
  app:
    image: {IMAGE}
    init: true
    environment:
      PORT: "{port}"
      DEMO_MODE: ${{DEMO_MODE}}
      DATA_FILE: /data/demo.txt
    volumes:
      - data:/data
    ports:
      - target: {port}
        published: {port}
        mode: host
    healthcheck:
      test: ["CMD", "/demo", "check"]
      interval: 1s
      timeout: 2s
      start_period: 20s
    deploy:
      endpoint_mode: dnsrr
      # List form, as recipes write it: compose interpolates values, never mapping keys.
      labels:
        - "coop-cloud.${{STACK_NAME}}.version=${{RECIPE_VERSION}}"
        - "backupbot.backup=true"
  migrate:
    image: {IMAGE}
    command: ["exit", "0"]
    volumes:
      - data:/data
    deploy:
      mode: replicated-job
      endpoint_mode: dnsrr
volumes:
  data:
"#
    )
}

#[tokio::test]
async fn deploy_healthy_then_undeploy_waits_until_no_container_holds_the_volume() {
    let Some(engine) = support::require_docker().await else {
        return;
    };
    support::demo_image();
    let t0 = Instant::now();
    let stack = Stack::new("deploy");
    let port = support::free_port();
    stack.write("compose.yml", &compose(port));
    // Values with a comment and quotes, as abra writes them; DOMAIN comes from the target.
    let env_file = stack.write(
        "app.env",
        "TYPE=demo\n# a comment\nCOMPOSE_FILE=\"compose.yml\"\nRECIPE_VERSION=1.0.0+1.0.0 # v\nDEMO_MODE=ok\n",
    );
    let engine = Arc::new(engine);
    let mut deployer = StackDeployer::new(engine.clone());
    deployer.gone = GoneWait {
        timeout: Duration::from_secs(40),
        interval: Duration::from_millis(250),
    };
    let target = DeployTarget {
        app: "demo".into(),
        domain: "demo.ci.test".into(),
        stack: stack.name.clone(),
        checkout: stack.path().to_owned(),
        env_file,
        revision: Revision::Version("1.0.0+1.0.0".into()),
        pin: None,
    };
    deployer.deploy(&target).await.unwrap();

    let gate = HealthGate::new(
        engine.as_ref(),
        GateTiming {
            timeout: Duration::from_secs(30),
            interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(2),
        },
    );
    let expected = Expected {
        stack: stack.name.clone(),
        revision: target.revision.clone(),
        home: None,
    };
    let probes = [HttpProbe {
        body_contains: Some("ok".into()),
        host: Some("demo.ci.test".into()),
        ..HttpProbe::get(format!("http://127.0.0.1:{port}/health"))
    }];
    let verdict = gate.wait(&expected, &probes).await.unwrap();
    assert_eq!(verdict, Verdict::Healthy);
    let healthy_at = t0.elapsed();

    let volume = format!("{}_data", stack.name);
    let volumes = engine.volumes(&stack.name).await.unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        [volume.as_str()]
    );
    assert!(!volumes[0].mountpoint.is_empty());
    assert!(
        !engine.containers_using(&volume).await.unwrap().is_empty(),
        "the app and the job hold the volume while deployed"
    );

    // The engine's `stack rm` fails when a task still holds the stack's network as it stops (seen
    // on a loaded host): the services are gone, the network is not. The first `stack rm` here
    // ends that way; the deployer must remove the network again once the tasks are gone.
    let calls = stack.path().join("stack-rm-calls");
    let wrapper = stack.write(
        "docker-wrapper",
        &format!(
            "#!/bin/sh\n\
             if [ \"$1 $2\" = \"stack rm\" ] && [ ! -e {calls} ]; then\n\
               touch {calls}; docker \"$@\" >/dev/null 2>&1\n\
               echo \"Failed to remove network n1: Error response from daemon: rpc error: code = FailedPrecondition desc = network n1 is in use by task t1\" >&2\n\
               echo \"failed to remove some resources from stack: $3\" >&2; exit 1\n\
             fi\n\
             exec docker \"$@\"\n",
            calls = calls.display()
        ),
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    deployer.docker_cli = wrapper;
    deployer.undeploy(&target).await.unwrap();
    assert!(calls.exists(), "the failing first `stack rm` ran");
    let gone_at = t0.elapsed();
    assert!(
        engine.containers_using(&volume).await.unwrap().is_empty(),
        "undeploy returned while a container still holds {volume}"
    );
    assert!(engine.services(&stack.name).await.unwrap().is_empty());
    assert!(engine.networks(&stack.name).await.unwrap().is_empty());
    assert!(
        engine
            .stack_containers(&stack.name)
            .await
            .unwrap()
            .is_empty()
    );
    // The data outlives the undeploy: that is what gets snapshotted.
    let volumes = engine.volumes(&stack.name).await.unwrap();
    assert_eq!(volumes.len(), 1);
    eprintln!("healthy after {healthy_at:?}, gone after {gone_at:?}");

    // Undeploying what is not deployed is not an error.
    deployer.undeploy(&target).await.unwrap();
}

#[tokio::test]
async fn deploy_reports_a_missing_compose_file() {
    let Some(engine) = support::require_docker().await else {
        return;
    };
    let stack = Stack::new("nocompose");
    let env_file = stack.write("app.env", "COMPOSE_FILE=compose.yml:compose.extra.yml\n");
    stack.write("compose.yml", &compose(support::free_port()));
    let deployer = StackDeployer::new(Arc::new(engine));
    let err = deployer
        .deploy(&DeployTarget {
            app: "demo".into(),
            domain: "demo.ci.test".into(),
            stack: stack.name.clone(),
            checkout: stack.path().to_owned(),
            env_file,
            revision: Revision::Version("1.0.0+1.0.0".into()),
            pin: None,
        })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("compose.extra.yml") && msg.contains("app demo"),
        "{msg}"
    );
}

/// Docker through its CLI, for setting a scene; panics with the output on failure.
fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The real engine, except that the first removal of a leftover container is preceded by
/// starting that container: exactly the race of a `created` container that starts between the
/// wait's listing and its removal. After the engine's answer, the container is killed, so the
/// volume becomes free and the wait can finish.
struct StartsBeforeRemoval {
    engine: ci_warm::platform::docker::Engine,
    outcomes: std::sync::Mutex<Vec<String>>,
}

impl SwarmView for StartsBeforeRemoval {
    fn services<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ServiceObs>, DockerError>> {
        self.engine.services(stack)
    }
    fn volumes<'a>(&'a self, stack: &'a str) -> BoxFuture<'a, Result<Vec<VolumeObs>, DockerError>> {
        self.engine.volumes(stack)
    }
    fn containers_using<'a>(
        &'a self,
        volume: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        self.engine.containers_using(volume)
    }
    fn stack_containers<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        self.engine.stack_containers(stack)
    }
    fn networks<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<NetworkObs>, DockerError>> {
        self.engine.networks(stack)
    }
}

impl SwarmJanitor for StartsBeforeRemoval {
    fn remove_stopped_container<'a>(
        &'a self,
        stack: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move {
            let first = self.outcomes.lock().unwrap().is_empty();
            if first {
                docker_cli(&["start", container]);
            }
            let r = self.engine.remove_stopped_container(stack, container).await;
            self.outcomes.lock().unwrap().push(match &r {
                Ok(()) => "removed".to_owned(),
                Err(e) => e.to_string(),
            });
            if first {
                docker_cli(&["kill", container]);
            }
            r
        })
    }
    fn remove_network<'a>(
        &'a self,
        stack: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        self.engine.remove_network(stack, network)
    }
}

/// Removes the scene's container whatever happened.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[tokio::test]
async fn a_leftover_container_that_starts_before_its_removal_is_waited_for_not_fatal() {
    let Some(engine) = support::require_docker().await else {
        return;
    };
    support::demo_image();
    let stack = Stack::new("startrace");
    let label = format!("com.docker.stack.namespace={}", stack.name);
    let volume = format!("{}_data", stack.name);
    docker_cli(&["volume", "create", "--label", &label, &volume]);
    // A leftover of the stack in state `created`, holding its volume.
    let id = docker_cli(&[
        "create",
        "--label",
        &label,
        "-v",
        &format!("{volume}:/data"),
        support::IMAGE,
        "serve",
    ]);
    let _guard = ContainerGuard(id.clone());
    let state = docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]);
    assert_eq!(state, "created");

    let racer = StartsBeforeRemoval {
        engine,
        outcomes: std::sync::Mutex::new(Vec::new()),
    };
    let wait = GoneWait {
        timeout: Duration::from_secs(60),
        interval: Duration::from_millis(200),
    };
    let r = wait_until_gone(&racer, "demo", &stack.name, wait).await;
    let outcomes = racer.outcomes.lock().unwrap().clone();
    assert!(
        outcomes.first().is_some_and(|o| o.contains("409")),
        "the first removal met the engine's 409: {outcomes:?}"
    );
    r.unwrap_or_else(|e| panic!("the wait must outlast a 409 ({outcomes:?}): {e}"));
    assert_eq!(outcomes.last().map(String::as_str), Some("removed"));
    assert!(
        racer
            .engine
            .containers_using(&volume)
            .await
            .unwrap()
            .is_empty(),
        "the volume is free"
    );
}
