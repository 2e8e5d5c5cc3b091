//! The real engine: reads through the API (bollard), changes through the `docker` CLI
//! (`stack deploy`/`rm`, `secret create`), whose error messages are the ones abra surfaces.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{Service, Task};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions};

pub const STACK_LABEL: &str = "com.docker.stack.namespace";

pub async fn connect() -> anyhow::Result<Docker> {
    let d = Docker::connect_with_local_defaults().context("connecting to Docker")?;
    d.negotiate_version()
        .await
        .context("negotiating the Docker API version (is dockerd running?)")
}

/// The services of a stack, by name.
pub async fn services(docker: &Docker, stack: &str) -> anyhow::Result<Vec<Service>> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{STACK_LABEL}={stack}")])]);
    let mut s = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(filters),
            status: None,
        }))
        .await
        .with_context(|| format!("listing the services of stack {stack}"))?;
    s.sort_by_key(service_name);
    Ok(s)
}

pub fn service_name(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_default()
}

pub fn service_labels(s: &Service) -> HashMap<String, String> {
    s.spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default()
}

pub async fn tasks(docker: &Docker, service: &str) -> anyhow::Result<Vec<Task>> {
    docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(HashMap::from([(
                "service".to_owned(),
                vec![service.to_owned()],
            )])),
        }))
        .await
        .with_context(|| format!("listing the tasks of {service}"))
}

/// What abra's `IsDeployed` reads from the running services' labels (§4.1 step 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployed {
    pub version: Option<String>,
    pub chaos: bool,
    pub chaos_version: Option<String>,
}

impl Deployed {
    /// The version undeploy writes back: the chaos version for a chaos deployment (§1.2).
    pub fn effective_version(&self) -> Option<&str> {
        if self.chaos {
            self.chaos_version.as_deref().or(self.version.as_deref())
        } else {
            self.version.as_deref()
        }
    }
}

/// `None` when no service of the stack exists; else the labels of `<stack>_app` (or of the
/// first service carrying a version label).
pub async fn is_deployed(docker: &Docker, stack: &str) -> anyhow::Result<Option<Deployed>> {
    let services = services(docker, stack).await?;
    if services.is_empty() {
        return Ok(None);
    }
    let key = |k: &str| format!("coop-cloud.{stack}.{k}");
    let app = format!("{stack}_app");
    let labels = services
        .iter()
        .find(|s| service_name(s) == app)
        .or_else(|| {
            services
                .iter()
                .find(|s| service_labels(s).contains_key(&key("version")))
        })
        .map(service_labels)
        .unwrap_or_default();
    Ok(Some(Deployed {
        version: labels.get(&key("version")).cloned(),
        chaos: labels.get(&key("chaos")).is_some_and(|c| c == "true"),
        chaos_version: labels.get(&key("chaos-version")).cloned(),
    }))
}

fn docker_lines(args: &[&str]) -> anyhow::Result<Vec<String>> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The names of every swarm secret.
pub fn secret_names() -> anyhow::Result<BTreeSet<String>> {
    Ok(docker_lines(&["secret", "ls", "--format", "{{.Name}}"])?
        .into_iter()
        .collect())
}

/// `docker secret create <name> -` with the value on stdin (never in argv). On failure, the
/// CLI's own message (`Error response from daemon: ... AlreadyExists ...`).
pub fn secret_create(name: &str, value: &str) -> anyhow::Result<()> {
    let mut child = Command::new("docker")
        .args(["secret", "create", name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker secret create")?;
    child
        .stdin
        .take()
        .context("stdin of docker secret create")?
        .write_all(value.as_bytes())
        .context("writing the secret to docker secret create")?;
    let out = child
        .wait_with_output()
        .context("waiting for docker secret create")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether this client knows `stack deploy --detach` (26.0+).
pub fn client_has_detach() -> bool {
    Command::new("docker")
        .args(["stack", "deploy", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--detach"))
        .unwrap_or(false)
}

/// `docker stack rm <stack>`; with `wait`, `--detach=false` (the client waits for the tasks).
pub fn stack_rm(stack: &str, wait: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new("docker");
    cmd.args(["stack", "rm"]);
    if client_has_detach() {
        cmd.arg(if wait {
            "--detach=false"
        } else {
            "--detach=true"
        });
    }
    let out = cmd.arg(stack).output().context("running docker stack rm")?;
    if !out.status.success() {
        bail!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
