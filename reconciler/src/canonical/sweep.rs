//! `ci-warm sweep`: the nightly full-cold sweep.
//!
//! For the enrolled recipes, least recently tested (cold) first and at most `max_tests` of them:
//! resolve the recipe's newest published version, run the configured cold-test command with
//! `{recipe}`, `{version}` and `{run}` substituted inside its argv items (never through a shell),
//! capture its output to a log, record a result file, and promote the version when the run was
//! green. One failing recipe never stops the sweep. ci-warm never touches what the cold command
//! deploys: the canonical is only locked for the moments it reads the recipe and promotes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::canonical::promote;
use crate::canonical::results::{self, Mode, RunResult, Verdict};
use crate::config::spec;
use crate::config::{self, Config};
use crate::platform::child;
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::recipe::{GitRecipe, RecipeSource, Rev};
use crate::upgrade::version::Version;

/// One recipe's cold run in a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    #[serde(flatten)]
    pub result: RunResult,
    pub result_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub max_tests: u32,
    /// The order the enrolled recipes were considered in, with when each was last tested.
    pub order: Vec<(String, Option<String>)>,
    pub ran: Vec<Item>,
    pub exit: u8,
}

/// Enrolled recipes, least recently tested (cold) first; never-tested ones lead, by name.
pub fn order(config: &Config) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut out = config
        .canonicals
        .keys()
        .map(|r| {
            Ok((
                r.clone(),
                results::last_tested(&config.state_dir, r, Mode::Cold)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // `None` sorts before any time stamp.
    out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// Substitutes the placeholders inside each argv item; an item never splits or merges.
pub fn substitute(template: &[String], recipe: &str, version: &str, run: &str) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            // One pass, so a value that itself contains `{run}` is never substituted again.
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            while let Some(i) = rest.find('{') {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                let (value, len) = if tail.starts_with("{recipe}") {
                    (recipe, "{recipe}".len())
                } else if tail.starts_with("{version}") {
                    (version, "{version}".len())
                } else if tail.starts_with("{run}") {
                    (run, "{run}".len())
                } else {
                    ("{", 1)
                };
                out.push_str(value);
                rest = &tail[len..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

pub fn sweep(config: &Config, max_tests: Option<u32>) -> anyhow::Result<Report> {
    if config.sweep.cold_command.is_empty() {
        return Err(Exit::new(
            exit::USAGE,
            "sweep.cold_command is not configured (the argv of the cold test, e.g. [\"ci-cold\", \"{recipe}\", \"{version}\", \"{run}\"])",
        )
        .into());
    }
    let max = max_tests.unwrap_or(config.sweep.max_tests);
    let order = order(config)?;
    let mut ran = Vec::new();
    for (recipe, last) in order.iter().take(max as usize) {
        tracing::info!(recipe = %recipe, last_tested = ?last, "sweep: cold run");
        let item = run_one(config, recipe)?;
        tracing::info!(recipe = %recipe, result = item.result.result.as_str(),
            promotion = ?item.result.promotion, "sweep: done");
        ran.push(item);
    }
    let exit = if ran.iter().all(|i| i.result.result == Verdict::Pass) {
        exit::OK
    } else {
        exit::FAILURE
    };
    Ok(Report {
        max_tests: max,
        order,
        ran,
        exit,
    })
}

/// The newest published version of the recipe and its commit, read under the canonical's lock
/// (the recipe cache is the canonical's).
fn newest(config: &Config, recipe: &str) -> anyhow::Result<(String, String)> {
    let app = config::canonical_app_name(recipe);
    let plan = spec::plan(config, &app)?;
    let _lock = lock::acquire(&config.state_dir.join(&app), &app, true)?;
    let mut git = GitRecipe::new(
        plan.repo.clone(),
        GitRecipe::cache_dir_for(&config.state_dir, &app),
    )?;
    git.fetch()
        .with_context(|| format!("fetching recipe {recipe}"))?;
    let version = newest_release(git.versions()?, plan.spec.allow_prerelease)
        .with_context(|| format!("recipe {recipe} has no published (non-pre-release) version"))?;
    let commit = git.resolve(&Rev::Version(version.clone()))?;
    Ok((version.to_string(), commit))
}

/// The newest of `versions` (ascending) the sweep may test: a pre-release only when the
/// canonical allows pre-releases.
fn newest_release(versions: Vec<Version>, allow_prerelease: bool) -> Option<Version> {
    versions
        .into_iter()
        .rfind(|v| allow_prerelease || !v.is_prerelease())
}

/// One cold run; only failing to record its result is an error (that stops the sweep, since
/// every later result would be lost the same way).
fn run_one(config: &Config, recipe: &str) -> anyhow::Result<Item> {
    let now = SystemTime::now();
    let started_at = results::timestamp(now);
    let run = format!(
        "sweep-{}-{recipe}",
        started_at
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );
    let clock = Instant::now();
    let base = results::base_path(
        &config.state_dir,
        recipe,
        &started_at,
        Mode::Cold,
        Some(&run),
    );
    let mut result = RunResult {
        schema: results::RESULT_SCHEMA,
        recipe: recipe.to_owned(),
        mode: Mode::Cold,
        result: Verdict::Fail,
        version: None,
        commit: None,
        r#ref: None,
        run: Some(run.clone()),
        started_at,
        finished_at: String::new(),
        duration_secs: 0.0,
        log: None,
        failed_step: None,
        reason: None,
        exit_code: None,
        promotion: None,
    };
    match newest(config, recipe) {
        Err(e) => {
            result.failed_step = Some("fetch".into());
            result.reason = Some(format!("{e:#}"));
        }
        Ok((version, commit)) => {
            result.version = Some(version.clone());
            result.commit = Some(commit.clone());
            let log = results::with_suffix(&base, ".log");
            result.log = Some(log.clone());
            match run_command(config, recipe, &version, &run, &log) {
                Err(e) => {
                    result.failed_step = Some("test".into());
                    result.reason = Some(format!("{e:#}"));
                }
                Ok(child::Finished::TimedOut(limit)) => {
                    result.failed_step = Some("test".into());
                    result.reason = Some(format!(
                        "the cold command did not finish within {}s (sweep.timeout_secs) and was stopped; see {}",
                        limit.as_secs(),
                        log.display()
                    ));
                }
                Ok(child::Finished::Exited(status)) => {
                    result.exit_code = status.code();
                    if status.success() {
                        result.result = Verdict::Pass;
                        result.promotion =
                            Some(promote_green(config, recipe, &version, &commit, &run));
                    } else {
                        result.failed_step = Some("test".into());
                        result.reason = Some(format!(
                            "the cold command exited with {status}; see {}",
                            log.display()
                        ));
                    }
                }
            }
        }
    }
    result.finished_at = results::timestamp(SystemTime::now());
    result.duration_secs = clock.elapsed().as_secs_f64();
    let result_file = results::record(&config.state_dir, &result)?;
    Ok(Item {
        result,
        result_file,
    })
}

fn run_command(
    config: &Config,
    recipe: &str,
    version: &str,
    run: &str,
    log: &std::path::Path,
) -> anyhow::Result<child::Finished> {
    let argv = substitute(&config.sweep.cold_command, recipe, version, run);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("opening {} twice", log.display()))?;
    tracing::info!(recipe, command = ?argv, log = %log.display(), "running the cold command");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("CI_WARM_MODE", "cold")
        .env("CI_WARM_RECIPE", recipe)
        .env("CI_WARM_VERSION", version)
        .env("CI_WARM_RUN", run);
    child::run(
        &mut cmd,
        child::limit(config.sweep.timeout_secs),
        "the cold command",
    )
}

fn promote_green(config: &Config, recipe: &str, version: &str, commit: &str, run: &str) -> String {
    let req = promote::Request {
        recipe: recipe.to_owned(),
        version: version.to_owned(),
        commit: commit.to_owned(),
        mode: Mode::Cold,
        result: Verdict::Pass,
        r#ref: None,
        run: Some(run.to_owned()),
    };
    match promote::promote(config, &req, true) {
        Ok(record) => format!(
            "{}: {}",
            match record.action {
                promote::Action::Seeded => "seeded",
                promote::Action::Promoted => "promoted",
                promote::Action::NoOp => "no-op",
            },
            record.reason
        ),
        Err(e) => {
            tracing::error!(recipe, "promoting the green run failed: {e:#}");
            format!("error: {e:#}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_never_takes_a_pre_release_by_surprise() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        let tags = || vec![v("1.0.0+1.0"), v("1.1.0+1.1"), v("1.2.0+1.2-rc1")];
        assert_eq!(newest_release(tags(), false), Some(v("1.1.0+1.1")));
        assert_eq!(newest_release(tags(), true), Some(v("1.2.0+1.2-rc1")));
        assert_eq!(newest_release(vec![v("1.0.0+1.0-beta.1")], false), None);
    }

    #[test]
    fn placeholders_stay_inside_their_argv_item() {
        let t: Vec<String> = [
            "cold-test",
            "--recipe={recipe}",
            "{version}",
            "{run}",
            "a b {x} {",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(
            substitute(&t, "demo", "1.0.0+1.0.0", "r; rm -rf / {recipe}"),
            [
                "cold-test",
                "--recipe=demo",
                "1.0.0+1.0.0",
                "r; rm -rf / {recipe}",
                "a b {x} {"
            ]
        );
    }

    #[test]
    fn an_unfetchable_recipe_is_recorded_and_the_sweep_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let json = serde_json::json!({
            "state_dir": d.path().join("state"),
            "ci_domain": "ci.example.org",
            "canonicals": {"gone": {"repo": d.path().join("no-such-repo")}},
            "sweep": {"cold_command": ["true"]},
        });
        let c = Config::parse(std::path::Path::new("t.json"), &json.to_string()).unwrap();
        let report = sweep(&c, None).unwrap();
        assert_eq!(report.exit, exit::FAILURE);
        assert_eq!(report.ran.len(), 1);
        let r = &report.ran[0].result;
        assert_eq!(
            (r.result, r.failed_step.as_deref()),
            (Verdict::Fail, Some("fetch"))
        );
        assert!(r.reason.as_deref().unwrap().contains("gone"), "{r:?}");
        assert!(report.ran[0].result_file.exists());
        assert!(!d.path().join("state/registry.json").exists());
    }

    #[test]
    fn no_cold_command_is_a_usage_error() {
        let d = tempfile::tempdir().unwrap();
        let json = serde_json::json!({"state_dir": d.path(), "ci_domain": "ci.example.org"});
        let c = Config::parse(std::path::Path::new("t.json"), &json.to_string()).unwrap();
        assert_eq!(
            exit::code_for(&sweep(&c, Some(1)).unwrap_err()),
            exit::USAGE
        );
    }

    #[test]
    fn never_tested_first_then_oldest() {
        let d = tempfile::tempdir().unwrap();
        let json = serde_json::json!({
            "state_dir": d.path(),
            "ci_domain": "ci.example.org",
            "canonicals": {"a": {}, "b": {}, "c": {}},
        });
        let c = Config::parse(std::path::Path::new("t.json"), &json.to_string()).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        for (recipe, secs) in [("a", 60), ("c", 0)] {
            let at = results::timestamp(t0 + std::time::Duration::from_secs(secs));
            results::record(
                d.path(),
                &RunResult {
                    schema: 1,
                    recipe: recipe.into(),
                    mode: Mode::Cold,
                    result: Verdict::Pass,
                    version: None,
                    commit: None,
                    r#ref: None,
                    run: None,
                    started_at: at.clone(),
                    finished_at: at,
                    duration_secs: 0.0,
                    log: None,
                    failed_step: None,
                    reason: None,
                    exit_code: Some(0),
                    promotion: None,
                },
            )
            .unwrap();
        }
        let names: Vec<String> = order(&c).unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(names, ["b", "c", "a"]);
    }
}
