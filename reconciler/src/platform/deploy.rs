//! Deploying and undeploying one app (DESIGN.md, "Deployers").
//!
//! Two real backends: [`abra::AbraDeployer`] (production: `abra app deploy/undeploy`) and
//! [`stack::StackDeployer`] (`docker stack deploy/rm` from the recipe checkout and the app's
//! env file). Both finish an undeploy the same way, by watching the engine until nothing of the
//! stack is left and no container holds one of its volumes ([`wait_until_gone`]): only then may
//! a snapshot be taken.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::platform::docker::{BoxFuture, DockerError, SwarmJanitor, SwarmView};

pub mod abra;
pub mod placement;
pub mod stack;

/// What to deploy: a published version, or a chaos ref (a commit/branch, as CI runs do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// A recipe tag, e.g. `1.1.0+1.0.0`.
    Version(String),
    /// A git ref deployed with abra's `--chaos`.
    Chaos(String),
}

impl Revision {
    /// The label abra stamps on the `<stack>_app` service for this kind of revision.
    pub fn label_key(&self, stack: &str) -> String {
        match self {
            Revision::Version(_) => format!("coop-cloud.{stack}.version"),
            Revision::Chaos(_) => format!("coop-cloud.{stack}.chaos-version"),
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Revision::Version(v) | Revision::Chaos(v) => v,
        }
    }

    /// Whether a label value stamped on the app service is this revision. A version must match
    /// exactly. abra stamps a chaos deploy with the (short) commit hash, suffixed `+U` when the
    /// checkout had uncommitted changes, so a chaos ref matches when one hash is a prefix of the
    /// other (at least 7 characters, git's shortest abbreviation).
    pub fn matches_label(&self, label: &str) -> bool {
        match self {
            Revision::Version(v) => label == v,
            Revision::Chaos(r) => {
                let label = label.trim_end_matches("+U");
                if label == r {
                    return true;
                }
                let (short, long) = if label.len() <= r.len() {
                    (label, r.as_str())
                } else {
                    (r.as_str(), label)
                };
                short.len() >= 7 && long.starts_with(short)
            }
        }
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revision::Version(v) => write!(f, "{v}"),
            Revision::Chaos(r) => write!(f, "chaos ref {r}"),
        }
    }
}

/// One app at one revision, as the deployers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployTarget {
    /// ci-warm's app name (state directory), for messages.
    pub app: String,
    /// The app's domain: abra's app identifier, and `DOMAIN` for the compose files.
    pub domain: String,
    /// The swarm stack name.
    pub stack: String,
    /// A work tree of the recipe at `revision` (prepared by `recipe.rs`).
    pub checkout: PathBuf,
    /// The app's env file (abra's `.env`).
    pub env_file: PathBuf,
    pub revision: Revision,
    /// A stateful app's node: every service is constrained to it (`placement`). `None`:
    /// swarm places the app (stateless apps), and an earlier pin is dropped.
    pub pin: Option<placement::Pin>,
}

#[derive(Debug, Error)]
pub enum DeployError {
    #[error("reading env file {path} of app {app}: {source}")]
    EnvFile {
        app: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("env file {path} of app {app}, line {line}: {why}")]
    EnvSyntax {
        app: String,
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error(
        "compose file {path} of app {app} (from COMPOSE_FILE) does not exist in the recipe checkout"
    )]
    MissingComposeFile { app: String, path: PathBuf },
    #[error("recipe checkout {path} of app {app} is not a directory")]
    MissingCheckout { app: String, path: PathBuf },
    #[error("starting `{program}` for {action} of app {app}: {source}")]
    Spawn {
        program: String,
        action: &'static str,
        app: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` for {action} of app {app} failed ({status}): {output}")]
    Command {
        command: String,
        action: &'static str,
        app: String,
        status: String,
        output: String,
    },
    /// abra failed: its `FATA` line (whichever stream it came on), never its whole output.
    #[error("`{command}` for {action} of app {app} failed ({status}): {fata}")]
    Abra {
        command: String,
        action: &'static str,
        app: String,
        status: String,
        fata: String,
    },
    #[error(
        "app {app} has no abra env file {env_file} and bootstrap is off (`bootstrap: false`): create it with `abra app new`"
    )]
    NoApp { app: String, env_file: PathBuf },
    #[error("writing the placement override {path} of app {app}: {source}")]
    Placement {
        app: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compose file {path} of app {app} is not valid YAML: {why}")]
    ComposeSyntax {
        app: String,
        path: PathBuf,
        why: String,
    },
    #[error("`{command}` for {action} of app {app} did not finish within {timeout:?}")]
    CommandTimeout {
        command: String,
        action: &'static str,
        app: String,
        timeout: Duration,
    },
    #[error("stack {stack} of app {app} still not gone after {timeout:?}: {left}")]
    NotGone {
        app: String,
        stack: String,
        timeout: Duration,
        left: String,
    },
    #[error("observing stack {stack} of app {app}: {source}")]
    Observe {
        app: String,
        stack: String,
        #[source]
        source: DockerError,
    },
}

/// Deploys and removes apps. Object-safe so the reconciler can hold either backend.
pub trait Deployer: Send + Sync {
    /// Deploys `target.revision` and returns once the engine accepted it (convergence is the
    /// health gate's business, not the deployer's).
    fn deploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>>;
    /// Removes the deployment and waits until nothing of the stack is left and no container
    /// holds any of its volumes.
    fn undeploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>>;
}

/// How long and how often [`wait_until_gone`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoneWait {
    pub timeout: Duration,
    pub interval: Duration,
}

impl Default for GoneWait {
    fn default() -> Self {
        // Swarm stops containers with a 10 s grace period by default, and a stack may have
        // several services on a busy host: two minutes is generous without hanging a timer run.
        GoneWait {
            timeout: Duration::from_secs(120),
            interval: Duration::from_millis(500),
        }
    }
}

/// What is still left of a stack; empty when it is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub services: Vec<String>,
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    /// `volume <- container` pairs: containers (running or stopped) still holding a volume.
    pub volume_holders: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.containers.is_empty()
            && self.networks.is_empty()
            && self.volume_holders.is_empty()
    }
}

impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [
            ("services", &self.services),
            ("containers", &self.containers),
            ("networks", &self.networks),
            ("volumes held", &self.volume_holders),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what}: {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// One look at what is left of a stack.
pub async fn leftovers(view: &dyn SwarmView, stack: &str) -> Result<Leftovers, DockerError> {
    let services = view.services(stack).await?;
    let containers = view.stack_containers(stack).await?;
    let networks = view.networks(stack).await?;
    let mut volume_holders = Vec::new();
    for v in view.volumes(stack).await? {
        for c in view.containers_using(&v.name).await? {
            volume_holders.push(format!("{} <- {} ({})", v.name, c.name, c.state));
        }
    }
    Ok(Leftovers {
        services: services.into_iter().map(|s| s.name).collect(),
        containers: containers
            .into_iter()
            .map(|c| format!("{} ({})", c.name, c.state))
            .collect(),
        networks: networks.into_iter().map(|n| n.name).collect(),
        volume_holders,
    })
}

/// Polls until nothing of the stack is left (see [`Leftovers`]) or the timeout passes.
///
/// Once the stack's services are gone, stopped containers still labelled with the stack are
/// removed: engine 20.10 never removes the exited containers of `replicated-job` tasks, and they
/// would hold the stack's volumes forever. Running containers are never touched; one that
/// starts between the listing and the removal (the engine answers 409) is waited for like any
/// other holder of a volume.
pub async fn wait_until_gone(
    engine: &dyn SwarmJanitor,
    app: &str,
    stack: &str,
    wait: GoneWait,
) -> Result<(), DeployError> {
    let observe = |source| DeployError::Observe {
        app: app.to_owned(),
        stack: stack.to_owned(),
        source,
    };
    let started = Instant::now();
    let deadline = crate::platform::deadline::after_tokio(started, wait.timeout);
    loop {
        let left = leftovers(engine, stack).await.map_err(observe)?;
        if left.is_empty() {
            tracing::info!(app, stack, elapsed = ?started.elapsed(), "stack is gone");
            return Ok(());
        }
        if left.services.is_empty() {
            let containers = engine.stack_containers(stack).await.map_err(observe)?;
            if containers.is_empty() {
                // Nothing holds the stack's networks any more: one that `stack rm` could not
                // remove while tasks were stopping is removed now (nothing else would).
                for n in engine.networks(stack).await.map_err(observe)? {
                    match engine.remove_network(stack, &n.id).await {
                        Ok(()) => tracing::info!(app, stack, network = %n.name,
                            "removed a network the removed stack left behind"),
                        Err(e @ DockerError::NetworkInUse { .. }) => {
                            tracing::info!(app, stack, network = %n.name, "{e}; waiting");
                        }
                        Err(e) => return Err(observe(e)),
                    }
                }
            }
            for c in containers {
                if matches!(c.state.as_str(), "exited" | "created" | "dead") {
                    tracing::info!(app, stack, container = %c.name, state = %c.state,
                        "removing a stopped container the removed stack left behind");
                    match engine.remove_stopped_container(stack, &c.id).await {
                        Ok(()) => {}
                        // It started since it was listed (or is being removed): the volumes
                        // are not free yet, so keep waiting; the deadline still bounds it.
                        Err(e @ DockerError::RemoveConflict { .. }) => {
                            tracing::info!(app, stack, container = %c.name, "{e}; waiting");
                        }
                        Err(e) => return Err(observe(e)),
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(DeployError::NotGone {
                app: app.to_owned(),
                stack: stack.to_owned(),
                timeout: wait.timeout,
                left: left.to_string(),
            });
        }
        tracing::debug!(app, stack, %left, "waiting for the stack to go");
        tokio::time::sleep(
            wait.interval
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

/// Runs a command (never through a shell) with a deadline and returns its combined output;
/// a non-zero exit is an error carrying the output's tail.
pub(crate) async fn run_command(
    mut cmd: tokio::process::Command,
    display: String,
    action: &'static str,
    app: &str,
    timeout: Duration,
) -> Result<String, DeployError> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let child = cmd.spawn().map_err(|source| DeployError::Spawn {
        program,
        action,
        app: app.to_owned(),
        source,
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| DeployError::Spawn {
            program: display.clone(),
            action,
            app: app.to_owned(),
            source,
        })?,
        Err(_) => {
            return Err(DeployError::CommandTimeout {
                command: display,
                action,
                app: app.to_owned(),
                timeout,
            });
        }
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(DeployError::Command {
            command: display,
            action,
            app: app.to_owned(),
            status: out.status.to_string(),
            output: tail(&text, 2000),
        })
    }
}

/// The last `max` bytes of a command's output (cut at a char boundary), trimmed.
pub(crate) fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_labels_match_exactly() {
        let r = Revision::Version("1.1.0+1.0.0".into());
        assert_eq!(r.label_key("demo"), "coop-cloud.demo.version");
        assert!(r.matches_label("1.1.0+1.0.0"));
        assert!(!r.matches_label("1.1.0+1.0"));
        assert!(!r.matches_label("1.1.0+1.0.0+U"));
    }

    #[test]
    fn chaos_labels_match_by_hash_prefix() {
        let r = Revision::Chaos("0123456789abcdef0123".into());
        assert_eq!(r.label_key("demo"), "coop-cloud.demo.chaos-version");
        assert!(r.matches_label("01234567"));
        assert!(r.matches_label("01234567+U"));
        assert!(!r.matches_label("012345"));
        assert!(!r.matches_label("11234567"));
        assert!(Revision::Chaos("main".into()).matches_label("main"));
        assert!(Revision::Chaos("0123456".into()).matches_label("0123456789"));
    }

    #[test]
    fn leftovers_render_what_is_left() {
        let mut l = Leftovers::default();
        assert!(l.is_empty());
        assert_eq!(l.to_string(), "nothing");
        l.networks.push("s_default".into());
        l.volume_holders.push("s_data <- s_app.1.x (exited)".into());
        assert_eq!(
            l.to_string(),
            "networks: s_default; volumes held: s_data <- s_app.1.x (exited)"
        );
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("  short \n", 10), "short");
        assert_eq!(tail("aéééé", 4), "...éé");
    }
}
