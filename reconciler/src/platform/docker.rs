//! Everything ci-warm observes about a deployment, read through the Docker API (bollard).
//!
//! Whichever backend deployed a stack (abra or `docker stack deploy`), the facts come from the
//! engine: services with their labels, mode and update status, their tasks, the stack's volumes
//! and networks, and the containers holding a volume. [`SwarmView`] is the read side as a small
//! object-safe trait so the health gate and the undeploy wait can be driven by canned
//! observations in unit tests; [`Engine`] is the real implementation.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use bollard::Docker;
use bollard::models::{
    HealthStatusEnum, MountType, ServiceUpdateStatusStateEnum, TaskSpecRestartPolicyConditionEnum,
    TaskState as BollardTaskState,
};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListNetworksOptions, ListNodesOptions,
    ListServicesOptions, ListTasksOptions, ListVolumesOptions, RemoveContainerOptions,
};
use thiserror::Error;

/// The label `docker stack deploy` (and so abra) puts on every object of a stack.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// A boxed, sendable future: keeps [`SwarmView`] object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("Docker unreachable at {endpoint}: {source}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("listing the {what} of stack {stack}: {source}")]
    List {
        what: &'static str,
        stack: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("asking Docker about itself (docker info): {source}")]
    Info {
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "this Docker engine is not a swarm node (swarm state {state}): ci-warm needs the swarm node holding the warm apps' volumes"
    )]
    NotInSwarm { state: String },
    #[error("listing the swarm's nodes: {source}")]
    Nodes {
        #[source]
        source: bollard::errors::Error,
    },
    #[error("listing the containers that use volume {volume}: {source}")]
    VolumeUsers {
        volume: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("inspecting container {container} of service {service}: {source}")]
    Inspect {
        container: String,
        service: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine refused to remove the container for now (409: it started running since it
    /// was listed as stopped, or its removal is already in progress): not fatal, look again.
    #[error("leftover container {container} of stack {stack} cannot be removed yet: {source}")]
    RemoveConflict {
        container: String,
        stack: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A leftover network the engine will not remove yet (a task still holds an endpoint on
    /// it): not fatal, look again.
    #[error("leftover network {network} of stack {stack} cannot be removed yet: {source}")]
    NetworkInUse {
        network: String,
        stack: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("removing leftover network {network} of stack {stack}: {source}")]
    RemoveNetwork {
        network: String,
        stack: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("removing leftover container {container} of stack {stack}: {source}")]
    RemoveContainer {
        container: String,
        stack: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// How a service schedules its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// A one-shot: done when `total_completions` tasks completed.
    ReplicatedJob {
        total_completions: u64,
    },
    GlobalJob,
}

/// Swarm's `UpdateStatus.State` of a service (absent when no update ever ran or it was reset
/// by a later `service update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }
}

/// `deploy.restart_policy.condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartCondition {
    #[default]
    Any,
    OnFailure,
    None,
}

/// A swarm task state, in the engine's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskState {
    New,
    Allocated,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
    Unknown,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Allocated => "allocated",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
            TaskState::Unknown => "unknown",
        }
    }

    /// Whether a task in this state is finished for good (it will never run again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Complete
                | TaskState::Shutdown
                | TaskState::Failed
                | TaskState::Rejected
                | TaskState::Remove
                | TaskState::Orphaned
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container's healthcheck status, when the container has a healthcheck and runs on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskObs {
    pub id: String,
    pub slot: Option<i64>,
    pub desired_state: TaskState,
    pub state: TaskState,
    pub exit_code: Option<i64>,
    /// `Status.Err`: why the task failed or was rejected.
    pub error: Option<String>,
    /// `Status.Message`: the scheduler's last word on the task.
    pub message: Option<String>,
    pub container_id: Option<String>,
    /// Only filled for running/starting/complete tasks whose container is on this node and has
    /// a healthcheck; swarm itself keeps such a task `starting` until the first check passes,
    /// and a `complete` one whose container ended `unhealthy` was stopped by swarm for it.
    pub health: Option<ContainerHealth>,
    /// Creation time as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (fixed width, so it sorts as text).
    pub created_at: String,
    /// For job-mode services: which run of the job the task belongs to.
    pub job_iteration: Option<u64>,
    /// The swarm node the task was scheduled on (`NodeID`), once it was.
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceObs {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub mode: ServiceMode,
    pub restart: RestartCondition,
    pub update_state: Option<UpdateState>,
    pub update_message: Option<String>,
    /// The named volumes the service mounts (`type: volume` mounts with a source), as the
    /// engine names them (`<stack>_<volume>` for a stack's own).
    pub volume_mounts: Vec<String>,
    pub tasks: Vec<TaskObs>,
}

/// A swarm node: its id and hostname (what an operator recognises in a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeObs {
    pub id: String,
    pub hostname: String,
}

impl std::fmt::Display for NodeObs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.hostname, self.id)
    }
}

/// The engine ci-warm talks to, as a swarm member: its node, and whether it is a manager (only
/// managers answer for services and tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub node: NodeObs,
    pub manager: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeObs {
    pub name: String,
    pub mountpoint: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerObs {
    pub id: String,
    pub name: String,
    /// `created`, `running`, `exited`, `dead`, ...
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkObs {
    pub id: String,
    pub name: String,
}

/// The read side of the engine, as the gate and the deployers need it.
pub trait SwarmView: Send + Sync {
    /// Services of the stack with their tasks (all of them, history included).
    fn services<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ServiceObs>, DockerError>>;
    /// Every volume of the stack, backed up or not (see [`backed_up_volumes`]).
    fn volumes<'a>(&'a self, stack: &'a str) -> BoxFuture<'a, Result<Vec<VolumeObs>, DockerError>>;
    /// Containers, running or stopped, that mount the volume (`docker ps -a --filter volume=`).
    fn containers_using<'a>(
        &'a self,
        volume: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>>;
    /// Containers, running or stopped, labelled as belonging to the stack.
    fn stack_containers<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>>;
    fn networks<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<NetworkObs>, DockerError>>;
    /// The swarm's nodes, for naming where a task runs. Views that cannot tell return none,
    /// and messages fall back to node ids.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeObs>, DockerError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The one write the undeploy wait needs besides observing (see [`SwarmJanitor::remove_stopped_container`]).
pub trait SwarmJanitor: SwarmView {
    /// Removes a stopped container left behind by a removed stack. Engine 20.10 leaves the
    /// exited containers of `replicated-job` tasks behind after `docker service rm`; they hold
    /// the stack's volumes (blocking `volume rm`) and would make the undeploy wait forever.
    /// A container that is gone already counts as removed; one the engine will not remove yet
    /// (409: it started since it was listed, or is being removed) is [`DockerError::RemoveConflict`].
    fn remove_stopped_container<'a>(
        &'a self,
        stack: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>>;
    /// Removes a network a removed stack left behind: `docker stack rm` (and abra's undeploy,
    /// which is one) fails to remove a network while stopping tasks still hold endpoints on it,
    /// and nothing removes it afterwards. Gone already counts as removed; still in use is
    /// [`DockerError::NetworkInUse`].
    fn remove_network<'a>(
        &'a self,
        stack: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>>;
}

/// The volumes a snapshot must cover: the stack's volumes minus the `excluded` ones (by compose
/// name, without the `<stack>_` prefix; the full name is accepted too), as backup-bot-two's
/// labels in the compose files say (`platform::backupbot`).
pub fn backed_up_volumes(
    stack: &str,
    excluded: &std::collections::BTreeSet<String>,
    volumes: &[VolumeObs],
) -> Vec<VolumeObs> {
    volumes
        .iter()
        .filter(|v| {
            let short = v
                .name
                .strip_prefix(stack)
                .and_then(|r| r.strip_prefix('_'))
                .unwrap_or(&v.name);
            !excluded.iter().any(|e| *e == short || *e == v.name)
        })
        .cloned()
        .collect()
}

/// Where bollard will connect, for error messages (never contains credentials: a TCP/SSH URL
/// with user info is cut down to its scheme and host).
fn endpoint_description(docker_host: Option<&str>) -> String {
    match docker_host {
        Some(h) if !h.is_empty() => match h.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{host}")
            }
            None => h.to_owned(),
        },
        _ => "unix:///var/run/docker.sock".to_owned(),
    }
}

/// Connects to the local engine and negotiates the API version (the CI host's engine may be
/// older than bollard's default API version).
pub async fn connect() -> Result<Docker, DockerError> {
    let endpoint = endpoint_description(std::env::var("DOCKER_HOST").ok().as_deref());
    let docker =
        Docker::connect_with_local_defaults().map_err(|source| DockerError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        })?;
    docker
        .negotiate_version()
        .await
        .map_err(|source| DockerError::Unreachable { endpoint, source })
}

/// The real engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    pub fn new(docker: Docker) -> Self {
        Engine { docker }
    }

    /// [`connect`] and wrap.
    pub async fn connect() -> Result<Self, DockerError> {
        Ok(Engine::new(connect().await?))
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// This engine's swarm node (`docker info`: `Swarm.NodeID`, `Name`): where the volumes
    /// ci-warm reads and snapshots live. An engine outside any swarm is an error.
    pub async fn local_node(&self) -> Result<LocalNode, DockerError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|source| DockerError::Info { source })?;
        let swarm = info.swarm.unwrap_or_default();
        let id =
            swarm
                .node_id
                .filter(|n| !n.is_empty())
                .ok_or_else(|| DockerError::NotInSwarm {
                    state: swarm
                        .local_node_state
                        .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                })?;
        Ok(LocalNode {
            node: NodeObs {
                id,
                hostname: info.name.unwrap_or_default(),
            },
            manager: swarm.control_available.unwrap_or(false),
        })
    }

    async fn list_nodes(&self) -> Result<Vec<NodeObs>, DockerError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|source| DockerError::Nodes { source })?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeObs {
                id: n.id.unwrap_or_default(),
                hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
            })
            .collect())
    }

    /// Every service of every running stack: `(stack name, service labels)`. What `realm reap
    /// --live-from-swarm` reads live run ids from.
    pub async fn stack_service_labels(
        &self,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, DockerError> {
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![STACK_LABEL.to_owned()],
                )])),
                status: None,
            }))
            .await
            .map_err(|source| DockerError::List {
                what: "services",
                stack: "(all stacks)".to_owned(),
                source,
            })?;
        Ok(services
            .into_iter()
            .filter_map(|s| {
                let labels: BTreeMap<String, String> =
                    s.spec?.labels.unwrap_or_default().into_iter().collect();
                let stack = labels.get(STACK_LABEL)?.clone();
                Some((stack, labels))
            })
            .collect())
    }

    async fn list_services(&self, stack: &str) -> Result<Vec<ServiceObs>, DockerError> {
        let list_err = |what| {
            let stack = stack.to_owned();
            move |source| DockerError::List {
                what,
                stack,
                source,
            }
        };
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(stack_filter(stack)),
                status: None,
            }))
            .await
            .map_err(list_err("services"))?;
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(stack_filter(stack)),
            }))
            .await
            .map_err(list_err("tasks"))?;
        // Stack tasks carry the namespace label through the container spec; index by service.
        let mut by_service: HashMap<String, Vec<TaskObs>> = HashMap::new();
        for t in tasks {
            let Some(service_id) = t.service_id.clone() else {
                continue;
            };
            let status = t.status.unwrap_or_default();
            let container = status.container_status.unwrap_or_default();
            by_service.entry(service_id).or_default().push(TaskObs {
                id: t.id.unwrap_or_default(),
                slot: t.slot,
                desired_state: task_state(t.desired_state),
                state: task_state(status.state),
                exit_code: container.exit_code,
                error: status.err.filter(|e| !e.is_empty()),
                message: status.message.filter(|m| !m.is_empty()),
                container_id: container.container_id.filter(|c| !c.is_empty()),
                health: None,
                created_at: t
                    .created_at
                    .as_deref()
                    .map(sortable_time)
                    .unwrap_or_default(),
                job_iteration: t.job_iteration.and_then(|v| v.index),
                node_id: t.node_id.filter(|n| !n.is_empty()),
            });
        }
        let mut out = Vec::with_capacity(services.len());
        for s in services {
            let id = s.id.unwrap_or_default();
            let spec = s.spec.unwrap_or_default();
            let name = spec.name.unwrap_or_else(|| id.clone());
            let task_template = spec.task_template.unwrap_or_default();
            let volume_mounts: Vec<String> = task_template
                .container_spec
                .as_ref()
                .and_then(|c| c.mounts.as_ref())
                .map(|mounts| {
                    mounts
                        .iter()
                        .filter(|m| m.typ == Some(MountType::VOLUME))
                        .filter_map(|m| m.source.clone().filter(|s| !s.is_empty()))
                        .collect()
                })
                .unwrap_or_default();
            let restart = match task_template.restart_policy.and_then(|r| r.condition) {
                Some(TaskSpecRestartPolicyConditionEnum::NONE) => RestartCondition::None,
                Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE) => RestartCondition::OnFailure,
                _ => RestartCondition::Any,
            };
            let mode = match spec.mode {
                Some(m) if m.global.is_some() => ServiceMode::Global,
                Some(m) if m.global_job.is_some() => ServiceMode::GlobalJob,
                Some(m) if m.replicated_job.is_some() => {
                    let job = m.replicated_job.unwrap_or_default();
                    // The engine defaults TotalCompletions to MaxConcurrent, which defaults to 1.
                    let total = job
                        .total_completions
                        .or(job.max_concurrent)
                        .unwrap_or(1)
                        .max(0);
                    ServiceMode::ReplicatedJob {
                        total_completions: u64::try_from(total).unwrap_or(0),
                    }
                }
                Some(m) => ServiceMode::Replicated {
                    replicas: m
                        .replicated
                        .and_then(|r| r.replicas)
                        .and_then(|r| u64::try_from(r).ok())
                        .unwrap_or(1),
                },
                None => ServiceMode::Replicated { replicas: 1 },
            };
            let (update_state, update_message) = match s.update_status {
                Some(u) => (update_state(u.state), u.message.filter(|m| !m.is_empty())),
                None => (None, None),
            };
            let mut tasks = by_service.remove(&id).unwrap_or_default();
            // Every task's container is asked for its health, whether the spec has a
            // healthcheck or not: the spec cannot tell (bollard reads the container spec's
            // healthcheck as `HealthCheck`; the engine sends `Healthcheck`, so it always looked
            // absent), and a container without one simply reports none.
            for t in &mut tasks {
                // A completed task's container too: swarm stops a container that failed its
                // healthcheck, and one that exits 0 on SIGTERM leaves a `complete` task, told
                // from a finished one-shot only by its final `unhealthy`.
                if matches!(
                    t.state,
                    TaskState::Running | TaskState::Starting | TaskState::Complete
                ) && let Some(cid) = &t.container_id
                {
                    t.health = self.container_health(&name, cid).await?;
                }
            }
            out.push(ServiceObs {
                id,
                name,
                labels: spec.labels.unwrap_or_default().into_iter().collect(),
                mode,
                restart,
                update_state,
                update_message,
                volume_mounts,
                tasks,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The container's healthcheck status; `None` when the container is not on this node (a
    /// multi-node swarm) or vanished between listing and inspecting.
    async fn container_health(
        &self,
        service: &str,
        container: &str,
    ) -> Result<Option<ContainerHealth>, DockerError> {
        match self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(c
                .state
                .and_then(|s| s.health)
                .and_then(|h| h.status)
                .and_then(|s| match s {
                    HealthStatusEnum::STARTING => Some(ContainerHealth::Starting),
                    HealthStatusEnum::HEALTHY => Some(ContainerHealth::Healthy),
                    HealthStatusEnum::UNHEALTHY => Some(ContainerHealth::Unhealthy),
                    _ => None,
                })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(DockerError::Inspect {
                container: container.to_owned(),
                service: service.to_owned(),
                source,
            }),
        }
    }

    async fn list_containers(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerObs>, bollard::errors::Error> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .map(|c| ContainerObs {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }
}

/// Go prints RFC 3339 timestamps with the fraction's trailing zeros cut; padding the fraction to
/// nine digits makes the engine's UTC timestamps comparable as strings.
pub fn sortable_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    format!("{whole}.{frac}Z")
}

fn stack_filter(stack: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{STACK_LABEL}={stack}")])])
}

fn task_state(s: Option<BollardTaskState>) -> TaskState {
    match s {
        Some(BollardTaskState::NEW) => TaskState::New,
        Some(BollardTaskState::ALLOCATED) => TaskState::Allocated,
        Some(BollardTaskState::PENDING) => TaskState::Pending,
        Some(BollardTaskState::ASSIGNED) => TaskState::Assigned,
        Some(BollardTaskState::ACCEPTED) => TaskState::Accepted,
        Some(BollardTaskState::PREPARING) => TaskState::Preparing,
        Some(BollardTaskState::READY) => TaskState::Ready,
        Some(BollardTaskState::STARTING) => TaskState::Starting,
        Some(BollardTaskState::RUNNING) => TaskState::Running,
        Some(BollardTaskState::COMPLETE) => TaskState::Complete,
        Some(BollardTaskState::SHUTDOWN) => TaskState::Shutdown,
        Some(BollardTaskState::FAILED) => TaskState::Failed,
        Some(BollardTaskState::REJECTED) => TaskState::Rejected,
        Some(BollardTaskState::REMOVE) => TaskState::Remove,
        Some(BollardTaskState::ORPHANED) => TaskState::Orphaned,
        None => TaskState::Unknown,
    }
}

fn update_state(s: Option<ServiceUpdateStatusStateEnum>) -> Option<UpdateState> {
    match s? {
        ServiceUpdateStatusStateEnum::UPDATING => Some(UpdateState::Updating),
        ServiceUpdateStatusStateEnum::PAUSED => Some(UpdateState::Paused),
        ServiceUpdateStatusStateEnum::COMPLETED => Some(UpdateState::Completed),
        ServiceUpdateStatusStateEnum::ROLLBACK_STARTED => Some(UpdateState::RollbackStarted),
        ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED => Some(UpdateState::RollbackPaused),
        ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED => Some(UpdateState::RollbackCompleted),
        ServiceUpdateStatusStateEnum::EMPTY => None,
    }
}

impl SwarmJanitor for Engine {
    fn remove_stopped_container<'a>(
        &'a self,
        stack: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move {
            let result = self
                .docker
                .remove_container(
                    container,
                    Some(RemoveContainerOptions {
                        force: false,
                        v: false,
                        link: false,
                    }),
                )
                .await;
            // 409: it started since it was listed, or its removal is in progress.
            match removal(result, &[409]) {
                Removal::Done => Ok(()),
                Removal::Busy(source) => Err(DockerError::RemoveConflict {
                    container: container.to_owned(),
                    stack: stack.to_owned(),
                    source,
                }),
                Removal::Failed(source) => Err(DockerError::RemoveContainer {
                    container: container.to_owned(),
                    stack: stack.to_owned(),
                    source,
                }),
            }
        })
    }

    fn remove_network<'a>(
        &'a self,
        stack: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.remove_stack_network(stack, network))
    }
}

impl Engine {
    async fn remove_stack_network(&self, stack: &str, network: &str) -> Result<(), DockerError> {
        // 403 "has active endpoints" (or 409): a task still holds it.
        match removal(self.docker.remove_network(network).await, &[403, 409]) {
            Removal::Done => Ok(()),
            Removal::Busy(source) => Err(DockerError::NetworkInUse {
                network: network.to_owned(),
                stack: stack.to_owned(),
                source,
            }),
            Removal::Failed(source) => Err(DockerError::RemoveNetwork {
                network: network.to_owned(),
                stack: stack.to_owned(),
                source,
            }),
        }
    }
}

/// How the engine answered the removal of a leftover: done (gone already counts: the engine or
/// a concurrent removal got there first), not yet (`busy` statuses: still in use), or failed.
enum Removal {
    Done,
    Busy(bollard::errors::Error),
    Failed(bollard::errors::Error),
}

fn removal(result: Result<(), bollard::errors::Error>, busy: &[u16]) -> Removal {
    match result {
        Ok(()) => Removal::Done,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Removal::Done,
        // A network the swarm manager removed between our listing and our removal is answered
        // with 500 `network <id> not found` (the manager's NotFound is not mapped to 404 in
        // docker 20.10): gone all the same. Seen when `stack rm`'s own clean-up won that race.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            ref message,
        }) if message.ends_with(" not found") => Removal::Done,
        Err(e @ bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if busy.contains(&status_code) =>
        {
            Removal::Busy(e)
        }
        Err(e) => Removal::Failed(e),
    }
}

impl SwarmView for Engine {
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeObs>, DockerError>> {
        Box::pin(self.list_nodes())
    }

    fn services<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ServiceObs>, DockerError>> {
        Box::pin(self.list_services(stack))
    }

    fn volumes<'a>(&'a self, stack: &'a str) -> BoxFuture<'a, Result<Vec<VolumeObs>, DockerError>> {
        Box::pin(async move {
            let resp = self
                .docker
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(stack_filter(stack)),
                }))
                .await
                .map_err(|source| DockerError::List {
                    what: "volumes",
                    stack: stack.to_owned(),
                    source,
                })?;
            let mut out: Vec<VolumeObs> = resp
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| VolumeObs {
                    name: v.name,
                    mountpoint: v.mountpoint,
                    labels: v.labels.into_iter().collect(),
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn containers_using<'a>(
        &'a self,
        volume: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        Box::pin(async move {
            self.list_containers(HashMap::from([(
                "volume".to_owned(),
                vec![volume.to_owned()],
            )]))
            .await
            .map_err(|source| DockerError::VolumeUsers {
                volume: volume.to_owned(),
                source,
            })
        })
    }

    fn stack_containers<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        Box::pin(async move {
            self.list_containers(stack_filter(stack))
                .await
                .map_err(|source| DockerError::List {
                    what: "containers",
                    stack: stack.to_owned(),
                    source,
                })
        })
    }

    fn networks<'a>(
        &'a self,
        stack: &'a str,
    ) -> BoxFuture<'a, Result<Vec<NetworkObs>, DockerError>> {
        Box::pin(async move {
            let list = self
                .docker
                .list_networks(Some(ListNetworksOptions {
                    filters: Some(stack_filter(stack)),
                }))
                .await
                .map_err(|source| DockerError::List {
                    what: "networks",
                    stack: stack.to_owned(),
                    source,
                })?;
            Ok(list
                .into_iter()
                .map(|n| NetworkObs {
                    id: n.id.unwrap_or_default(),
                    name: n.name.unwrap_or_default(),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(status_code: u16, message: &str) -> Result<(), bollard::errors::Error> {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        })
    }

    #[test]
    fn a_leftover_already_gone_counts_as_removed_however_the_engine_says_it() {
        let done = |r| matches!(removal(r, &[403, 409]), Removal::Done);
        assert!(done(Ok(())));
        assert!(done(server_error(404, "network n1 not found")));
        // docker 20.10's answer when swarm's own clean-up removed the network first.
        assert!(done(server_error(
            500,
            "network 439thiwksoonf4m7bkrqn9idh not found"
        )));
        assert!(matches!(
            removal(
                server_error(403, "network n1 has active endpoints"),
                &[403, 409]
            ),
            Removal::Busy(_)
        ));
        assert!(matches!(
            removal(
                server_error(500, "rpc error: not found anywhere, try again"),
                &[403]
            ),
            Removal::Failed(_)
        ));
        assert!(matches!(
            removal(server_error(500, "context deadline exceeded"), &[403]),
            Removal::Failed(_)
        ));
    }

    fn volume(name: &str) -> VolumeObs {
        VolumeObs {
            name: name.into(),
            mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn backupbot_false_excludes_the_volume_by_compose_or_full_name() {
        let excluded = ["cache".to_owned(), "s_tmp".to_owned()].into();
        let volumes = [volume("s_data"), volume("s_cache"), volume("s_tmp")];
        let kept: Vec<String> = backed_up_volumes("s", &excluded, &volumes)
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(kept, ["s_data"]);
    }

    #[test]
    fn a_removal_that_lost_the_race_counts_as_done() {
        let server = |status_code, message: &str| {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.to_owned(),
            })
        };
        assert!(matches!(
            removal(server(500, "network ydid not found"), &[403]),
            Removal::Done
        ));
        assert!(matches!(
            removal(server(404, "no such network"), &[403]),
            Removal::Done
        ));
        assert!(matches!(
            removal(server(403, "has active endpoints"), &[403]),
            Removal::Busy(_)
        ));
        assert!(matches!(
            removal(server(500, "driver failed"), &[403]),
            Removal::Failed(_)
        ));
    }

    #[test]
    fn sortable_time_pads_the_fraction() {
        assert_eq!(
            sortable_time("2026-11-22T19:14:22.8193Z"),
            "2026-11-22T19:14:22.819300000Z"
        );
        assert_eq!(
            sortable_time("2026-11-22T19:14:22Z"),
            "2026-11-22T19:14:22.000000000Z"
        );
        assert!(sortable_time("2026-11-22T19:14:22.9Z") > sortable_time("2026-11-22T19:14:22.10Z"));
    }

    #[test]
    fn endpoint_description_hides_user_info() {
        assert_eq!(
            endpoint_description(Some("ssh://user:pw@host:22")),
            "ssh://host:22"
        );
        assert_eq!(endpoint_description(None), "unix:///var/run/docker.sock");
        assert_eq!(
            endpoint_description(Some("unix:///run/user/1000/docker.sock")),
            "unix:///run/user/1000/docker.sock"
        );
    }
}
