use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::platform::docker::{BoxFuture, ContainerObs, DockerError, NetworkObs, VolumeObs};
use crate::upgrade::probe::{ProbeOutcome, StatusSet};

const STACK: &str = "demo";

const HOME_ID: &str = "node-home";

fn expected(v: &str) -> Expected {
    Expected {
        stack: STACK.into(),
        revision: Revision::Version(v.into()),
        home: None,
    }
}

fn task(state: TaskState, desired: TaskState, created: &str) -> TaskObs {
    TaskObs {
        id: format!("t-{created}"),
        slot: Some(1),
        desired_state: desired,
        state,
        exit_code: None,
        error: None,
        message: None,
        container_id: Some("c".into()),
        health: None,
        created_at: format!("2026-01-01T00:00:{created}.000000000Z"),
        job_iteration: None,
        node_id: Some(HOME_ID.into()),
    }
}

fn running(created: &str) -> TaskObs {
    task(TaskState::Running, TaskState::Running, created)
}

fn service(name: &str, tasks: Vec<TaskObs>) -> ServiceObs {
    ServiceObs {
        id: format!("id-{name}"),
        name: name.into(),
        labels: BTreeMap::new(),
        mode: ServiceMode::Replicated { replicas: 1 },
        restart: RestartCondition::Any,
        update_state: None,
        update_message: None,
        volume_mounts: Vec::new(),
        tasks,
    }
}

fn app(version: &str, tasks: Vec<TaskObs>) -> ServiceObs {
    let mut s = service("demo_app", tasks);
    s.labels
        .insert("coop-cloud.demo.version".into(), version.into());
    s
}

fn probe(url: &str, outcome: ProbeOutcome) -> ProbeResult {
    ProbeResult {
        probe: HttpProbe {
            body_contains: Some("ok".into()),
            ..HttpProbe::get(url)
        },
        outcome,
    }
}

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Healthy => panic!("expected unhealthy"),
        Verdict::Unhealthy { reason } => reason,
    }
}

#[test]
fn converged_stack_with_matching_label_and_probes_is_healthy() {
    let services = [
        app("1.1.0+1.0.0", vec![running("01")]),
        service("demo_db", vec![running("02")]),
    ];
    let probes = [probe("http://127.0.0.1:8080/health", ProbeOutcome::Ok)];
    assert_eq!(
        decide(&expected("1.1.0+1.0.0"), &services, &probes),
        Verdict::Healthy
    );
}

#[test]
fn empty_stack_is_unhealthy() {
    let r = reason(decide(&expected("1.0.0+1"), &[], &[]));
    assert_eq!(r, "stack demo has no services");
}

#[test]
fn starting_task_is_not_running() {
    let mut t = task(TaskState::Starting, TaskState::Running, "01");
    t.message = Some("starting".into());
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app("1.0.0+1", vec![t])],
        &[],
    ));
    assert_eq!(r, "service demo_app: 0/1 running (task starting)");
}

#[test]
fn running_task_whose_container_is_still_starting_does_not_count() {
    let mut t = running("01");
    t.health = Some(ContainerHealth::Starting);
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app("1.0.0+1", vec![t])],
        &[],
    ));
    assert_eq!(
        r,
        "service demo_app: 0/1 running (task running, health starting)"
    );
    let mut t = running("01");
    t.health = Some(ContainerHealth::Healthy);
    assert!(decide(&expected("1.0.0+1"), &[app("1.0.0+1", vec![t])], &[]).is_healthy());
}

#[test]
fn crash_loop_names_the_last_failure() {
    let mut failed = task(TaskState::Failed, TaskState::Shutdown, "01");
    failed.exit_code = Some(3);
    failed.error = Some("task: non-zero exit (3)".into());
    let retry = task(TaskState::Starting, TaskState::Running, "05");
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app("1.0.0+1", vec![failed, retry])],
        &[],
    ));
    assert_eq!(
        r,
        "service demo_app: 0/1 running (task starting; last failure: task failed, exit 3: task: non-zero exit (3))"
    );
}

#[test]
fn history_and_shutdown_tasks_do_not_count() {
    let old = task(TaskState::Running, TaskState::Shutdown, "01");
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app("1.0.0+1", vec![old])],
        &[],
    ));
    assert_eq!(r, "service demo_app: 0/1 running (no task scheduled)");

    let mut s = app("1.0.0+1", vec![running("01"), running("02")]);
    s.mode = ServiceMode::Replicated { replicas: 3 };
    let r = reason(decide(&expected("1.0.0+1"), &[s], &[]));
    assert_eq!(r, "service demo_app: 2/3 running");
}

#[test]
fn scaled_to_zero_is_converged() {
    let mut s = service("demo_worker", vec![]);
    s.mode = ServiceMode::Replicated { replicas: 0 };
    assert!(
        decide(
            &expected("1.0.0+1"),
            &[app("1.0.0+1", vec![running("01")]), s],
            &[]
        )
        .is_healthy()
    );
}

#[test]
fn global_service_needs_every_task_up() {
    let mut s = service(
        "demo_agent",
        vec![
            running("01"),
            task(TaskState::Pending, TaskState::Running, "02"),
        ],
    );
    s.mode = ServiceMode::Global;
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app("1.0.0+1", vec![running("01")]), s.clone()],
        &[],
    ));
    assert_eq!(r, "service demo_agent (global): 1/2 running (task pending)");
    s.tasks.pop();
    assert!(
        decide(
            &expected("1.0.0+1"),
            &[app("1.0.0+1", vec![running("01")]), s],
            &[]
        )
        .is_healthy()
    );
}

#[test]
fn replicated_job_counts_complete_tasks_of_the_newest_iteration() {
    let mut old = task(TaskState::Complete, TaskState::Complete, "01");
    old.job_iteration = Some(10);
    let mut new = task(TaskState::Running, TaskState::Complete, "05");
    new.job_iteration = Some(20);
    let mut job = service("demo_migrate", vec![old, new.clone()]);
    job.mode = ServiceMode::ReplicatedJob {
        total_completions: 1,
    };
    let app = app("1.0.0+1", vec![running("01")]);
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app.clone(), job.clone()],
        &[],
    ));
    assert_eq!(r, "service demo_migrate (job): 0/1 complete (task running)");

    new.state = TaskState::Complete;
    new.exit_code = Some(0);
    job.tasks[1] = new;
    assert!(decide(&expected("1.0.0+1"), &[app, job], &[]).is_healthy());
}

#[test]
fn failed_job_is_not_converged() {
    let mut t = task(TaskState::Failed, TaskState::Complete, "01");
    t.exit_code = Some(1);
    t.error = Some("task: non-zero exit (1)".into());
    let mut job = service("demo_migrate", vec![t]);
    job.mode = ServiceMode::ReplicatedJob {
        total_completions: 1,
    };
    let r = reason(decide(
        &expected("1.0.0+1"),
        &[app("1.0.0+1", vec![running("01")]), job],
        &[],
    ));
    assert_eq!(
        r,
        "service demo_migrate (job): 0/1 complete (task failed, exit 1: task: non-zero exit (1))"
    );
}

#[test]
fn restart_none_one_shot_counts_when_its_newest_task_completed() {
    // What the engine reports for `restart_policy: condition: none` after the command exited 0:
    // desired state shutdown, state complete.
    let mut done = task(TaskState::Complete, TaskState::Shutdown, "05");
    done.exit_code = Some(0);
    let mut old_failed = task(TaskState::Failed, TaskState::Shutdown, "01");
    old_failed.exit_code = Some(1);
    let mut once = service("demo_once", vec![old_failed.clone(), done]);
    once.restart = RestartCondition::None;
    let app = app("1.0.0+1", vec![running("01")]);
    assert!(decide(&expected("1.0.0+1"), &[app.clone(), once.clone()], &[]).is_healthy());

    // The newest attempt failed: not converged, and it says so.
    let mut newest_failed = old_failed;
    newest_failed.created_at = "2026-01-01T00:00:09.000000000Z".into();
    newest_failed.error = Some("task: non-zero exit (1)".into());
    once.tasks.push(newest_failed);
    let r = reason(decide(&expected("1.0.0+1"), &[app, once], &[]));
    assert_eq!(
        r,
        "service demo_once (one-shot): 0/1 complete or running (task failed, exit 1: task: non-zero exit (1))"
    );
}

#[test]
fn a_deficit_of_clean_exits_is_converged_whatever_the_restart_policy() {
    // An `on-failure` migration job that exited 0: swarm does not restart it, so the service
    // shows 0/1 running forever; the gate must not wait that out into a false rollback.
    for restart in [RestartCondition::OnFailure, RestartCondition::Any] {
        let mut done = task(TaskState::Complete, TaskState::Shutdown, "05");
        done.exit_code = Some(0);
        let mut old = task(TaskState::Failed, TaskState::Shutdown, "01");
        old.exit_code = Some(2);
        let mut migrate = service("demo_migrate", vec![old, done.clone()]);
        migrate.restart = restart;
        let app = app("1.0.0+1", vec![running("01")]);
        assert!(
            decide(&expected("1.0.0+1"), &[app.clone(), migrate.clone()], &[]).is_healthy(),
            "{restart:?}"
        );
        // Two replicas: one still running, one done.
        let mut two = migrate.clone();
        two.mode = ServiceMode::Replicated { replicas: 2 };
        let mut other = running("06");
        other.slot = Some(2);
        two.tasks.push(other);
        assert!(decide(&expected("1.0.0+1"), &[app.clone(), two], &[]).is_healthy());
        // The newest task failed: it still fails the gate, naming the failure.
        let mut failed = task(TaskState::Failed, TaskState::Shutdown, "09");
        failed.exit_code = Some(1);
        failed.error = Some("task: non-zero exit (1)".into());
        migrate.tasks.push(failed);
        let r = reason(decide(
            &expected("1.0.0+1"),
            &[app.clone(), migrate.clone()],
            &[],
        ));
        assert!(r.starts_with("service demo_migrate: 0/1 running"), "{r}");
        assert!(r.contains("exit 1"), "{r}");
        // A task retrying after a failure (starting) is not complete either.
        migrate
            .tasks
            .push(task(TaskState::Starting, TaskState::Running, "10"));
        assert!(!decide(&expected("1.0.0+1"), &[app, migrate], &[]).is_healthy());
    }
}

#[test]
fn rollback_and_paused_states_fail_and_are_settled() {
    for (state, name) in [
        (UpdateState::RollbackStarted, "rollback_started"),
        (UpdateState::RollbackCompleted, "rollback_completed"),
        (UpdateState::RollbackPaused, "rollback_paused"),
        (UpdateState::Paused, "paused"),
    ] {
        let mut s = app("1.1.0+1.0.0", vec![running("01")]);
        s.update_state = Some(state);
        let r = reason(decide(
            &expected("1.1.0+1.0.0"),
            std::slice::from_ref(&s),
            &[],
        ));
        assert_eq!(r, format!("service demo_app is in update state {name}"));
        assert_eq!(
            settled_failure(&[s]),
            Some(format!("service demo_app is in update state {name}"))
        );
    }
}

#[test]
fn swarm_rollback_names_state_message_and_the_reverted_label() {
    let mut s = app("1.0.0+1.0.0", vec![running("01")]);
    s.update_state = Some(UpdateState::RollbackCompleted);
    s.update_message = Some("rollback completed".into());
    let r = reason(decide(&expected("1.1.0+1.0.0"), &[s], &[]));
    assert_eq!(
        r,
        "service demo_app is in update state rollback_completed (rollback completed); \
         version label coop-cloud.demo.version = 1.0.0+1.0.0, expected 1.1.0+1.0.0"
    );
}

#[test]
fn a_replica_swarm_stopped_restarting_is_settled_and_one_still_restarting_is_not() {
    let failed = |created: &str, desired: TaskState| {
        let mut t = task(TaskState::Failed, desired, created);
        t.exit_code = Some(1);
        t.error = Some("task: non-zero exit (1)".into());
        t
    };
    // A fresh deployment (no update state) crashing: swarm retired the failed task and made its
    // replacement (wanted `ready` during the restart delay, then `running`): not settled.
    let s = app(
        "1.1.0+1.0.0",
        vec![
            failed("01", TaskState::Shutdown),
            task(TaskState::Ready, TaskState::Ready, "02"),
        ],
    );
    assert_eq!(settled_failure(&[s]), None);
    // The failed task not yet retired (swarm has not acted on it): not settled either.
    let s = app("1.1.0+1.0.0", vec![failed("01", TaskState::Running)]);
    assert_eq!(settled_failure(&[s]), None);
    // Attempts spent: every task retired, the newest failed. Settled, naming the replica.
    let s = app(
        "1.1.0+1.0.0",
        vec![
            failed("01", TaskState::Shutdown),
            failed("02", TaskState::Shutdown),
        ],
    );
    assert_eq!(
        settled_failure(std::slice::from_ref(&s)),
        Some(
            "service demo_app: swarm stopped restarting replica 1 after 2 failed task(s) \
             (its restart policy allows no more; last: task failed, exit 1: task: non-zero exit (1))"
                .into()
        )
    );
    assert!(!decide(&expected("1.1.0+1.0.0"), &[s], &[]).is_healthy());
    // History of an earlier deployment (a retired failure) beside a running replica: healthy,
    // nothing settled.
    let s = app(
        "1.1.0+1.0.0",
        vec![failed("01", TaskState::Shutdown), running("02")],
    );
    assert_eq!(settled_failure(std::slice::from_ref(&s)), None);
    assert!(decide(&expected("1.1.0+1.0.0"), &[s], &[]).is_healthy());
    // A replica swarm stopped for failing its healthcheck, whose app exited 0 on the SIGTERM:
    // `complete`, but its container ended unhealthy. Neither a finished one-shot (the gate
    // must not pass it, probes or not) nor worth waiting for.
    let mut killed = task(TaskState::Complete, TaskState::Shutdown, "01");
    killed.health = Some(ContainerHealth::Unhealthy);
    let s = app("1.1.0+1.0.0", vec![killed]);
    let r = reason(decide(
        &expected("1.1.0+1.0.0"),
        std::slice::from_ref(&s),
        &[],
    ));
    assert!(r.contains("0/1 running"), "{r}");
    assert_eq!(
        settled_failure(&[s]),
        Some(
            "service demo_app: swarm stopped restarting replica 1 after 1 failed task(s) \
             (its restart policy allows no more; last: task complete, unhealthy)"
                .into()
        )
    );
    // A one-shot that completed is converged, not given up.
    let mut s = service(
        "demo_migrate",
        vec![task(TaskState::Complete, TaskState::Shutdown, "01")],
    );
    s.restart = RestartCondition::None;
    assert_eq!(settled_failure(&[s]), None);
}

#[test]
fn completed_update_is_fine_and_an_update_in_progress_is_not_yet() {
    let mut s = app("1.0.0+1", vec![running("01")]);
    s.update_state = Some(UpdateState::Completed);
    assert!(decide(&expected("1.0.0+1"), std::slice::from_ref(&s), &[]).is_healthy());
    assert_eq!(settled_failure(&[s.clone()]), None);
    // The old task still answers while swarm replaces it: not healthy, but not settled either.
    s.update_state = Some(UpdateState::Updating);
    let r = reason(decide(&expected("1.0.0+1"), std::slice::from_ref(&s), &[]));
    assert_eq!(r, "service demo_app is still updating");
    assert_eq!(settled_failure(&[s]), None);
}

#[test]
fn wrong_or_missing_version_label_fails() {
    let r = reason(decide(
        &expected("1.1.0+1.0.0"),
        &[app("1.0.0+1.0.0", vec![running("01")])],
        &[],
    ));
    assert_eq!(
        r,
        "version label coop-cloud.demo.version = 1.0.0+1.0.0, expected 1.1.0+1.0.0"
    );

    let r = reason(decide(
        &expected("1.1.0+1.0.0"),
        &[service("demo_app", vec![running("01")])],
        &[],
    ));
    assert_eq!(
        r,
        "version label coop-cloud.demo.version missing on service demo_app, expected 1.1.0+1.0.0"
    );

    let r = reason(decide(
        &expected("1.1.0+1.0.0"),
        &[service("demo_web", vec![running("01")])],
        &[],
    ));
    assert!(r.starts_with("service demo_app not found"), "{r}");
}

#[test]
fn chaos_revision_checks_the_chaos_label() {
    let exp = Expected {
        stack: STACK.into(),
        revision: Revision::Chaos("abcdef0123456789".into()),
        home: None,
    };
    let mut s = service("demo_app", vec![running("01")]);
    s.labels
        .insert("coop-cloud.demo.version".into(), "1.0.0+1".into());
    let r = reason(decide(&exp, std::slice::from_ref(&s), &[]));
    assert_eq!(
        r,
        "version label coop-cloud.demo.chaos-version missing on service demo_app, expected abcdef0123456789"
    );
    s.labels
        .insert("coop-cloud.demo.chaos-version".into(), "abcdef01+U".into());
    assert!(decide(&exp, &[s], &[]).is_healthy());
}

#[test]
fn probe_failures_name_the_probe() {
    let services = [app("1.0.0+1", vec![running("01")])];
    let url = "http://127.0.0.1:8080/health";
    let r = reason(decide(
        &expected("1.0.0+1"),
        &services,
        &[probe(url, ProbeOutcome::WrongStatus { got: 503 })],
    ));
    assert_eq!(
        r,
        "probe http://127.0.0.1:8080/health: status 503, expected 200"
    );

    let r = reason(decide(
        &expected("1.0.0+1"),
        &services,
        &[probe(url, ProbeOutcome::BodyMismatch { status: 200 })],
    ));
    assert_eq!(
        r,
        "probe http://127.0.0.1:8080/health: status 200 but the body does not contain \"ok\""
    );

    let mut p = probe(url, ProbeOutcome::Failed("connection refused".into()));
    p.probe.host = Some("demo.example.org".into());
    let r = reason(decide(&expected("1.0.0+1"), &services, &[p]));
    assert_eq!(
        r,
        "probe http://127.0.0.1:8080/health (Host: demo.example.org): connection refused"
    );
}

#[test]
fn every_failing_check_is_named() {
    let mut s = app(
        "1.0.0+1",
        vec![task(TaskState::Starting, TaskState::Running, "01")],
    );
    s.update_state = Some(UpdateState::Paused);
    let r = reason(decide(
        &expected("2.0.0+1"),
        &[s],
        &[probe("http://x/", ProbeOutcome::WrongStatus { got: 502 })],
    ));
    let parts: Vec<&str> = r.split("; ").collect();
    assert_eq!(
        parts,
        [
            "service demo_app is in update state paused",
            "version label coop-cloud.demo.version = 1.0.0+1, expected 2.0.0+1",
            "service demo_app: 0/1 running (task starting)",
            "probe http://x/: status 502, expected 200",
        ]
    );
}

/// A canned view that plays back a sequence of observations (the last one repeats).
struct Script {
    rounds: Mutex<Vec<Result<Vec<ServiceObs>, ()>>>,
    calls: AtomicUsize,
}

impl Script {
    fn new(rounds: Vec<Result<Vec<ServiceObs>, ()>>) -> Self {
        Script {
            rounds: Mutex::new(rounds),
            calls: AtomicUsize::new(0),
        }
    }
}

impl SwarmView for Script {
    fn services<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<ServiceObs>, DockerError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let rounds = self.rounds.lock().unwrap();
        let r = rounds[n.min(rounds.len() - 1)].clone();
        Box::pin(async move {
            r.map_err(|()| DockerError::List {
                what: "services",
                stack: STACK.into(),
                source: bollard::errors::Error::RequestTimeoutError,
            })
        })
    }
    fn volumes<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<VolumeObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn containers_using<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn stack_containers<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn networks<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<NetworkObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
}

fn timing(timeout_ms: u64) -> GateTiming {
    GateTiming {
        timeout: Duration::from_millis(timeout_ms),
        interval: Duration::from_millis(5),
        probe_timeout: Duration::from_millis(500),
    }
}

// Paused clock: the deadline is virtual time, so a slow machine cannot make it expire early.
#[tokio::test(start_paused = true)]
async fn wait_polls_through_errors_until_healthy() {
    let starting = app(
        "1.0.0+1",
        vec![task(TaskState::Starting, TaskState::Running, "01")],
    );
    let up = app("1.0.0+1", vec![running("01")]);
    let view = Script::new(vec![Err(()), Ok(vec![starting]), Ok(vec![up])]);
    let v = HealthGate::new(&view, timing(5_000))
        .wait(&expected("1.0.0+1"), &[])
        .await
        .unwrap();
    assert_eq!(v, Verdict::Healthy);
    // The last observation repeats: healthy twice in a row passes the gate.
    assert_eq!(view.calls.load(Ordering::SeqCst), 4);
}

// Paused clock: the deadline is virtual time, so a slow machine cannot make it expire early.
#[tokio::test(start_paused = true)]
async fn wait_times_out_with_the_last_reason() {
    let starting = app(
        "1.0.0+1",
        vec![task(TaskState::Starting, TaskState::Running, "01")],
    );
    let view = Script::new(vec![Ok(vec![starting])]);
    let v = HealthGate::new(&view, timing(50))
        .wait(&expected("1.0.0+1"), &[])
        .await
        .unwrap();
    assert_eq!(
        v,
        Verdict::Unhealthy {
            reason: "service demo_app: 0/1 running (task starting)".into()
        }
    );
    // 50 ms of virtual time at a 5 ms interval: the gate looked again and again, then gave up.
    assert!(view.calls.load(Ordering::SeqCst) >= 5);
}

// Paused clock: the deadline is virtual time, so a slow machine cannot make it expire early.
#[tokio::test(start_paused = true)]
async fn wait_stops_early_on_a_swarm_rollback() {
    let mut s = app("1.0.0+1", vec![running("01")]);
    s.update_state = Some(UpdateState::RollbackStarted);
    let view = Script::new(vec![Ok(vec![s])]);
    let v = HealthGate::new(&view, timing(10_000))
        .wait(&expected("2.0.0+1"), &[])
        .await
        .unwrap();
    assert!(!v.is_healthy());
    // One look and no second: the gate did not wait out its deadline (counted, not timed).
    assert_eq!(view.calls.load(Ordering::SeqCst), 1);
}

// Paused clock: the deadline is virtual time, so a slow machine cannot make it expire early.
#[tokio::test(start_paused = true)]
async fn wait_errors_when_the_stack_is_never_observable() {
    let view = Script::new(vec![Err(())]);
    let e = HealthGate::new(&view, timing(30))
        .wait(&expected("1.0.0+1"), &[])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Docker was unreachable during the health gate of stack demo"),
        "{e}"
    );
}

#[tokio::test]
async fn docker_unreachable_at_the_deadline_is_unknown_not_the_last_reason() {
    // One look while the new task was still starting, then Docker goes away for good: the
    // "0/1 running" of that early look says nothing about the deployment at the deadline.
    let starting = app(
        "1.0.0+1",
        vec![task(TaskState::Starting, TaskState::Running, "01")],
    );
    let view = Script::new(vec![Ok(vec![starting]), Err(())]);
    let r = HealthGate::new(&view, timing(50))
        .wait(&expected("1.0.0+1"), &[])
        .await;
    match r {
        Err(e @ HealthError::Unobservable { .. }) => {
            let text = e.to_string();
            assert!(text.contains("Docker was unreachable"), "{text}");
            assert!(!text.contains("0/1 running"), "{text}");
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    assert!(view.calls.load(Ordering::SeqCst) >= 2);
}

/// A one-request-at-a-time HTTP server answering every request with `status` and `body`, and
/// recording the request heads it saw.
async fn serve(status: u16, body: &'static str) -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            seen2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    (format!("http://{addr}/health"), seen)
}

fn http_probe(url: &str, status: u16, body: Option<&str>, host: Option<&str>) -> HttpProbe {
    HttpProbe {
        status: StatusSet::exact(status),
        body_contains: body.map(str::to_owned),
        host: host.map(str::to_owned),
        ..HttpProbe::get(url)
    }
}

async fn run_probe(probe: &HttpProbe) -> ProbeResult {
    Prepared::new(probe, Duration::from_secs(2)).run().await
}

#[tokio::test]
async fn probes_check_status_body_and_send_the_host_header() {
    let (url, seen) = serve(200, "status: ok").await;
    let r = run_probe(&http_probe(&url, 200, Some("ok"), Some("demo.example.org"))).await;
    assert_eq!(r.outcome, ProbeOutcome::Ok);
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("host: demo.example.org\r\n"), "{head}");

    let r = run_probe(&http_probe(&url, 200, Some("healthy"), None)).await;
    assert_eq!(r.outcome, ProbeOutcome::BodyMismatch { status: 200 });

    let (url, _) = serve(503, "down").await;
    let r = run_probe(&http_probe(&url, 200, None, None)).await;
    assert_eq!(r.outcome, ProbeOutcome::WrongStatus { got: 503 });
}

#[tokio::test]
async fn unreachable_probe_says_why() {
    // Bound but never listening: the port stays ours (nobody else can start answering on it)
    // and every connection to it is refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let r = run_probe(&http_probe(
        &format!("http://127.0.0.1:{port}/"),
        200,
        None,
        None,
    ))
    .await;
    let ProbeOutcome::Failed(why) = r.outcome else {
        panic!("expected a failure, got {:?}", r.outcome);
    };
    assert!(why.to_lowercase().contains("connect"), "{why}");
}

#[tokio::test]
async fn an_enormous_timeout_does_not_panic_the_gate() {
    let up = app("1.0.0+1", vec![running("01")]);
    let view = Script::new(vec![Ok(vec![up])]);
    let timing = GateTiming {
        timeout: Duration::from_secs(u64::MAX),
        ..timing(0)
    };
    let v = HealthGate::new(&view, timing)
        .wait(&expected("1.0.0+1"), &[])
        .await
        .unwrap();
    assert_eq!(v, Verdict::Healthy);
}

#[test]
fn probe_failure_never_shows_url_credentials() {
    let services = [app("1.0.0+1", vec![running("01")])];
    let url = "https://bob:hunter2@127.0.0.1:8443/health";
    for outcome in [
        ProbeOutcome::WrongStatus { got: 503 },
        ProbeOutcome::Failed(format!("error sending request for url ({url})")),
    ] {
        let r = reason(decide(
            &expected("1.0.0+1"),
            &services,
            &[probe(url, outcome)],
        ));
        assert!(!r.contains("hunter2") && !r.contains("bob"), "{r}");
        assert!(r.contains("https://***@127.0.0.1:8443/health"), "{r}");
    }
}

fn home() -> NodeObs {
    NodeObs {
        id: HOME_ID.into(),
        hostname: "ci1".into(),
    }
}

fn stateful(v: &str) -> Expected {
    Expected {
        home: Some(home()),
        ..expected(v)
    }
}

/// The app service mounting the stack's data volume, its one task on `node`.
fn app_on(node: &str) -> ServiceObs {
    let mut t = running("01");
    t.node_id = Some(node.into());
    let mut s = app("1.0.0", vec![t]);
    s.volume_mounts = vec!["demo_data".into()];
    s
}

#[test]
fn a_stateful_task_on_another_node_fails_naming_the_service_and_both_nodes() {
    let nodes = [
        home(),
        NodeObs {
            id: "node-2".into(),
            hostname: "ci2".into(),
        },
    ];
    let v = decide_on_nodes(&stateful("1.0.0"), &[app_on("node-2")], &nodes, &[]);
    let Verdict::Unhealthy { reason } = v else {
        panic!("a task away from the data must fail the gate");
    };
    assert_eq!(
        reason,
        "service demo_app runs on node ci2 (node-2) but its data (demo_data) is on node ci1 (node-home), ci-warm's node"
    );
    assert_eq!(
        misplaced(&stateful("1.0.0"), &[app_on("node-2")], &[]),
        [
            "service demo_app runs on node node-2 but its data (demo_data) is on node ci1 (node-home), ci-warm's node"
        ],
        "without node names the id is named"
    );
}

#[test]
fn placement_is_only_judged_for_stateful_apps_volume_services_and_live_tasks() {
    assert!(decide(&stateful("1.0.0"), &[app_on(HOME_ID)], &[]).is_healthy());
    assert!(
        decide(&expected("1.0.0"), &[app_on("node-2")], &[]).is_healthy(),
        "a stateless app goes where swarm puts it"
    );
    let mut no_volume = app_on("node-2");
    no_volume.volume_mounts.clear();
    assert!(decide(&stateful("1.0.0"), &[no_volume], &[]).is_healthy());
    // An old task being shut down elsewhere (a rolling update moving home) is history.
    let mut s = app_on(HOME_ID);
    let mut old = task(TaskState::Running, TaskState::Shutdown, "00");
    old.node_id = Some("node-2".into());
    s.tasks.push(old);
    assert!(misplaced(&stateful("1.0.0"), &[s], &[]).is_empty());
}

#[tokio::test]
async fn the_gate_stops_at_once_on_a_misplaced_task() {
    let view = Script::new(vec![Ok(vec![app_on("node-2")])]);
    let started = std::time::Instant::now();
    let v = HealthGate::new(&view, timing(10_000))
        .wait(&stateful("1.0.0"), &[])
        .await
        .unwrap();
    assert!(!v.is_healthy());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "settled, not timed out"
    );
}

#[test]
fn a_task_no_node_can_take_is_a_settled_failure() {
    let mut t = task(TaskState::Pending, TaskState::Running, "01");
    t.error = Some("no suitable node (scheduling constraints not satisfied on 2 nodes)".into());
    let s = app("1.0.0", vec![t.clone()]);
    assert_eq!(
        settled_failure(std::slice::from_ref(&s)).as_deref(),
        Some(
            "service demo_app cannot be placed: no suitable node (scheduling constraints not satisfied on 2 nodes)"
        )
    );
    // Other reasons to wait (a busy host port, resources) may clear up: not settled.
    t.error = Some("no suitable node (host-mode port already in use on 1 node)".into());
    assert_eq!(settled_failure(&[app("1.0.0", vec![t])]), None);
}
