//! The health gate (DESIGN.md, "Health gate"): a deployment proves itself or is rolled back.
//!
//! All must hold, polled until a deadline:
//! - every service of the stack converged: replicated services run as many tasks as desired
//!   (a task counts once swarm reports it `running`; swarm keeps a task with a healthcheck in
//!   `starting` until its first check passes, and a container still `starting`/`unhealthy`
//!   does not count either); one-shots (`replicated-job`, or `restart_policy: none`) count when
//!   their tasks are all `complete`; whatever the restart policy, a replica deficit made only of
//!   slots whose newest task completed with exit 0 counts as converged (a one-shot migration
//!   with `on-failure`), while a failed task never does;
//! - no service is in a swarm rollback or paused update state;
//! - the `<stack>_app` service carries the target's version label;
//! - for a stateful app, every task of a service that mounts a volume runs on the node holding
//!   the data, ci-warm's own node (`home`): a task elsewhere runs on an empty volume there, and
//!   every later snapshot or restore would act on the other copy (issue #18);
//! - every configured HTTP probe answers as expected (`probe.rs`: how a probe reaches the app).
//!
//! [`decide`] is a pure function over one observation and the probe results, so every rule is
//! unit-tested; [`HealthGate::wait`] is the thin polling loop around it.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use super::probe::{HttpProbe, Prepared, ProbeResult};
use crate::platform::deploy::Revision;
use crate::platform::docker::{
    ContainerHealth, NodeObs, RestartCondition, ServiceMode, ServiceObs, SwarmView, TaskObs,
    TaskState, UpdateState,
};

/// The gate's verdict. The reason names every failing check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy { reason: String },
}

impl Verdict {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Verdict::Healthy)
    }
}

/// What the deployment must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub stack: String,
    pub revision: Revision,
    /// Stateful apps: the node whose volumes ci-warm snapshots (its own). `None`: anywhere.
    pub home: Option<NodeObs>,
}

impl Expected {
    /// The service abra stamps the version label on.
    pub fn app_service(&self) -> String {
        format!("{}_app", self.stack)
    }
}

/// Update states a deployment does not get out of by itself: swarm gave up on the update
/// (paused) or is undoing it (rollback_*), which means the target is not what runs.
fn is_failed_update(s: UpdateState) -> bool {
    matches!(
        s,
        UpdateState::Paused
            | UpdateState::RollbackStarted
            | UpdateState::RollbackPaused
            | UpdateState::RollbackCompleted
    )
}

/// The gate's decision over one observation of the stack's services and the probe results.
pub fn decide(expected: &Expected, services: &[ServiceObs], probes: &[ProbeResult]) -> Verdict {
    decide_on_nodes(expected, services, &[], probes)
}

/// [`decide`], with the swarm's nodes for naming where a misplaced task landed.
pub fn decide_on_nodes(
    expected: &Expected,
    services: &[ServiceObs],
    nodes: &[NodeObs],
    probes: &[ProbeResult],
) -> Verdict {
    let mut failures: Vec<String> = misplaced(expected, services, nodes);
    if services.is_empty() {
        failures.push(format!("stack {} has no services", expected.stack));
    }
    for s in services {
        if s.update_state == Some(UpdateState::Updating) {
            failures.push(format!("service {} is still updating", s.name));
        }
        if let Some(state) = s.update_state.filter(|st| is_failed_update(*st)) {
            let mut f = format!("service {} is in update state {}", s.name, state.as_str());
            if let Some(m) = &s.update_message {
                f.push_str(&format!(" ({m})"));
            }
            failures.push(f);
        }
    }
    if !services.is_empty() {
        failures.extend(check_version_label(expected, services));
    }
    for s in services {
        if let Err(f) = converged(s) {
            failures.push(f);
        }
    }
    for p in probes {
        if let Some(f) = p.failure() {
            failures.push(f);
        }
    }
    if failures.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Unhealthy {
            reason: failures.join("; "),
        }
    }
}

/// Tasks of a stateful app's volume-mounting services that run (or are assigned to run) on a
/// node other than the one holding the data, each named with both nodes. Waiting does not fix
/// one: the task already started on an empty volume there.
pub fn misplaced(expected: &Expected, services: &[ServiceObs], nodes: &[NodeObs]) -> Vec<String> {
    let Some(home) = &expected.home else {
        return Vec::new();
    };
    let name_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| format!("node {id}"), |n| format!("node {n}"))
    };
    let mut out = Vec::new();
    for s in services.iter().filter(|s| !s.volume_mounts.is_empty()) {
        let mut away: Vec<&str> = s
            .tasks
            .iter()
            .filter(|t| t.desired_state == TaskState::Running && !t.state.is_terminal())
            .filter_map(|t| t.node_id.as_deref())
            .filter(|n| *n != home.id)
            .collect();
        away.sort_unstable();
        away.dedup();
        for node in away {
            out.push(format!(
                "service {} runs on {} but its data ({}) is on node {home}, ci-warm's node",
                s.name,
                name_of(node),
                s.volume_mounts.join(", ")
            ));
        }
    }
    out
}

/// A failure no amount of waiting fixes (swarm rolled back or paused the update, gave up
/// restarting a replica, or cannot place a task anywhere its constraints allow); the gate stops
/// polling on it instead of burning its whole timeout.
pub fn settled_failure(services: &[ServiceObs]) -> Option<String> {
    services
        .iter()
        .find_map(|s| {
            s.update_state
                .filter(|st| is_failed_update(*st))
                .map(|st| format!("service {} is in update state {}", s.name, st.as_str()))
                .or_else(|| given_up(s))
        })
        .or_else(|| services.iter().find_map(unplaceable))
}

/// A replicated service with a slot swarm has given up on: the slot's newest task failed or was
/// rejected and none of its tasks is wanted any more, because the restart policy allows no
/// further attempt (`condition: none`, or `max_attempts` spent). A fresh deployment (every
/// stateful upgrade deploys onto an undeployed stack) has no update state to settle in, so
/// without this a crashing or never-healthy release held the gate until its deadline.
///
/// Swarm retires a failed task and creates its replacement in one store transaction, so a slot
/// with nothing wanted is never a moment between the two.
fn given_up(s: &ServiceObs) -> Option<String> {
    if !matches!(s.mode, ServiceMode::Replicated { .. }) || converged(s).is_ok() {
        return None;
    }
    let mut slots: BTreeMap<i64, Vec<&TaskObs>> = BTreeMap::new();
    for t in &s.tasks {
        if let Some(slot) = t.slot {
            slots.entry(slot).or_default().push(t);
        }
    }
    slots.into_iter().find_map(|(slot, tasks)| {
        let retired = |t: &&TaskObs| {
            matches!(
                t.desired_state,
                TaskState::Shutdown | TaskState::Remove | TaskState::Complete
            )
        };
        if !tasks.iter().all(retired) {
            return None;
        }
        let newest = tasks
            .iter()
            .max_by(|a, b| a.created_at.cmp(&b.created_at))?;
        if !failed(newest) {
            return None;
        }
        let failed = tasks.iter().filter(|t| failed(t)).count();
        Some(format!(
            "service {}: swarm stopped restarting replica {slot} after {failed} failed task(s) \
             (its restart policy allows no more; last: {})",
            s.name,
            describe_task(newest)
        ))
    })
}

/// A task swarm cannot place because no node satisfies the service's placement constraints
/// (a release forcing a stateful app away from the node ci-warm pins it to, say): only a change
/// of the constraints or of the nodes' labels fixes that, never waiting.
fn unplaceable(s: &ServiceObs) -> Option<String> {
    s.tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running && t.state == TaskState::Pending)
        .find_map(|t| {
            let why = t.error.as_deref().or(t.message.as_deref())?;
            why.contains("scheduling constraints not satisfied")
                .then(|| format!("service {} cannot be placed: {why}", s.name))
        })
}

fn check_version_label(expected: &Expected, services: &[ServiceObs]) -> Option<String> {
    let name = expected.app_service();
    let key = expected.revision.label_key(&expected.stack);
    let want = expected.revision.value();
    let Some(app) = services.iter().find(|s| s.name == name) else {
        return Some(format!(
            "service {name} not found, so its version label {key} cannot be checked (expected {want})"
        ));
    };
    match app.labels.get(&key) {
        None => Some(format!(
            "version label {key} missing on service {name}, expected {want}"
        )),
        Some(got) if !expected.revision.matches_label(got) => {
            Some(format!("version label {key} = {got}, expected {want}"))
        }
        Some(_) => None,
    }
}

/// Whether a task counts as running: swarm says running and, where the container's health is
/// visible, the container is not still starting or unhealthy.
fn is_up(t: &TaskObs) -> bool {
    t.state == TaskState::Running
        && !matches!(
            t.health,
            Some(ContainerHealth::Starting | ContainerHealth::Unhealthy)
        )
}

fn describe_task(t: &TaskObs) -> String {
    let mut d = format!("task {}", t.state);
    match t.health {
        Some(ContainerHealth::Starting) => d.push_str(", health starting"),
        Some(ContainerHealth::Unhealthy) => d.push_str(", unhealthy"),
        _ => {}
    }
    if let Some(code) = t.exit_code.filter(|_| t.state.is_terminal()) {
        d.push_str(&format!(", exit {code}"));
    }
    if let Some(e) = &t.error {
        d.push_str(&format!(": {e}"));
    }
    d
}

/// The most recent failed task of a service, for saying why replicas are missing (a crash loop
/// shows as a fresh `starting` task with the crash in the history).
fn last_failure(tasks: &[TaskObs]) -> Option<&TaskObs> {
    tasks
        .iter()
        .filter(|t| failed(t))
        .max_by(|a, b| a.created_at.cmp(&b.created_at))
}

/// A task that failed: swarm says failed or rejected, or it says `complete` of a container that
/// ended `unhealthy` (swarm stopped it for failing its healthcheck and the app exited 0 on the
/// SIGTERM: observed with docker 20.10, task message `finished`, no error).
fn failed(t: &TaskObs) -> bool {
    matches!(t.state, TaskState::Failed | TaskState::Rejected)
        || (t.state == TaskState::Complete && t.health == Some(ContainerHealth::Unhealthy))
}

/// `Ok` when the service converged, else the failure naming it.
fn converged(s: &ServiceObs) -> Result<(), String> {
    match s.mode {
        ServiceMode::ReplicatedJob { total_completions } => {
            job_converged(s, Some(total_completions))
        }
        ServiceMode::GlobalJob => job_converged(s, None),
        ServiceMode::Replicated { replicas } if s.restart == RestartCondition::None => {
            one_shot_converged(s, replicas)
        }
        ServiceMode::Replicated { replicas } => {
            let current: Vec<&TaskObs> = s
                .tasks
                .iter()
                .filter(|t| t.desired_state == TaskState::Running)
                .collect();
            let up = current.iter().filter(|t| is_up(t)).count() as u64;
            if up == replicas {
                return Ok(());
            }
            // A deficit made only of tasks that finished with exit 0 is a one-shot that did its
            // work (a migration job with `on-failure`, say), whatever the restart policy; a
            // failed task is never part of it.
            let finished = newest_per_slot(s)
                .values()
                .filter(|t| completed_ok(t))
                .count() as u64;
            if up < replicas && up + finished >= replicas {
                return Ok(());
            }
            Err(format!(
                "service {}: {up}/{replicas} running{}",
                s.name,
                why_not_up(&current, &s.tasks)
            ))
        }
        ServiceMode::Global => {
            let current: Vec<&TaskObs> = s
                .tasks
                .iter()
                .filter(|t| t.desired_state == TaskState::Running)
                .collect();
            let up = current.iter().filter(|t| is_up(t)).count();
            if !current.is_empty() && up == current.len() {
                return Ok(());
            }
            Err(format!(
                "service {} (global): {up}/{} running{}",
                s.name,
                current.len(),
                why_not_up(&current, &s.tasks)
            ))
        }
    }
}

/// ` (task starting; last failure: ...)`, or empty when there is nothing to say.
fn why_not_up(current: &[&TaskObs], all: &[TaskObs]) -> String {
    let mut parts: Vec<String> = Vec::new();
    // The least advanced current task is the one holding convergence back.
    if let Some(t) = current.iter().filter(|t| !is_up(t)).min_by_key(|t| t.state) {
        parts.push(describe_task(t));
    } else if current.is_empty() {
        parts.push("no task scheduled".to_owned());
    }
    if let Some(f) = last_failure(all) {
        parts.push(format!("last failure: {}", describe_task(f)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// `restart_policy: none`: each slot's newest task must be complete with exit 0, or running.
/// Older tasks are history from earlier deployments and say nothing about this one.
fn one_shot_converged(s: &ServiceObs, replicas: u64) -> Result<(), String> {
    let newest = newest_per_slot(s);
    let done = newest
        .values()
        .filter(|t| is_up(t) || completed_ok(t))
        .count() as u64;
    if done >= replicas {
        return Ok(());
    }
    let stuck = newest
        .values()
        .find(|t| !(is_up(t) || t.state == TaskState::Complete));
    Err(format!(
        "service {} (one-shot): {done}/{replicas} complete or running{}",
        s.name,
        stuck.map_or(String::new(), |t| format!(" ({})", describe_task(t)))
    ))
}

/// Each slot's newest task (by creation time); older ones are history of earlier deployments.
fn newest_per_slot(s: &ServiceObs) -> BTreeMap<i64, &TaskObs> {
    let mut newest: BTreeMap<i64, &TaskObs> = BTreeMap::new();
    for t in &s.tasks {
        let slot = t.slot.unwrap_or(0);
        if newest
            .get(&slot)
            .is_none_or(|n| t.created_at > n.created_at)
        {
            newest.insert(slot, t);
        }
    }
    newest
}

/// A task that ran to completion with exit 0 (swarm reports an exit code only when nonzero
/// may have happened; `complete` already means the container exited 0).
fn completed_ok(t: &TaskObs) -> bool {
    t.state == TaskState::Complete && t.exit_code.unwrap_or(0) == 0 && !failed(t)
}

/// Job mode: the newest iteration's tasks must have completed `total` times (global jobs: every
/// task of the newest iteration complete).
fn job_converged(s: &ServiceObs, total: Option<u64>) -> Result<(), String> {
    let iteration = s.tasks.iter().filter_map(|t| t.job_iteration).max();
    let tasks: Vec<&TaskObs> = s
        .tasks
        .iter()
        .filter(|t| iteration.is_none() || t.job_iteration == iteration)
        .collect();
    let complete = tasks
        .iter()
        .filter(|t| t.state == TaskState::Complete)
        .count() as u64;
    let want = total.unwrap_or(tasks.len() as u64).max(1);
    if complete >= want {
        return Ok(());
    }
    let stuck = tasks
        .iter()
        .filter(|t| t.state != TaskState::Complete)
        .max_by(|a, b| a.created_at.cmp(&b.created_at));
    Err(format!(
        "service {} (job): {complete}/{want} complete{}",
        s.name,
        stuck.map_or(" (no task scheduled)".to_owned(), |t| format!(
            " ({})",
            describe_task(t)
        ))
    ))
}

#[derive(Debug, Error)]
pub enum HealthError {
    /// Docker could not be asked at the gate's deadline: the gate's outcome is *unknown*, which
    /// is not the deployment failing (the caller must not record the version as failed).
    #[error(
        "Docker was unreachable during the health gate of stack {stack}: no observation succeeded in the last {unreachable_for:?} before the gate's deadline ({timeout:?}), so whether the deployment is healthy is unknown: {error}"
    )]
    Unobservable {
        stack: String,
        timeout: Duration,
        unreachable_for: Duration,
        /// The last observation's error.
        error: String,
    },
}

/// How long one observation may run past the gate's deadline before it counts as unanswered.
const OBSERVE_GRACE: Duration = Duration::from_secs(5);

/// Timing of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateTiming {
    /// How long the deployment may take to prove itself.
    pub timeout: Duration,
    /// Pause between two polls.
    pub interval: Duration,
    /// Per-request timeout of one HTTP probe.
    pub probe_timeout: Duration,
}

impl Default for GateTiming {
    fn default() -> Self {
        GateTiming {
            timeout: Duration::from_secs(300),
            interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// The polling loop around [`decide`].
pub struct HealthGate<'a> {
    view: &'a dyn SwarmView,
    timing: GateTiming,
}

impl<'a> HealthGate<'a> {
    pub fn new(view: &'a dyn SwarmView, timing: GateTiming) -> Self {
        HealthGate { view, timing }
    }

    /// Polls until the deployment is healthy, a settled failure shows (swarm rolled back or
    /// paused an update), or the timeout passes; then returns the last verdict. Docker errors
    /// during polling are retried (the engine may be busy right after a deploy, or restarting).
    /// When the last look before the deadline could not observe the stack, the outcome is
    /// unknown and [`HealthError::Unobservable`] is returned, never an older verdict: a verdict
    /// seen before Docker went away says nothing about the deployment now. One observation is
    /// cut off at the deadline (plus a short grace), so a hung engine cannot stretch the gate.
    pub async fn wait(
        &self,
        expected: &Expected,
        probes: &[HttpProbe],
    ) -> Result<Verdict, HealthError> {
        let stack = &expected.stack;
        let prepared: Vec<Prepared> = probes
            .iter()
            .map(|p| Prepared::new(p, self.timing.probe_timeout))
            .collect();
        let started = Instant::now();
        let deadline = crate::platform::deadline::after_tokio(started, self.timing.timeout);
        let mut last: Option<Verdict> = None;
        // Since when, and why, the stack could not be observed; `None` after a good look.
        let mut unobservable: Option<(Instant, String)> = None;
        let mut round = 0u32;
        let mut healthy_rounds = 0u32;
        loop {
            round += 1;
            let cutoff = deadline.saturating_duration_since(Instant::now()) + OBSERVE_GRACE;
            let look = async {
                let services = self.view.services(stack).await?;
                // Node names only matter for a stateful app's placement check.
                let nodes = match &expected.home {
                    Some(_) => self.view.nodes().await?,
                    None => Vec::new(),
                };
                Ok::<_, crate::platform::docker::DockerError>((services, nodes))
            };
            let observed = match tokio::time::timeout(cutoff, look).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("Docker did not answer within {cutoff:?}")),
            };
            match observed {
                Ok((services, nodes)) => {
                    unobservable = None;
                    let mut results = Vec::with_capacity(prepared.len());
                    for p in &prepared {
                        results.push(p.run().await);
                    }
                    let verdict = decide_on_nodes(expected, &services, &nodes, &results);
                    match &verdict {
                        // Right after a deploy, swarm may not have marked the update as started
                        // yet while the old tasks still answer: one healthy look is not enough.
                        Verdict::Healthy if healthy_rounds == 0 => {
                            healthy_rounds = 1;
                            tracing::debug!(stack, round, "healthy once; confirming");
                        }
                        Verdict::Healthy => {
                            tracing::info!(stack, revision = %expected.revision, round,
                                elapsed = ?started.elapsed(), "health gate passed");
                            return Ok(verdict);
                        }
                        Verdict::Unhealthy { reason } => {
                            healthy_rounds = 0;
                            let settled = misplaced(expected, &services, &nodes)
                                .into_iter()
                                .next()
                                .or_else(|| settled_failure(&services));
                            if let Some(settled) = settled {
                                tracing::warn!(stack, %settled, %reason,
                                    "health gate failed: swarm will not converge on the target");
                                return Ok(verdict);
                            }
                            tracing::debug!(stack, round, %reason, "not healthy yet");
                        }
                    }
                    last = Some(verdict);
                }
                Err(e) => {
                    tracing::warn!(stack, round, error = %e, "health gate could not observe the stack");
                    // Two healthy looks in a row means two *consecutive* observations.
                    healthy_rounds = 0;
                    let since = unobservable.map_or_else(Instant::now, |(t, _)| t);
                    unobservable = Some((since, e));
                }
            }
            if Instant::now() >= deadline {
                if let Some((since, error)) = unobservable {
                    return Err(HealthError::Unobservable {
                        stack: stack.clone(),
                        timeout: self.timing.timeout,
                        unreachable_for: since.elapsed(),
                        error,
                    });
                }
                let verdict = last.unwrap_or_else(|| Verdict::Unhealthy {
                    reason: format!("stack {stack} could not be observed"),
                });
                if let Verdict::Unhealthy { reason } = &verdict {
                    tracing::warn!(stack, revision = %expected.revision, %reason,
                        timeout = ?self.timing.timeout, "health gate timed out");
                }
                return Ok(verdict);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(self.timing.interval.min(left)).await;
        }
    }
}

#[cfg(test)]
mod tests;
