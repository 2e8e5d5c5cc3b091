//! The quick lane: test a ref by upgrading the canonical's known-good data to it.
//!
//! ```text
//! lock -> restore known-good (undeploy, verify, restore) -> deploy the canonical version -> gate
//!      -> deploy the ref (chaos) -> gate -> run the test command
//!      -> pass: undeploy, keep the volumes (the known-good is untouched)
//!      -> any failure: undeploy, restore the known-good
//! ```
//!
//! A quick run never promotes and never changes the known-good snapshot or the registry. The
//! volumes it leaves behind after a pass are marked as drifted (see `canonical::DRIFT_FILE`),
//! so the next quick run or canonical upgrade restores the known-good first.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::canonical::results::{self, Mode, RunResult, Verdict};
use crate::canonical::{self, Drift};
use crate::config::names;
use crate::config::spec;
use crate::config::{self, Config, Deployer as DeployerConfig};
use crate::live::LivePlatform;
use crate::platform::child;
use crate::platform::deploy::Revision;
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::alert::{self, Kind, NewAlert};
use crate::upgrade::recipe::{RecipeSource, Rev};
use crate::upgrade::reconcile::{Health, Platform};
use crate::upgrade::state::AppState;

#[derive(Debug, Clone)]
pub struct Request {
    pub recipe: String,
    pub r#ref: String,
    pub run: Option<String>,
    /// The test command (argv; never run through a shell).
    pub command: Vec<String>,
    /// Wait for the canonical's lock instead of exiting busy.
    pub wait: bool,
    /// The test command is stopped after this long and the run fails (None: no limit).
    pub timeout: Option<std::time::Duration>,
}

/// What `quick` prints: the recorded result, where it is, and the exit code.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub result: RunResult,
    pub result_file: PathBuf,
    /// Whether the volumes hold the known-good again (always after a failure that recovered).
    pub restored: bool,
    pub exit: u8,
}

fn no_canonical(msg: String) -> anyhow::Error {
    Exit::new(exit::NO_CANONICAL, msg).into()
}

/// Runs the quick lane. Errors before the lock is taken (usage, no canonical, busy) touch
/// nothing and record nothing; everything after is recorded as a result file.
pub fn quick(config: &Config, req: &Request) -> anyhow::Result<Report> {
    names::check("recipe", &req.recipe).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let rev = Rev::parse(&req.r#ref).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    if let Some(r) = &req.run
        && (r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(Exit::new(
            exit::USAGE,
            format!("--run {r:?} must be 1 to 200 printable characters"),
        )
        .into());
    }
    if req.command.first().is_none_or(|c| c.is_empty()) {
        return Err(Exit::new(exit::USAGE, "give the test command after `--`").into());
    }
    if !config.canonicals.contains_key(&req.recipe) {
        return Err(no_canonical(format!(
            "recipe {} has no canonical (it is not enrolled); run it in the cold lane",
            req.recipe
        )));
    }
    let app = config::canonical_app_name(&req.recipe);
    let mut plan = spec::plan(config, &app).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let app_dir = config.state_dir.join(&app);
    let _lock = lock::acquire(&app_dir, &app, req.wait)?;
    let state = AppState::load(&app_dir)?;
    let Some(version) = state.last_good.clone() else {
        return Err(no_canonical(format!(
            "canonical {app} has not been deployed yet (no last good version); run {} in the cold lane",
            req.recipe
        )));
    };
    if !canonical::has_known_good(&app_dir) {
        return Err(no_canonical(format!(
            "canonical {app} has no known-good snapshot yet; run {} in the cold lane (or `ci-warm canonical rewarm {}`)",
            req.recipe, req.recipe
        )));
    }
    if let Some(intent) = &state.intent {
        anyhow::bail!(
            "canonical {app} has an unfinished {:?} step towards {}; run `ci-warm reconcile {app}` first",
            intent.step,
            intent.to
        );
    }
    plan.spec.pinned = Some(version.clone());
    let stack_deployer = matches!(config.deployer, DeployerConfig::Stack);
    let env = TestEnv {
        app: app.clone(),
        recipe: req.recipe.clone(),
        domain: plan.domain.clone(),
        stack: plan.stack.clone(),
        version: version.to_string(),
    };
    let mut platform = LivePlatform::new(config, plan)?;

    let started_at = results::timestamp(SystemTime::now());
    let clock = Instant::now();
    let mut run = Run {
        platform: &mut platform,
        req,
        app_dir: &app_dir,
        commit: None,
        exit_code: None,
    };
    let outcome = run.steps(&rev, &version, stack_deployer, &env);
    let commit = run.commit.clone();
    let exit_code = run.exit_code;

    let (verdict, failed_step, reason, restored, code) = match outcome {
        Ok(()) => {
            // Only an undeploy that worked finishes the run; otherwise the drift stays
            // unfinished and the next reconcile restores the known-good.
            let finished = platform.undeploy().and_then(|()| {
                set_deployed(&app_dir, None)?;
                canonical::finish_drift(&app_dir)
            });
            match finished {
                Ok(()) => (Verdict::Pass, None, None, false, exit::OK),
                Err(e) => (
                    Verdict::Pass,
                    Some("undeploy".to_owned()),
                    Some(format!(
                        "the test passed, but undeploying (or recording that) failed: {e:#}"
                    )),
                    false,
                    exit::FAILURE,
                ),
            }
        }
        Err((step, reason)) => {
            tracing::warn!(app = %app, step, "quick run failed: {reason}");
            let failed = Some(step.to_owned());
            if matches!(step, "fetch" | "resolve-ref") {
                // Nothing was touched yet.
                (Verdict::Fail, failed, Some(reason), false, exit::FAILURE)
            } else {
                match canonical::restore_known_good(&mut platform)
                    .and_then(|()| set_deployed(&app_dir, None))
                {
                    Ok(()) => (Verdict::Fail, failed, Some(reason), true, exit::FAILURE),
                    Err(e) => {
                        let detail = format!("{e:#}");
                        let corrupt = e
                            .downcast_ref::<crate::upgrade::reconcile::SnapshotCorrupt>()
                            .is_some();
                        alert_not_restored(
                            config,
                            &app,
                            &req.recipe,
                            (&version.to_string(), &req.r#ref),
                            &reason,
                            (&detail, corrupt),
                        );
                        // The drift stays unfinished, so reconciles retry the restore; this
                        // alert stands for the first of those failures.
                        canonical::drift_alerted(&app_dir);
                        let reason = format!("{reason}; restoring the known-good FAILED: {detail}");
                        (
                            Verdict::Fail,
                            failed,
                            Some(reason),
                            false,
                            exit::NOT_RECOVERED,
                        )
                    }
                }
            }
        }
    };
    let result = RunResult {
        schema: results::RESULT_SCHEMA,
        recipe: req.recipe.clone(),
        mode: Mode::Quick,
        result: verdict,
        version: Some(version.to_string()),
        commit,
        r#ref: Some(req.r#ref.clone()),
        run: req.run.clone(),
        started_at,
        finished_at: results::timestamp(SystemTime::now()),
        duration_secs: clock.elapsed().as_secs_f64(),
        log: None,
        failed_step,
        reason,
        exit_code,
        promotion: None,
    };
    let result_file = results::record(&config.state_dir, &result)?;
    Ok(Report {
        result,
        result_file,
        restored,
        exit: code,
    })
}

/// What the test command learns about the deployment it tests, through its environment.
struct TestEnv {
    app: String,
    recipe: String,
    domain: String,
    stack: String,
    version: String,
}

struct Run<'a> {
    platform: &'a mut LivePlatform,
    req: &'a Request,
    app_dir: &'a std::path::Path,
    commit: Option<String>,
    exit_code: Option<i32>,
}

type StepError = (&'static str, String);

fn at<T>(step: &'static str, r: anyhow::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| (step, format!("{e:#}")))
}

fn gated(step: &'static str, h: anyhow::Result<Health>) -> Result<(), StepError> {
    match at(step, h)? {
        Health::Healthy => Ok(()),
        Health::Unhealthy(why) => Err((step, format!("health gate failed: {why}"))),
    }
}

impl Run<'_> {
    fn steps(
        &mut self,
        rev: &Rev,
        version: &crate::upgrade::version::Version,
        stack_deployer: bool,
        env: &TestEnv,
    ) -> Result<(), StepError> {
        at("fetch", self.platform.recipe().fetch().map_err(Into::into))?;
        let commit = at(
            "resolve-ref",
            self.platform.recipe().resolve(rev).map_err(Into::into),
        )?;
        self.commit = Some(commit.clone());
        // Marked unfinished before anything is touched, so the canonical's next reconcile
        // restores the known-good if this process dies mid-run (see canonical::reconcile).
        let drift = Drift {
            at: canonical::now(),
            r#ref: self.req.r#ref.clone(),
            run: self.req.run.clone(),
            finished: false,
            alerted: false,
        };
        at("restore", canonical::mark_drift(self.app_dir, &drift))?;
        at("restore", canonical::restore_known_good(self.platform))?;
        at("restore", canonical::mark_drift(self.app_dir, &drift))?;
        at("deploy-canonical", self.platform.deploy(version))?;
        at(
            "deploy-canonical",
            set_deployed(self.app_dir, Some(version.to_string())),
        )?;
        gated("deploy-canonical", self.platform.health(version))?;

        at(
            "deploy-ref",
            self.platform.deploy_revision(
                &Rev::Commit(commit.clone()),
                Revision::Chaos(commit.clone()),
            ),
        )?;
        at(
            "deploy-ref",
            set_deployed(self.app_dir, Some(self.req.r#ref.clone())),
        )?;
        let expected = if stack_deployer {
            // The stack backend stamps no chaos label: the deployment carries the version label
            // of the checked-out compose file (see deploy/stack.rs).
            let label =
                crate::upgrade::compose_version::read_checkout(&self.platform.checkout_dir());
            at("deploy-ref", label.map_err(Into::into)).map(|v| Revision::Version(v.to_string()))?
        } else {
            Revision::Chaos(commit.clone())
        };
        gated("deploy-ref", self.platform.gate(expected))?;

        match at("test", self.run_test(&commit, env))? {
            child::Finished::Exited(status) => {
                self.exit_code = status.code();
                if status.success() {
                    Ok(())
                } else {
                    Err(("test", format!("the test command exited with {status}")))
                }
            }
            child::Finished::TimedOut(limit) => Err((
                "test",
                format!(
                    "the test command did not finish within {}s and was stopped",
                    limit.as_secs()
                ),
            )),
        }
    }

    /// Runs the test command (argv, no shell) with the deployment's facts in its environment;
    /// its stdout goes to our stderr so `--json` output stays parseable.
    fn run_test(&self, commit: &str, env: &TestEnv) -> anyhow::Result<child::Finished> {
        let argv = &self.req.command;
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr for the test command")?;
        tracing::info!(app = %env.app, command = ?argv, timeout = ?self.req.timeout, "running the test command");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .env("CI_WARM_MODE", "quick")
            .env("CI_WARM_APP", &env.app)
            .env("CI_WARM_RECIPE", &env.recipe)
            .env("CI_WARM_DOMAIN", &env.domain)
            .env("CI_WARM_STACK", &env.stack)
            .env("CI_WARM_VERSION", &env.version)
            .env("CI_WARM_REF", &self.req.r#ref)
            .env("CI_WARM_COMMIT", commit)
            .env("CI_WARM_RUN", self.req.run.as_deref().unwrap_or(""));
        child::run(&mut cmd, self.req.timeout, "the test command")
    }
}

fn set_deployed(app_dir: &std::path::Path, deployed: Option<String>) -> anyhow::Result<()> {
    let mut state = AppState::load(app_dir)?;
    state.deployed = deployed;
    state
        .save(app_dir)
        .with_context(|| format!("saving {}", app_dir.display()))
}

fn alert_not_restored(
    config: &Config,
    app: &str,
    recipe: &str,
    (version, attempted): (&str, &str),
    reason: &str,
    (detail, corrupt): (&str, bool),
) {
    let kind = if corrupt {
        Kind::SnapshotCorrupt
    } else {
        Kind::RollbackFailed
    };
    let new = NewAlert {
        app: app.to_owned(),
        recipe: Some(recipe.to_owned()),
        message: format!(
            "{app}: a quick run failed ({reason}) and restoring the known-good failed: {detail}"
        ),
        last_good: Some(version.to_owned()),
        attempted: Some(attempted.to_owned()),
        recovered: false,
        error: vec![reason.to_owned(), detail.to_owned()],
        ..NewAlert::default()
    };
    match alert::publish(&config.state_dir, kind, new) {
        Ok((_, path)) => alert::run_hook(config.alerts.on_alert.as_deref(), &path),
        Err(e) => tracing::error!(app, "cannot write the alert: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(state_dir: &Path) -> Config {
        let json = serde_json::json!({
            "state_dir": state_dir,
            "ci_domain": "ci.example.org",
            "canonicals": {"demo": {}},
        });
        Config::parse(Path::new("test.json"), &json.to_string()).unwrap()
    }

    fn req(recipe: &str) -> Request {
        Request {
            recipe: recipe.into(),
            r#ref: "feature/x".into(),
            run: Some("7".into()),
            command: vec!["true".into()],
            wait: false,
            timeout: None,
        }
    }

    fn code(r: anyhow::Result<Report>) -> u8 {
        exit::code_for(&r.expect_err("quick must refuse"))
    }

    #[test]
    fn without_a_canonical_it_says_run_cold_and_touches_nothing() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        assert_eq!(code(quick(&c, &req("stranger"))), exit::NO_CANONICAL);
        // Enrolled, but never deployed: no last good, no known-good.
        let e = quick(&c, &req("demo")).unwrap_err();
        assert_eq!(exit::code_for(&e), exit::NO_CANONICAL);
        assert!(format!("{e:#}").contains("cold lane"), "{e:#}");
        assert!(!d.path().join("results").exists());
        assert!(!d.path().join("warm-demo/state.json").exists());
    }

    #[test]
    fn busy_before_anything_is_read_or_touched() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        let _held = lock::acquire(&d.path().join("warm-demo"), "warm-demo", false).unwrap();
        assert_eq!(code(quick(&c, &req("demo"))), exit::BUSY);
        assert!(!d.path().join("results").exists());
    }

    #[test]
    fn usage_errors() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path());
        let mut r = req("demo");
        r.command.clear();
        assert_eq!(code(quick(&c, &r)), exit::USAGE);
        let mut r = req("demo");
        r.r#ref = "a b".into();
        assert_eq!(code(quick(&c, &r)), exit::USAGE);
        let mut r = req("demo");
        r.run = Some("x\ny".into());
        assert_eq!(code(quick(&c, &r)), exit::USAGE);
    }
}
