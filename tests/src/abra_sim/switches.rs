//! The simulator's switches: environment variables read by the simulator only (`ABRA_SIM_*`),
//! one per behaviour the contract marks INFERRED, plus a few knobs. Defaults model what the
//! contract says production saw; docs/testing.md ("The abra simulator") lists them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// Where a class of log lines goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Both,
}

/// Which services get the app env exposed in their environment (abra's `ExposeAllEnv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExposeEnv {
    App,
    All,
    None,
}

/// What `app new` validates in the literal (uninterpolated) compose files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewValidation {
    /// Only duration fields: a `${X}` there fails.
    Durations,
    /// Everything docker's schema checks (`docker stack config --skip-interpolation`): also
    /// fails `published: ${PORT}`.
    Literal,
    None,
}

#[derive(Debug, Clone)]
pub struct Switches {
    /// `ABRA_SIM_NEW_VALIDATION` = durations|literal|none (default durations: §2 CONFIRMED
    /// for an interpolated start_period; what else abra judges there is INFERRED).
    pub new_validation: NewValidation,
    /// `ABRA_SIM_FATA_STREAM` (default stdout: contract §4.8, production found FATA on stdout).
    pub fata_stream: Stream,
    /// `ABRA_SIM_LOG_STREAM`: INFO/WARN/ERRO/DEBU lines (default stdout, the same logger).
    pub log_stream: Stream,
    /// `ABRA_SIM_DEPLOYED_NEEDS_FORCE` (default 1: §4.5 INFERRED, deploy of a deployed app
    /// without `-f`/`-C` is a FATA).
    pub deployed_needs_force: bool,
    /// `ABRA_SIM_STACK_NAME_MAX` (default 45, 0 = never cut: §1.3 INFERRED).
    pub stack_name_max: usize,
    /// `ABRA_SIM_STACK_NAME_FROM_ENV` (default 1: `STACK_NAME` in the app env overrides the
    /// derived name, §1.3 INFERRED).
    pub stack_name_from_env: bool,
    /// `ABRA_SIM_START_PERIOD_FAILS` (default 1: a new task still inside its healthcheck
    /// start_period makes the monitor FATA `deploy failed`, §4.6 REPORTED; the trigger is
    /// the simulator's model).
    pub start_period_fails: bool,
    /// `ABRA_SIM_UNDEPLOY_WAIT` (default 0: undeploy returns while the stack is still being
    /// removed, §5 REPORTED; 1 passes `--detach=false` to `docker stack rm`).
    pub undeploy_wait: bool,
    /// `ABRA_SIM_LINT_R014` (default 1: a lightweight tag fails the lint of a non-chaos
    /// deploy, §4.2 CONFIRMED).
    pub lint_r014: bool,
    /// `ABRA_SIM_TIMEOUT_FROM_ENV` (default 1: without a `coop-cloud.<stack>.timeout` label
    /// the env's `TIMEOUT` is the convergence window, INFERRED).
    pub timeout_from_env: bool,
    /// `ABRA_SIM_DEFAULT_TIMEOUT` seconds (default 300, §4.1 step 11 REPORTED).
    pub default_timeout: Duration,
    /// `ABRA_SIM_EXPOSE_ENV` = app|all|none (default app, §1.2 CONFIRMED-deriv call,
    /// which services INFERRED).
    pub expose_env: ExposeEnv,
    /// `ABRA_SIM_REQUIRE_NO_INPUT` (default 0; 1 makes a deploy/undeploy/new without `-n` a
    /// FATA, as a prompt without a terminal would be: INFERRED).
    pub require_no_input: bool,
    /// `ABRA_SIM_RESOLVE_IMAGE` = always|changed|never (default never: abra resolves
    /// `always`, §4.7, but no registry is reachable here and the demo images are local).
    pub resolve_image: String,
    /// `ABRA_SIM_PRINT_SECRET_VALUES` (default 0: values are never printed; 1 prints them in
    /// the human output of `secret generate`, modelling contract §7 pitfall 15).
    pub print_secret_values: bool,
    /// `ABRA_SIM_MONITOR_INTERVAL_MS` (default 500): how often the monitor looks.
    pub monitor_interval: Duration,
    /// `ABRA_SIM_LOG`: append one JSON line per invocation to this file.
    pub log: Option<PathBuf>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn flag(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => bail!("{name}={other:?}: expected 1 or 0"),
    }
}

fn number(name: &str, default: u64) -> anyhow::Result<u64> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?}: expected a whole number")),
    }
}

fn stream(name: &str) -> anyhow::Result<Stream> {
    match var(name).as_deref().map(str::trim) {
        None | Some("stdout") => Ok(Stream::Stdout),
        Some("stderr") => Ok(Stream::Stderr),
        Some("both") => Ok(Stream::Both),
        Some(other) => bail!("{name}={other:?}: expected stdout, stderr or both"),
    }
}

impl Switches {
    pub fn from_env() -> anyhow::Result<Switches> {
        let expose_env = match var("ABRA_SIM_EXPOSE_ENV").as_deref().map(str::trim) {
            None | Some("app") => ExposeEnv::App,
            Some("all") => ExposeEnv::All,
            Some("none") => ExposeEnv::None,
            Some(other) => bail!("ABRA_SIM_EXPOSE_ENV={other:?}: expected app, all or none"),
        };
        let new_validation = match var("ABRA_SIM_NEW_VALIDATION").as_deref().map(str::trim) {
            None | Some("durations") => NewValidation::Durations,
            Some("literal") => NewValidation::Literal,
            Some("none") => NewValidation::None,
            Some(other) => {
                bail!("ABRA_SIM_NEW_VALIDATION={other:?}: expected durations, literal or none")
            }
        };
        let resolve_image = var("ABRA_SIM_RESOLVE_IMAGE").unwrap_or_else(|| "never".into());
        if !matches!(resolve_image.as_str(), "always" | "changed" | "never") {
            bail!("ABRA_SIM_RESOLVE_IMAGE={resolve_image:?}: expected always, changed or never");
        }
        Ok(Switches {
            new_validation,
            fata_stream: stream("ABRA_SIM_FATA_STREAM")?,
            log_stream: stream("ABRA_SIM_LOG_STREAM")?,
            deployed_needs_force: flag("ABRA_SIM_DEPLOYED_NEEDS_FORCE", true)?,
            stack_name_max: usize::try_from(number("ABRA_SIM_STACK_NAME_MAX", 45)?)
                .context("ABRA_SIM_STACK_NAME_MAX")?,
            stack_name_from_env: flag("ABRA_SIM_STACK_NAME_FROM_ENV", true)?,
            start_period_fails: flag("ABRA_SIM_START_PERIOD_FAILS", true)?,
            undeploy_wait: flag("ABRA_SIM_UNDEPLOY_WAIT", false)?,
            lint_r014: flag("ABRA_SIM_LINT_R014", true)?,
            timeout_from_env: flag("ABRA_SIM_TIMEOUT_FROM_ENV", true)?,
            default_timeout: Duration::from_secs(number("ABRA_SIM_DEFAULT_TIMEOUT", 300)?),
            expose_env,
            require_no_input: flag("ABRA_SIM_REQUIRE_NO_INPUT", false)?,
            resolve_image,
            print_secret_values: flag("ABRA_SIM_PRINT_SECRET_VALUES", false)?,
            monitor_interval: Duration::from_millis(number("ABRA_SIM_MONITOR_INTERVAL_MS", 500)?),
            log: var("ABRA_SIM_LOG").map(PathBuf::from),
        })
    }
}
