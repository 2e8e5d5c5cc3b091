//! Docker for the tests, through the API (bollard) only: present and a swarm manager, or a clear
//! failure in CI; and what the tests observe about a stack (convergence, labels, volumes).
//!
//! Deliberately independent of the reconciler's own Docker layer, so the harness still works
//! (and can judge it) while that layer changes.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{
    Service, ServiceUpdateStatusStateEnum, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListServicesOptions, ListTasksOptions,
    ListVolumesOptions,
};

/// The label `docker stack deploy` puts on everything of a stack.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// Whether a missing Docker must fail the test instead of skipping it.
pub fn docker_required() -> bool {
    ["CI", "CI_WARM_REQUIRE_DOCKER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// Connects with the local defaults (`DOCKER_HOST` or the unix socket) and negotiates the API
/// version down to what the engine speaks (1.41 on Debian 12's engine; bollard defaults higher).
pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context("connecting to Docker")?;
    docker
        .negotiate_version()
        .await
        .context("negotiating the Docker API version (is dockerd running?)")
}

/// The Docker client, or `None` (the test returns early) when Docker is unreachable or the node
/// is not a swarm manager. With `CI` or `CI_WARM_REQUIRE_DOCKER` set it panics instead, with the
/// reason: a CI run that silently skips every swarm test would prove nothing.
pub async fn require_docker() -> Option<Docker> {
    let why = match connect().await {
        Ok(docker) => match docker.info().await {
            Ok(info)
                if info
                    .swarm
                    .as_ref()
                    .and_then(|s| s.control_available)
                    .unwrap_or(false) =>
            {
                return Some(docker);
            }
            Ok(_) => "this Docker engine is not a swarm manager (run scripts/setup.sh, or \
                      `docker swarm init --advertise-addr 127.0.0.1`)"
                .to_owned(),
            Err(e) => format!("Docker did not answer /info: {e}"),
        },
        Err(e) => format!("{e:#}"),
    };
    if docker_required() {
        panic!("Docker is required in CI (CI or CI_WARM_REQUIRE_DOCKER is set): {why}");
    }
    eprintln!("SKIPPED: Docker is not available: {why}");
    None
}

fn label_filter(stack: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{STACK_LABEL}={stack}")])])
}

/// The services of a stack.
pub async fn services(docker: &Docker, stack: &str) -> anyhow::Result<Vec<Service>> {
    docker
        .list_services(Some(ListServicesOptions {
            filters: Some(label_filter(stack)),
            status: None,
        }))
        .await
        .with_context(|| format!("listing the services of stack {stack}"))
}

/// The labels of one service (`deploy.labels` in compose), e.g. `<stack>_app`.
pub async fn service_labels(
    docker: &Docker,
    service: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let s = docker
        .inspect_service(service, None)
        .await
        .with_context(|| format!("inspecting service {service}"))?;
    Ok(s.spec.and_then(|s| s.labels).unwrap_or_default())
}

/// The version abra stamps on `<stack>_app`: label `coop-cloud.<stack>.version`.
pub async fn deployed_version(docker: &Docker, stack: &str) -> anyhow::Result<Option<String>> {
    let labels = service_labels(docker, &format!("{stack}_app")).await?;
    Ok(labels.get(&format!("coop-cloud.{stack}.version")).cloned())
}

/// Names of the stack's volumes (`<stack>_<volume>`).
pub async fn stack_volumes(docker: &Docker, stack: &str) -> anyhow::Result<Vec<String>> {
    let list = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(label_filter(stack)),
        }))
        .await
        .with_context(|| format!("listing the volumes of stack {stack}"))?;
    let mut names: Vec<String> = list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    names.sort();
    Ok(names)
}

/// The host directory of a volume (its `Mountpoint`), e.g. `<stack>_data`.
pub async fn volume_mountpoint(docker: &Docker, volume: &str) -> anyhow::Result<PathBuf> {
    let v = docker
        .inspect_volume(volume)
        .await
        .with_context(|| format!("inspecting volume {volume}"))?;
    if v.mountpoint.is_empty() {
        bail!("volume {volume} has no mountpoint (driver {})", v.driver);
    }
    Ok(PathBuf::from(v.mountpoint))
}

/// How far one service is from converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub name: String,
    /// A one-shot (restart condition `none`): converged when its tasks completed.
    pub one_shot: bool,
    pub desired: u64,
    pub running: u64,
    pub complete: u64,
    /// Swarm's update status (`updating`, `rollback_started`, ...), when an update ran.
    pub update: Option<String>,
    /// Latest error message of a task, to say why it is not converging.
    pub last_error: Option<String>,
}

impl ServiceState {
    pub fn converged(&self) -> bool {
        let settled = !matches!(
            self.update.as_deref(),
            Some("updating" | "rollback_started" | "paused" | "rollback_paused")
        );
        settled
            && if self.one_shot {
                self.complete >= self.desired
            } else {
                self.running == self.desired
            }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.one_shot {
            write!(
                f,
                "{}: {}/{} complete",
                self.name, self.complete, self.desired
            )?;
        } else {
            write!(
                f,
                "{}: {}/{} running",
                self.name, self.running, self.desired
            )?;
        }
        if let Some(u) = &self.update {
            write!(f, ", update {u}")?;
        }
        if let Some(e) = &self.last_error {
            write!(f, ", last error: {e}")?;
        }
        Ok(())
    }
}

/// The convergence of every service of a stack, by service name.
pub async fn stack_state(docker: &Docker, stack: &str) -> anyhow::Result<Vec<ServiceState>> {
    let mut out = Vec::new();
    for service in services(docker, stack).await? {
        let spec = service.spec.clone().unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        let one_shot = spec
            .task_template
            .as_ref()
            .and_then(|t| t.restart_policy.as_ref())
            .and_then(|r| r.condition)
            == Some(TaskSpecRestartPolicyConditionEnum::NONE);
        let desired = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .map_or(1, |n| u64::try_from(n).unwrap_or(0));
        let tasks = docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("service".to_owned(), vec![name.clone()])])),
            }))
            .await
            .with_context(|| format!("listing the tasks of {name}"))?;
        let mut running = 0;
        let mut complete = 0;
        let mut last_error = None;
        let mut newest = None;
        for t in &tasks {
            let status = t.status.clone().unwrap_or_default();
            let state = status.state;
            let wanted = t.desired_state == Some(TaskState::RUNNING);
            if wanted && state == Some(TaskState::RUNNING) {
                running += 1;
            }
            if state == Some(TaskState::COMPLETE) {
                complete += 1;
            }
            let stamp = t.updated_at.as_ref().map(|d| d.to_string());
            if let Some(err) = status.err.filter(|e| !e.is_empty())
                && newest.as_ref() < stamp.as_ref()
            {
                newest = stamp;
                last_error = Some(err);
            }
        }
        let update = service
            .update_status
            .and_then(|u| u.state)
            .filter(|s| *s != ServiceUpdateStatusStateEnum::EMPTY)
            .map(|s| s.to_string());
        out.push(ServiceState {
            name,
            one_shot,
            desired,
            running,
            complete,
            update,
            last_error,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Waits until every service of the stack converged: running == desired for a replicated
/// service (swarm counts a task with a healthcheck as running only once it is healthy), the
/// tasks completed for a one-shot, no update in flight. Errors with each service's state.
pub async fn wait_converged(
    docker: &Docker,
    stack: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<ServiceState>> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = stack_state(docker, stack).await?;
        if !state.is_empty() && state.iter().all(ServiceState::converged) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            let shown: Vec<String> = state.iter().map(ToString::to_string).collect();
            bail!(
                "stack {stack} did not converge within {timeout:?}: {}",
                if shown.is_empty() {
                    "no services".to_owned()
                } else {
                    shown.join("; ")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything of a stack that still exists (services, containers, volumes, networks), as
/// `kind name` strings; empty once the stack is fully gone.
pub async fn stack_leftovers(docker: &Docker, stack: &str) -> anyhow::Result<Vec<String>> {
    let mut left: Vec<String> = services(docker, stack)
        .await?
        .into_iter()
        .filter_map(|s| s.spec.and_then(|s| s.name))
        .map(|n| format!("service {n}"))
        .collect();
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(stack)),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing the containers of stack {stack}"))?;
    left.extend(containers.into_iter().map(|c| {
        format!(
            "container {}",
            c.names
                .and_then(|n| n.into_iter().next())
                .or(c.id)
                .unwrap_or_default()
        )
    }));
    left.extend(
        stack_volumes(docker, stack)
            .await?
            .into_iter()
            .map(|v| format!("volume {v}")),
    );
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(stack)),
        }))
        .await
        .with_context(|| format!("listing the networks of stack {stack}"))?;
    left.extend(
        networks
            .into_iter()
            .filter_map(|n| n.name)
            .map(|n| format!("network {n}")),
    );
    Ok(left)
}
