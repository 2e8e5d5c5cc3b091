//! The config file and what it resolves into: parsing and checks (here), per-app plans (`spec`),
//! names, secrets. May import: `upgrade`, `platform`.
//!
//! The one JSON config file (rendered by the NixOS module, or written by hand).
//!
//! Parsing is strict: every struct denies unknown keys, and a typo is reported with its JSON
//! path and the nearest valid key, because a silently ignored `helth_timeout` is how a CI host
//! ends up with a gate nobody configured. Semantic checks run after parsing and report every
//! problem at once, each with its path.

pub mod names;
pub mod secret;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::platform::text::{escaped, has_userinfo, quoted};
use crate::upgrade::probe::{ConnectTo, HttpProbe, StatusSet};
use crate::upgrade::recipe;
use crate::upgrade::version::Version;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/ci-warm/config.json";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ci-warm";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where state, snapshots, alerts and the registry live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The CI's base domain; canonicals live at `warm-<recipe>.<ci_domain>`.
    #[serde(default)]
    pub ci_domain: Option<String>,
    #[serde(default)]
    pub deployer: Deployer,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub undeploy: Undeploy,
    #[serde(default)]
    pub gate: Gate,
    #[serde(default)]
    pub snapshot: Snapshot,
    #[serde(default)]
    pub alerts: Alerts,
    /// Prometheus textfile-collector output, rewritten atomically after every reconcile.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    #[serde(default)]
    pub disk: Disk,
    /// Warm apps kept current by `ci-warm reconcile`, by app name.
    #[serde(default)]
    pub apps: BTreeMap<String, App>,
    /// Enrolled recipes whose canonical deployment tracks the canonical registry, by recipe.
    #[serde(default)]
    pub canonicals: BTreeMap<String, Canonical>,
    #[serde(default)]
    pub sweep: Sweep,
    #[serde(default)]
    pub keycloak: Option<Keycloak>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// How apps are deployed. Whatever deploys, observation always goes through the Docker API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Deployer {
    /// `docker stack deploy` from the recipe's compose files and the app's env file.
    #[default]
    Stack,
    /// `abra app deploy/undeploy`, the CI host's normal tool.
    Abra {
        /// The abra executable.
        #[serde(default = "default_abra")]
        abra: PathBuf,
        /// The abra server name the apps are registered on.
        server: String,
        /// abra's own state directory (`servers/`, `catalogue/`); default `$ABRA_DIR`, else
        /// `~/.abra`. ci-warm never deploys from its `recipes/`: each app gets its own
        /// `ABRA_DIR` whose `servers/` and `catalogue/` link here (docs/operations.md).
        #[serde(default)]
        abra_dir: Option<PathBuf>,
        /// Deadline of one abra invocation, in seconds.
        #[serde(default = "default_abra_timeout")]
        timeout_secs: u64,
        /// Extra arguments appended to every `abra app deploy` (e.g. `--no-domain-checks`).
        #[serde(default)]
        deploy_args: Vec<String>,
        /// Run abra under a pseudo-terminal (`script -qec`). Off: deploy, undeploy, new and
        /// secret ran on plain pipes in production (abra-contract §4.8).
        #[serde(default)]
        pty: bool,
    },
}

fn default_abra() -> PathBuf {
    PathBuf::from("abra")
}

fn default_abra_timeout() -> u64 {
    900
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// How long a deployment may take to prove itself healthy.
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
    /// Pause between two polls of the health gate.
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
}

fn default_health_timeout() -> u64 {
    300
}
fn default_health_interval() -> u64 {
    2000
}

impl Default for Health {
    fn default() -> Self {
        Health {
            timeout_secs: default_health_timeout(),
            interval_ms: default_health_interval(),
        }
    }
}

/// How long an undeploy may take to free the app's volumes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Undeploy {
    /// After `docker stack rm` / `abra app undeploy`: how long ci-warm waits until no service,
    /// container or network of the stack is left and no container holds one of its volumes.
    /// Past it the undeploy failed (before a snapshot: the upgrade is not attempted and the old
    /// version is redeployed).
    #[serde(default = "default_undeploy_timeout")]
    pub timeout_secs: u64,
}

fn default_undeploy_timeout() -> u64 {
    // Swarm stops containers with a 10 s grace period by default, and a stack may have several
    // services on a busy host: two minutes is generous without hanging a timer run.
    120
}

impl Default for Undeploy {
    fn default() -> Self {
        Undeploy {
            timeout_secs: default_undeploy_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Release-note phrases (case-insensitive) that hold a version for a person. Empty means the
    /// built-in defaults.
    #[serde(default)]
    pub manual_migration_phrases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Free bytes that must remain on the state dir's filesystem after a snapshot.
    #[serde(default = "default_reserve_bytes")]
    pub reserve_bytes: u64,
    /// Free share (percent) that must remain after a snapshot.
    #[serde(default = "default_reserve_percent")]
    pub reserve_percent: u8,
}

fn default_reserve_bytes() -> u64 {
    1 << 30
}
fn default_reserve_percent() -> u8 {
    5
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            reserve_bytes: default_reserve_bytes(),
            reserve_percent: default_reserve_percent(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Command run with the new alert file's path appended (argv, never a shell).
    #[serde(default)]
    pub on_alert: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Free-space percentage under which `disk check` raises a `disk-low` warning.
    #[serde(default = "default_warn")]
    pub warn_free_percent: u8,
    /// Free-space percentage under which `disk check` raises a critical `disk-low` alert.
    #[serde(default = "default_critical")]
    pub critical_free_percent: u8,
    /// Docker's data root, watched besides the state dir.
    #[serde(default = "default_docker_root")]
    pub docker_root: PathBuf,
    /// Seen alerts older than this are removed by `disk prune`.
    #[serde(default = "default_seen_days")]
    pub prune_seen_alerts_days: u32,
}

fn default_warn() -> u8 {
    15
}
fn default_critical() -> u8 {
    5
}
fn default_docker_root() -> PathBuf {
    PathBuf::from("/var/lib/docker")
}
fn default_seen_days() -> u32 {
    30
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            warn_free_percent: default_warn(),
            critical_free_percent: default_critical(),
            docker_root: default_docker_root(),
            prune_seen_alerts_days: default_seen_days(),
        }
    }
}

/// The kind of warm app; it sets defaults (statefulness, probes) an operator can override.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Stateless proxy: version rollback only, probed at `/ping`.
    Traefik,
    /// Shared SSO: stateful, probed at `/realms/master`.
    Keycloak,
    #[default]
    Custom,
}

/// Which version an app is kept on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Track {
    /// The newest version the safety gate lets through.
    #[default]
    Latest,
    /// Exactly this version (upgrades still pass the gate and the health check).
    Pinned(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct App {
    #[serde(default)]
    pub preset: Preset,
    /// The Co-op Cloud recipe name.
    pub recipe: String,
    /// Where the recipe's git repository is; defaults to the Co-op Cloud catalogue.
    #[serde(default)]
    pub repo: Option<String>,
    pub domain: String,
    /// Swarm stack name; defaults to the domain with dots replaced, as abra does.
    #[serde(default)]
    pub stack: Option<String>,
    /// The app's env file (`.env` as abra keeps it); used by the stack deployer.
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Whether volumes are snapshotted around an upgrade; defaults from the preset.
    #[serde(default)]
    pub stateful: Option<bool>,
    #[serde(default)]
    pub track: Track,
    /// Version to deploy when the app has no last-good version yet (default: newest safe).
    #[serde(default)]
    pub initial_version: Option<String>,
    /// Versions released from the safety gate by config (as `ci-warm approve` does).
    #[serde(default)]
    pub approved: Vec<String>,
    /// Whether pre-release tags (`-rc1`, `-beta.2`, ...) may be chosen; default: never.
    #[serde(default)]
    pub allow_prerelease: bool,
    /// HTTP probes of the health gate; absent means the preset's probe (if any), `[]` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<Probe>>,
    /// Overrides `health.timeout_secs` for this app.
    #[serde(default)]
    pub health_timeout_secs: Option<u64>,
    /// abra deployer: create the app (`abra app new`, missing secrets generated) when its env
    /// file does not exist (default true).
    #[serde(default)]
    pub bootstrap: Option<bool>,
    /// abra deployer: keys written into the env file when the app is bootstrapped.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// `http://` or `https://` URL; behind traefik, the app's own domain.
    pub url: String,
    /// `200`, `[200, 302]` or `"200-499"`.
    #[serde(default)]
    pub status: StatusSet,
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Host header to send with a plain-`http` URL (refused for `https`: use `connect_to`).
    #[serde(default)]
    pub host: Option<String>,
    /// Connect to this address of the host instead of resolving the URL's name (curl's
    /// `--resolve`): `"127.0.0.1"` or `"127.0.0.1:8443"`.
    #[serde(default)]
    pub connect_to: Option<ConnectTo>,
    /// A PEM bundle trusted in addition to the built-in public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip the certificate check (logged on every probe, shown by `status`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// The health gate takes plain probes; it never reads the config file.
impl From<&Probe> for HttpProbe {
    fn from(p: &Probe) -> Self {
        HttpProbe {
            url: p.url.clone(),
            status: p.status.clone(),
            body_contains: p.body_contains.clone(),
            host: p.host.clone(),
            connect_to: p.connect_to,
            ca_file: p.ca_file.clone(),
            insecure: p.insecure,
        }
    }
}

/// An enrolled recipe: its canonical deployment tracks the canonical registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Canonical {
    /// The version to keep the canonical on until the canonical registry has an entry for the
    /// recipe; the registry's version wins once a cold run has promoted one.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub repo: Option<String>,
    /// Defaults to `warm-<recipe>.<ci_domain>`.
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Absent means `https://<domain>/` through traefik on this host, any status below 500;
    /// `[]` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<Probe>>,
    #[serde(default)]
    pub approved: Vec<String>,
    /// Whether a pre-release may be the canonical's version or a CI run's base.
    #[serde(default)]
    pub allow_prerelease: bool,
    #[serde(default)]
    pub health_timeout_secs: Option<u64>,
    /// As [`App::bootstrap`].
    #[serde(default)]
    pub bootstrap: Option<bool>,
    /// As [`App::env`].
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// At most this many cold runs per sweep.
    #[serde(default = "default_max_tests")]
    pub max_tests: u32,
    /// Cold-test argv template; `{recipe}`, `{version}` and `{run}` are substituted per item.
    #[serde(default)]
    pub cold_command: Vec<String>,
    /// A cold run still going after this many seconds is stopped and recorded as failed, so
    /// one hung run cannot stall the sweep; 0 means no limit.
    #[serde(default = "default_cold_timeout")]
    pub timeout_secs: u64,
}

fn default_max_tests() -> u32 {
    5
}

fn default_cold_timeout() -> u64 {
    4 * 3600
}

// By hand, so a config without a `sweep` section gets the same defaults as an empty one.
impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            max_tests: default_max_tests(),
            cold_command: Vec::new(),
            timeout_secs: default_cold_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Keycloak {
    /// Base URL of the warm keycloak, e.g. `https://sso.ci.example.org`.
    pub url: String,
    #[serde(default = "default_admin_user")]
    pub admin_user: String,
    /// Where the admin password is read from; never inline in the config.
    pub admin_password: Secret,
    /// Per-run realms younger than this are never reaped.
    #[serde(default = "default_grace")]
    pub reap_grace_secs: u64,
    /// How `realm reap --live-from-swarm` tells which runs are live from the running stacks.
    #[serde(default)]
    pub live_runs: Option<LiveRuns>,
}

/// Where the run ids of live CI runs are read from: exactly one of a label on the stacks'
/// services whose value is the run id, or a stack-name pattern with one `{run}` placeholder
/// (`ci-{run}_*`: a literal prefix, the run id up to the literal text before an optional
/// trailing `*`, or to a literal suffix).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LiveRuns {
    #[serde(default)]
    pub stack_label: Option<String>,
    #[serde(default)]
    pub stack_pattern: Option<String>,
}

fn default_admin_user() -> String {
    "admin".to_owned()
}
fn default_grace() -> u64 {
    6 * 3600
}

/// A secret's location. Secrets are read at use and never logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Secret {
    /// An absolute file path.
    File(PathBuf),
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {problem}")]
    Parse { path: PathBuf, problem: String },
    #[error("config {path} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// The config is valid, but a run of this app would fail on this host (a missing env file):
    /// refused before anything is undeployed.
    #[error("app {app} cannot be deployed on this host:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    NotRunnable { app: String, problems: Vec<Problem> },
}

/// One semantic problem, located by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at `{}`: {}", escaped(&self.path), self.message)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        // Syntax and shape first: serde would read a JSON array as a struct (its fields in
        // order), so `[]` would pass for an empty config and `"health": [1, 2]` for a section.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                problem: escaped(&e.to_string()),
            })?;
        if !value.is_object() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                problem: format!(
                    "the top level must be a JSON object (like {{\"state_dir\": ..., \"apps\": \
                     {{...}}}}), not {}",
                    json_kind(&value)
                ),
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Config =
            serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                problem: describe_parse_error(&e),
            })?;
        de.end().map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            problem: escaped(&e.to_string()),
        })?;
        // After the typed parse, so a misspelt key is reported as one first.
        if let Some(problem) = array_problem(&value) {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                problem,
            });
        }
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every semantic problem of an already parsed config.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |path: String, message: String| out.push(Problem { path, message });

        if !self.state_dir.is_absolute() {
            push("state_dir".into(), "must be an absolute path".into());
        }
        if let Some(d) = &self.ci_domain
            && let Err(e) = names::check_domain(d)
        {
            push("ci_domain".into(), e.to_string());
        }
        if let Deployer::Abra { server, .. } = &self.deployer
            && server.trim().is_empty()
        {
            push("deployer.server".into(), "must name the abra server".into());
        }
        check_range(
            "health.timeout_secs",
            self.health.timeout_secs,
            &HEALTH_TIMEOUT_SECS,
            &mut push,
        );
        check_range(
            "health.interval_ms",
            self.health.interval_ms,
            &HEALTH_INTERVAL_MS,
            &mut push,
        );
        check_range(
            "undeploy.timeout_secs",
            self.undeploy.timeout_secs,
            &UNDEPLOY_TIMEOUT_SECS,
            &mut push,
        );
        check_range(
            "snapshot.reserve_bytes",
            self.snapshot.reserve_bytes,
            &RESERVE_BYTES,
            &mut push,
        );
        check_range(
            "disk.prune_seen_alerts_days",
            u64::from(self.disk.prune_seen_alerts_days),
            &SEEN_ALERT_DAYS,
            &mut push,
        );
        check_range(
            "sweep.max_tests",
            u64::from(self.sweep.max_tests),
            &SWEEP_MAX_TESTS,
            &mut push,
        );
        check_range(
            "sweep.timeout_secs",
            self.sweep.timeout_secs,
            &SWEEP_TIMEOUT_SECS,
            &mut push,
        );
        if self.snapshot.reserve_percent >= 100 {
            push(
                "snapshot.reserve_percent".into(),
                "must be below 100".into(),
            );
        }
        if self.disk.warn_free_percent > 100 || self.disk.critical_free_percent > 100 {
            push("disk".into(), "percentages must be at most 100".into());
        }
        if self.disk.critical_free_percent > self.disk.warn_free_percent {
            push(
                "disk.critical_free_percent".into(),
                format!(
                    "must not be above disk.warn_free_percent ({})",
                    self.disk.warn_free_percent
                ),
            );
        }
        if let Some(argv) = &self.alerts.on_alert
            && argv.first().is_none_or(|a| a.is_empty())
        {
            push(
                "alerts.on_alert".into(),
                "must be a non-empty argv list".into(),
            );
        }
        if let Some(p) = &self.metrics_file
            && !p.is_absolute()
        {
            push("metrics_file".into(), "must be an absolute path".into());
        }

        let mut stacks: BTreeMap<String, String> = BTreeMap::new();
        let mut claim_stack = |stack: String, owner: String, out: &mut Vec<Problem>| {
            if let Some(prev) = stacks.insert(stack.clone(), owner.clone()) {
                out.push(Problem {
                    path: owner.clone(),
                    message: format!("stack `{stack}` is already used by `{}`", escaped(&prev)),
                });
            }
        };

        for (name, app) in &self.apps {
            let at = |k: &str| format!("apps.{name}.{k}");
            if let Err(e) = names::check_app(name) {
                out.push(Problem {
                    path: format!("apps.{name}"),
                    message: e.to_string(),
                });
            }
            if let Err(e) = names::check("recipe", &app.recipe) {
                out.push(Problem {
                    path: at("recipe"),
                    message: e.to_string(),
                });
            }
            if let Err(e) = names::check_domain(&app.domain) {
                out.push(Problem {
                    path: at("domain"),
                    message: e.to_string(),
                });
            }
            check_repo(app.repo.as_deref(), &at("repo"), &mut out);
            check_env_file(app.env_file.as_deref(), &at("env_file"), &mut out);
            if let Some(v) = &app.initial_version {
                check_version(v, &at("initial_version"), &mut out);
            }
            if let Track::Pinned(v) = &app.track {
                check_version(v, &at("track.pinned"), &mut out);
            }
            check_gate_keys(
                &format!("apps.{name}"),
                &app.approved,
                app.probes.as_deref(),
                app.health_timeout_secs,
                &mut out,
            );
            let stack = self.app_stack(name, app);
            match names::check_stack(&stack) {
                Ok(()) => claim_stack(stack, format!("apps.{name}"), &mut out),
                Err(e) => out.push(Problem {
                    path: at("stack"),
                    message: e.to_string(),
                }),
            }
        }

        for (recipe, c) in &self.canonicals {
            let at = |k: &str| format!("canonicals.{recipe}.{k}");
            if let Err(e) = names::check("recipe", recipe) {
                out.push(Problem {
                    path: format!("canonicals.{recipe}"),
                    message: e.to_string(),
                });
            }
            let app_name = canonical_app_name(recipe);
            if self.apps.contains_key(&app_name) {
                out.push(Problem {
                    path: format!("canonicals.{recipe}"),
                    message: format!(
                        "its app name `{}` is also configured under `apps`",
                        escaped(&app_name)
                    ),
                });
            }
            match self.canonical_domain(recipe, c) {
                Some(d) => {
                    if let Err(e) = names::check_domain(&d) {
                        out.push(Problem {
                            path: at("domain"),
                            message: e.to_string(),
                        });
                    }
                    let stack = c.stack.clone().unwrap_or_else(|| names::stack_from_domain(&d));
                    match names::check_stack(&stack) {
                        Ok(()) => claim_stack(stack, format!("canonicals.{recipe}"), &mut out),
                        Err(e) => out.push(Problem {
                            path: at("stack"),
                            message: e.to_string(),
                        }),
                    }
                }
                None => out.push(Problem {
                    path: at("domain"),
                    message: "needs a domain, or a top-level `ci_domain` to derive warm-<recipe>.<ci_domain>".into(),
                }),
            }
            if let Some(v) = &c.version {
                check_version(v, &at("version"), &mut out);
            }
            check_repo(c.repo.as_deref(), &at("repo"), &mut out);
            check_env_file(c.env_file.as_deref(), &at("env_file"), &mut out);
            check_gate_keys(
                &format!("canonicals.{recipe}"),
                &c.approved,
                c.probes.as_deref(),
                c.health_timeout_secs,
                &mut out,
            );
        }

        const PLACEHOLDERS: [&str; 3] = ["{recipe}", "{version}", "{run}"];
        for (i, arg) in self.sweep.cold_command.iter().enumerate() {
            let mut rest = arg.as_str();
            while let Some(start) = rest.find('{') {
                let tail = &rest[start..];
                match PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) {
                    Some(p) => rest = &tail[p.len()..],
                    None => {
                        out.push(Problem {
                            path: format!("sweep.cold_command[{i}]"),
                            message: format!(
                                "unknown placeholder in {}; use {}",
                                quoted(arg),
                                PLACEHOLDERS.join(", ")
                            ),
                        });
                        break;
                    }
                }
            }
        }
        if let Some(k) = &self.keycloak {
            if let Err(message) = check_http_url(&k.url) {
                out.push(Problem {
                    path: "keycloak.url".into(),
                    message,
                });
            }
            if let Some(l) = &k.live_runs {
                let path = "keycloak.live_runs".to_owned();
                match (&l.stack_label, &l.stack_pattern) {
                    (Some(_), Some(_)) | (None, None) => out.push(Problem {
                        path,
                        message: "set exactly one of stack_label and stack_pattern".into(),
                    }),
                    (Some(label), None) if label.trim().is_empty() => out.push(Problem {
                        path: format!("{path}.stack_label"),
                        message: "must not be empty".into(),
                    }),
                    (None, Some(p)) if p.matches("{run}").count() != 1 => out.push(Problem {
                        path: format!("{path}.stack_pattern"),
                        message: format!("{} must contain `{{run}}` exactly once", quoted(p)),
                    }),
                    _ => {}
                }
            }
            check_range(
                "keycloak.reap_grace_secs",
                k.reap_grace_secs,
                &REAP_GRACE_SECS,
                &mut |path, message| out.push(Problem { path, message }),
            );
            match &k.admin_password {
                Secret::File(p) if !p.is_absolute() => out.push(Problem {
                    path: "keycloak.admin_password.file".into(),
                    message: "must be an absolute path".into(),
                }),
                Secret::Credential(c) if names::check("credential", c).is_err() => {
                    out.push(Problem {
                        path: "keycloak.admin_password.credential".into(),
                        message: format!("{} is not a valid credential name", quoted(c)),
                    })
                }
                _ => {}
            }
        }
        out
    }

    /// Everything a deploying run would refuse on this host (`config check` reports it unless
    /// `--static`): see [`Config::preflight`]; every app.
    pub fn host_problems(&self) -> Vec<Problem> {
        self.env_files()
            .into_iter()
            .filter_map(|(app, at, file)| self.env_file_problem(&app, at, file))
            .collect()
    }

    /// Checks, before a run of `app` changes anything, what its deployer will need from this
    /// host: with the stack deployer, an `env_file` that is configured and is a readable regular
    /// file. The abra deployer never reads `env_file` (abra keeps the app's env file itself, and
    /// an app without one is bootstrapped with `abra app new`), so nothing is checked for it.
    pub fn preflight(&self, app: &str) -> Result<(), ConfigError> {
        let problems: Vec<Problem> = self
            .env_files()
            .into_iter()
            .filter(|(name, _, _)| name == app)
            .filter_map(|(app, at, file)| self.env_file_problem(&app, at, file))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::NotRunnable {
                app: app.to_owned(),
                problems,
            })
        }
    }

    /// (app name, config path of its `env_file`, the configured file) for every app.
    fn env_files(&self) -> Vec<(String, String, Option<&Path>)> {
        let apps = self.apps.iter().map(|(name, a)| {
            (
                name.clone(),
                format!("apps.{name}.env_file"),
                a.env_file.as_deref(),
            )
        });
        let canonicals = self.canonicals.iter().map(|(recipe, c)| {
            (
                canonical_app_name(recipe),
                format!("canonicals.{recipe}.env_file"),
                c.env_file.as_deref(),
            )
        });
        apps.chain(canonicals).collect()
    }

    fn env_file_problem(&self, app: &str, at: String, file: Option<&Path>) -> Option<Problem> {
        if !matches!(self.deployer, Deployer::Stack) {
            return None;
        }
        let problem = |message: String| {
            Some(Problem {
                path: at.clone(),
                message,
            })
        };
        let Some(file) = file else {
            return problem(format!(
                "app {app} has no env_file, and the stack deployer deploys from one (the app's \
                 `.env`, as abra keeps it)"
            ));
        };
        let shown = quoted(&file.to_string_lossy());
        match std::fs::metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problem(format!("the env file {shown} of app {app} does not exist"))
            }
            Err(e) => problem(format!(
                "the env file {shown} of app {app} cannot be read: {e}"
            )),
            Ok(m) if !m.is_file() => problem(format!(
                "the env file {shown} of app {app} is not a regular file"
            )),
            Ok(_) => match std::fs::File::open(file) {
                Ok(_) => None,
                Err(e) => problem(format!(
                    "the env file {shown} of app {app} cannot be read: {e}"
                )),
            },
        }
    }

    /// The stack an app deploys to.
    pub fn app_stack(&self, _name: &str, app: &App) -> String {
        app.stack
            .clone()
            .unwrap_or_else(|| names::stack_from_domain(&app.domain))
    }

    /// The domain a canonical lives at.
    pub fn canonical_domain(&self, recipe: &str, c: &Canonical) -> Option<String> {
        c.domain.clone().or_else(|| {
            self.ci_domain
                .as_ref()
                .map(|d| format!("{}.{d}", canonical_app_name(recipe)))
        })
    }
}

/// The app name (and state directory) of a recipe's canonical deployment.
pub fn canonical_app_name(recipe: &str) -> String {
    format!("warm-{recipe}")
}

/// The ranges numbers in the config must fall in (docs/configuration.md, "Ranges"): wide
/// enough for any real host, narrow enough that no arithmetic on them can overflow.
pub const HEALTH_TIMEOUT_SECS: RangeInclusive<u64> = 1..=86_400;
pub const HEALTH_INTERVAL_MS: RangeInclusive<u64> = 1..=600_000;
pub const UNDEPLOY_TIMEOUT_SECS: RangeInclusive<u64> = 1..=86_400;
/// 1 PiB.
pub const RESERVE_BYTES: RangeInclusive<u64> = 0..=(1 << 50);
pub const SEEN_ALERT_DAYS: RangeInclusive<u64> = 0..=36_500;
pub const SWEEP_MAX_TESTS: RangeInclusive<u64> = 0..=10_000;
/// 0 means no limit; at most 7 days.
pub const SWEEP_TIMEOUT_SECS: RangeInclusive<u64> = 0..=604_800;
/// At most a year.
pub const REAP_GRACE_SECS: RangeInclusive<u64> = 0..=31_536_000;

/// The keys apps and canonicals share about their gate: approved versions, probes and the
/// health timeout, each reported under `<prefix>.<key>`.
fn check_gate_keys(
    prefix: &str,
    approved: &[String],
    probes: Option<&[Probe]>,
    health_timeout_secs: Option<u64>,
    out: &mut Vec<Problem>,
) {
    for (i, v) in approved.iter().enumerate() {
        check_version(v, &format!("{prefix}.approved[{i}]"), out);
    }
    check_probes(probes.unwrap_or_default(), &format!("{prefix}.probes"), out);
    if let Some(t) = health_timeout_secs {
        check_range(
            &format!("{prefix}.health_timeout_secs"),
            t,
            &HEALTH_TIMEOUT_SECS,
            &mut |path, message| out.push(Problem { path, message }),
        );
    }
}

fn check_range(
    path: &str,
    value: u64,
    range: &RangeInclusive<u64>,
    push: &mut impl FnMut(String, String),
) {
    if !range.contains(&value) {
        push(
            path.to_owned(),
            format!(
                "{value} is out of range: must be from {} to {}",
                range.start(),
                range.end()
            ),
        );
    }
}

/// Where the config holds a list; an array anywhere else is a mistake serde would accept as a
/// struct written positionally. `*` stands for any app or recipe name. (A probe's `status`,
/// inside one of these lists, may be a list of statuses too.)
const LIST_PATHS: [&[&str]; 8] = [
    &["apps", "*", "probes"],
    &["apps", "*", "approved"],
    &["canonicals", "*", "probes"],
    &["canonicals", "*", "approved"],
    &["alerts", "on_alert"],
    &["sweep", "cold_command"],
    &["gate", "manual_migration_phrases"],
    &["deployer", "deploy_args"],
];

/// The first array where an object or a single value belongs.
fn array_problem(value: &serde_json::Value) -> Option<String> {
    fn walk(v: &serde_json::Value, at: &mut Vec<String>) -> Option<String> {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    at.push(k.clone());
                    let found = walk(child, at);
                    at.pop();
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            serde_json::Value::Array(items) => {
                let allowed = LIST_PATHS.iter().any(|p| {
                    p.len() == at.len() && p.iter().zip(at.iter()).all(|(w, k)| *w == "*" || w == k)
                });
                if !allowed {
                    return Some(format!(
                        "at `{}`: expected an object or a single value, not an array",
                        escaped(&at.join("."))
                    ));
                }
                // Elements of a list are objects (probes) or strings, never arrays.
                items.iter().enumerate().find_map(|(i, item)| {
                    item.is_array().then(|| {
                        format!(
                            "at `{}[{i}]`: expected an object or a string, not an array",
                            escaped(&at.join("."))
                        )
                    })
                }).or_else(|| {
                    items.iter().enumerate().find_map(|(i, item)| {
                        let serde_json::Value::Object(map) = item else { return None };
                        // A probe's `status` is the one key inside a list that may hold a list.
                        map.iter().filter(|(k, _)| k.as_str() != "status").find_map(|(k, child)| {
                            child.is_array().then(|| format!(
                                "at `{}[{i}].{}`: expected an object or a single value, not an array",
                                escaped(&at.join(".")),
                                escaped(k)
                            ))
                        })
                    })
                })
            }
            _ => None,
        }
    }
    walk(value, &mut Vec::new())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn check_version(v: &str, path: &str, out: &mut Vec<Problem>) {
    if let Err(e) = v.parse::<Version>() {
        out.push(Problem {
            path: path.to_owned(),
            message: e.to_string(),
        });
    }
}

/// The same check a run makes when it opens the recipe ([`recipe::check_repo_url`]).
fn check_repo(repo: Option<&str>, path: &str, out: &mut Vec<Problem>) {
    if let Some(r) = repo
        && let Err(why) = recipe::check_repo_url(r)
    {
        out.push(Problem {
            path: path.to_owned(),
            message: format!(
                "{} is not a usable recipe repository: {why}",
                quoted(&crate::platform::text::redact_userinfo(r))
            ),
        });
    }
}

fn check_env_file(p: Option<&Path>, path: &str, out: &mut Vec<Problem>) {
    if let Some(p) = p
        && !p.is_absolute()
    {
        out.push(Problem {
            path: path.to_owned(),
            message: "must be an absolute path".into(),
        });
    }
}

/// An `http://` or `https://` URL with a host and without inline credentials; the message
/// shows the URL with its credentials removed.
fn check_http_url(url: &str) -> Result<(), String> {
    let shown = quoted(&crate::platform::text::redact_userinfo(url));
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        return Err(format!(
            "{shown} must be an http:// or https:// URL with a host"
        ));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{shown} contains whitespace or control characters"));
    }
    if has_userinfo(url) {
        return Err(format!(
            "{shown}: inline credentials (user:password@) are refused, they would show in \
             status, state.json, alerts and logs; secrets are read from files \
             ({{\"file\": \"/absolute/path\"}} or {{\"credential\": \"name\"}})"
        ));
    }
    Ok(())
}

fn check_probes(probes: &[Probe], path: &str, out: &mut Vec<Problem>) {
    for (i, p) in probes.iter().enumerate() {
        let at = format!("{path}[{i}]");
        // Credentials and control characters first: nothing of such a URL is parsed further.
        if let Err(message) = check_http_url(&p.url) {
            out.push(Problem {
                path: format!("{at}.url"),
                message,
            });
            continue;
        }
        for (key, message) in crate::upgrade::probe::problems(&HttpProbe::from(p)) {
            out.push(Problem {
                path: format!("{at}.{key}"),
                message,
            });
        }
    }
}

/// Turns serde's message into one that names the path, the bad key and the nearest valid one.
fn describe_parse_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    // Keys and values come from the file: escaped, so a control character cannot forge a line.
    let path = escaped(&e.path().to_string());
    let location = format!("line {} column {}", inner.line(), inner.column());
    let msg = inner.to_string();
    // serde_json appends " at line L column C"; we print the location ourselves.
    let msg = escaped(
        msg.rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m),
    );
    // serde echoes the offending value; under a secret's key that value may be the secret.
    if SECRET_KEYS.iter().any(|k| path.contains(k)) {
        return format!(
            "at `{path}` ({location}): expected {{\"file\": \"/absolute/path\"}} or {{\"credential\": \"name\"}}; secrets are never accepted inline"
        );
    }
    let kind = if msg.starts_with("unknown field") {
        Some("key")
    } else if msg.starts_with("unknown variant") {
        Some("value")
    } else {
        None
    };
    match kind {
        Some(kind) => {
            let quoted = backticked(&msg);
            let (bad, valid) = quoted.split_first().map_or(("", &[][..]), |(b, v)| (*b, v));
            let hint = nearest(bad, valid)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            let container = parent_path(&path);
            let valid_list = if valid.is_empty() {
                "none".to_owned()
            } else {
                valid.join(", ")
            };
            format!(
                "unknown {kind} `{bad}` at `{container}` ({location}){hint}; valid: {valid_list}"
            )
        }
        None if path == "." => format!("{msg} ({location})"),
        None => format!("at `{path}`: {msg} ({location})"),
    }
}

/// Keys whose values may hold a secret and must never be echoed in an error.
const SECRET_KEYS: [&str; 3] = ["password", "token", "secret"];

/// The path of the object holding the offending key (`.` for the top level).
fn parent_path(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((parent, _)) if !parent.is_empty() => parent.to_owned(),
        _ => ".".to_owned(),
    }
}

fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

fn nearest<'a>(bad: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(bad, v), *v))
        .filter(|(d, v)| *d <= 3.max(v.len() / 3) && *d < v.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests;
