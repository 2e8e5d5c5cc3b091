//! The convergence monitor of `app deploy` (contract §4.6): success once every service the
//! compose files declare converged; `deploy failed` when a task of this deploy failed, swarm
//! paused or rolled the update back, or (switch) a new task is still inside its healthcheck
//! start_period; `deploy timed out` when the window passed first.
//!
//! "Of this deploy" is judged without clocks: the task ids and each service's update start
//! are recorded before `docker stack deploy`, and only what is new afterwards counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use bollard::Docker;
use bollard::models::{
    HealthStatusEnum, Service, ServiceUpdateStatusStateEnum, TaskSpecRestartPolicyConditionEnum,
    TaskState,
};
use tokio::time::Instant;

use super::Ctx;
use super::engine;

/// What existed before the deploy.
#[derive(Debug, Default)]
pub struct Before {
    tasks: HashSet<String>,
    update_started: HashMap<String, Option<String>>,
    /// Each service's task template: when the deploy changed it, swarm replaces the tasks.
    templates: HashMap<String, serde_json::Value>,
}

fn template(s: &Service) -> anyhow::Result<serde_json::Value> {
    serde_json::to_value(s.spec.as_ref().and_then(|s| s.task_template.as_ref()))
        .context("task template")
}

pub async fn before(docker: &Docker, stack: &str) -> anyhow::Result<Before> {
    let mut b = Before::default();
    for s in engine::services(docker, stack).await? {
        let name = engine::service_name(&s);
        b.templates.insert(name.clone(), template(&s)?);
        b.update_started.insert(
            name.clone(),
            s.update_status.as_ref().and_then(|u| u.started_at.clone()),
        );
        for t in engine::tasks(docker, &name).await? {
            if let Some(id) = t.id {
                b.tasks.insert(id);
            }
        }
    }
    Ok(b)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Converged,
    /// Why, one line per failing task or service.
    Failed(Vec<String>),
    /// Each service's state when the window closed.
    TimedOut(Vec<String>),
}

enum Look {
    Done,
    Waiting(String),
    Failed(String),
}

fn one_shot(s: &Service) -> bool {
    let spec = s.spec.as_ref();
    let job = spec
        .and_then(|s| s.mode.as_ref())
        .is_some_and(|m| m.replicated_job.is_some() || m.global_job.is_some());
    let restart_none = spec
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.restart_policy.as_ref())
        .and_then(|r| r.condition)
        == Some(TaskSpecRestartPolicyConditionEnum::NONE);
    job || restart_none
}

fn replicas(s: &Service) -> usize {
    s.spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .map_or(1, |n| usize::try_from(n).unwrap_or(0))
}

/// One look at one service.
async fn look(
    ctx: &Ctx,
    docker: &Docker,
    before: &Before,
    name: &str,
    start_period: Option<Duration>,
) -> anyhow::Result<Look> {
    let s = match docker.inspect_service(name, None).await {
        Ok(s) => s,
        Err(e) => return Ok(Look::Waiting(format!("{name}: not there yet ({e})"))),
    };
    let mut updating = false;
    if let Some(u) = &s.update_status
        && before.update_started.get(name).cloned().flatten() != u.started_at
    {
        let state = u.state.unwrap_or(ServiceUpdateStatusStateEnum::EMPTY);
        match state {
            ServiceUpdateStatusStateEnum::UPDATING => updating = true,
            ServiceUpdateStatusStateEnum::PAUSED
            | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
            | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
            | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED => {
                return Ok(Look::Failed(format!(
                    "{name}: update {state}: {}",
                    u.message.clone().unwrap_or_default()
                )));
            }
            _ => {}
        }
    }
    let tasks = engine::tasks(docker, name).await?;
    // When the deploy changed the task template, swarm replaces the tasks: only new ones
    // count (the update may not even have started when we look). Otherwise (a label-only
    // change, or nothing) the running tasks are this deploy's.
    let rolled = before.templates.get(name) != Some(&template(&s)?);
    let mut running = 0;
    let mut complete = 0;
    for t in &tasks {
        let id = t.id.clone().unwrap_or_default();
        let is_new = !before.tasks.contains(&id);
        let status = t.status.clone().unwrap_or_default();
        let state = status.state;
        let task_name = format!("{name}.{}", t.slot.unwrap_or(0));
        let up_to_date = is_new || !rolled;
        if is_new {
            if matches!(state, Some(TaskState::FAILED | TaskState::REJECTED)) {
                return Ok(Look::Failed(format!(
                    "{task_name}: task {}: {}",
                    state.map(|s| s.to_string()).unwrap_or_default(),
                    status.err.unwrap_or_default()
                )));
            }
            if ctx.sw.start_period_fails
                && start_period.is_some_and(|p| !p.is_zero())
                && matches!(state, Some(TaskState::STARTING | TaskState::RUNNING))
                && let Some(cid) = status
                    .container_status
                    .as_ref()
                    .and_then(|c| c.container_id.clone())
                && in_start_period(docker, &cid).await?
            {
                return Ok(Look::Failed(format!(
                    "{task_name}: container health is starting: the new task is still inside its healthcheck start_period ({:?}) and its probes fail",
                    start_period.unwrap_or_default()
                )));
            }
        }
        if up_to_date && state == Some(TaskState::COMPLETE) {
            complete += 1;
        }
        if up_to_date
            && t.desired_state == Some(TaskState::RUNNING)
            && state == Some(TaskState::RUNNING)
        {
            running += 1;
        }
    }
    let want = replicas(&s);
    let done = if one_shot(&s) {
        complete >= want.max(1)
    } else {
        running >= want
    };
    if done && !updating {
        Ok(Look::Done)
    } else if one_shot(&s) {
        Ok(Look::Waiting(format!(
            "{name}: {complete}/{want} complete{}",
            if updating { ", updating" } else { "" }
        )))
    } else {
        Ok(Look::Waiting(format!(
            "{name}: {running}/{want} running{}",
            if updating { ", updating" } else { "" }
        )))
    }
}

/// Whether a container's health is `starting` after a failing probe: the app is not up yet
/// and the failures do not count because the start_period is not over.
async fn in_start_period(docker: &Docker, container: &str) -> anyhow::Result<bool> {
    let c = match docker.inspect_container(container, None).await {
        Ok(c) => c,
        Err(_) => return Ok(false),
    };
    let Some(health) = c.state.and_then(|s| s.health) else {
        return Ok(false);
    };
    Ok(health.status == Some(HealthStatusEnum::STARTING)
        && health
            .log
            .unwrap_or_default()
            .iter()
            .any(|r| r.exit_code.is_some_and(|c| c != 0)))
}

/// Watches `services` (full names with their healthcheck start_period) until they converge,
/// one fails, or `timeout` passes.
pub async fn watch(
    ctx: &Ctx,
    docker: &Docker,
    before: &Before,
    services: &BTreeMap<String, Option<Duration>>,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for (name, start_period) in services {
            match look(ctx, docker, before, name, *start_period)
                .await
                .with_context(|| format!("watching {name}"))?
            {
                Look::Done => {}
                Look::Waiting(w) => waiting.push(w),
                Look::Failed(f) => return Ok(Outcome::Failed(vec![f])),
            }
        }
        if waiting.is_empty() {
            return Ok(Outcome::Converged);
        }
        if Instant::now() >= deadline {
            return Ok(Outcome::TimedOut(waiting));
        }
        ctx.out.debug(&format!("waiting: {}", waiting.join("; ")));
        tokio::time::sleep(
            ctx.sw
                .monitor_interval
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
