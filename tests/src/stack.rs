//! A unique swarm stack per test, removed with its volumes and networks when the guard drops,
//! even when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;

use crate::docker;

/// Prefix of every test stack; scripts/test.sh fails when one is left behind.
pub const PREFIX: &str = "ciwt_";

/// A stack name for `test`: `ciwt_`, the test name made lowercase `[a-z0-9_]` and cut to 20
/// characters, then the process id and a per-process counter (`<pid>n<counter>`), so parallel
/// tests and parallel test binaries never share a stack. At most 40 characters, which keeps
/// `<stack>_<service>` and `<stack>_<volume>` well within Docker's name limits. The last part
/// is never all digits: under abra the app's domain is the stack name with dots, and a URL host
/// whose last label is a number parses as an IPv4 address (and fails), so a probe by the domain
/// would be refused.
pub fn unique_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst) % 1000;
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    format!("{PREFIX}{clean}_{}n{n}", std::process::id() % 100_000)
}

pub struct TestStack {
    pub name: String,
    /// A private directory for the test (recipe, env file, state dir).
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl TestStack {
    /// A stack named after `test` (see [`unique_name`]), with a private directory and a free
    /// host port. Dropping it removes the stack and its volumes, also when the test panics.
    pub fn new(test: &str) -> TestStack {
        TestStack {
            name: unique_name(test),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            port: crate::free_port(),
        }
    }

    /// Waits until every service of the stack converged (see [`docker::wait_converged`]).
    pub async fn wait_converged(
        &self,
        docker: &Docker,
        timeout: Duration,
    ) -> anyhow::Result<Vec<docker::ServiceState>> {
        docker::wait_converged(docker, &self.name, timeout).await
    }

    /// The version label `coop-cloud.<stack>.version` on `<stack>_app`, read through the API.
    pub async fn deployed_version(&self, docker: &Docker) -> anyhow::Result<Option<String>> {
        docker::deployed_version(docker, &self.name).await
    }

    /// The host directory of the stack's volume `volume` (`<stack>_<volume>`), read through
    /// the API.
    pub async fn volume_dir(&self, docker: &Docker, volume: &str) -> anyhow::Result<PathBuf> {
        docker::volume_mountpoint(docker, &format!("{}_{volume}", self.name)).await
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The app's domain in its env file ([`TestStack::env_file`]).
    pub fn domain(&self) -> String {
        format!("{}.example.org", self.name.replace('_', "-"))
    }

    /// Writes the app's env file (what abra keeps as `<domain>.env`) and returns its path.
    pub fn env_file(&self) -> PathBuf {
        let path = self.dir.path().join("app.env");
        let text = format!(
            "TYPE=demo\nDOMAIN={}\nPORT={}\nCOMPOSE_FILE=compose.yml\n",
            self.domain(),
            self.port
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// `docker stack deploy -c compose.yml <stack>` in `checkout`, with the stack's env
    /// (`STACK_NAME`, `PORT`) for compose's interpolation.
    pub fn deploy(&self, checkout: &Path) -> anyhow::Result<()> {
        self.deploy_with_env(checkout, &[])
    }

    /// [`TestStack::deploy`] with more variables for compose's interpolation.
    pub fn deploy_with_env(&self, checkout: &Path, env: &[(&str, &str)]) -> anyhow::Result<()> {
        deploy(checkout, &self.name, self.port, env)
    }

    /// GETs a path of the app on its published port.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .with_context(|| format!("connecting to 127.0.0.1:{}", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        let status = r
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        let body = r
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Polls `path` until it answers `status`, up to `timeout`.
    pub fn wait_for(&self, path: &str, status: u16, timeout: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            match self.get(path) {
                Ok((s, body)) if s == status => return Ok(body),
                other if start.elapsed() > timeout => {
                    bail!(
                        "{path} on stack {} did not answer {status} within {timeout:?}: last {other:?}",
                        self.name
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// The host path of one of the stack's volumes.
    pub fn volume_path(&self, volume: &str) -> anyhow::Result<PathBuf> {
        let out = Command::new("docker")
            .args([
                "volume",
                "inspect",
                "-f",
                "{{.Mountpoint}}",
                &format!("{}_{volume}", self.name),
            ])
            .output()
            .context("docker volume inspect")?;
        if !out.status.success() {
            bail!(
                "volume {volume} of {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

/// Whether this `docker` client knows `stack deploy --detach` (26.0 and later). Older clients
/// (Debian 12's 20.10) reject the flag but never wait anyway; newer ones warn without it.
fn client_has_detach() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("docker")
            .args(["stack", "deploy", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("--detach"))
            .unwrap_or(false)
    })
}

/// `docker stack deploy` of `compose.yml` in `checkout` as stack `name`, with `STACK_NAME`,
/// `PORT` and `env` set for compose's interpolation. Images are never resolved against a
/// registry: the demo images exist only locally.
pub fn deploy(checkout: &Path, name: &str, port: u16, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut cmd = Command::new("docker");
    cmd.current_dir(checkout)
        .env("STACK_NAME", name)
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .args(["stack", "deploy"]);
    if client_has_detach() {
        cmd.arg("--detach=true");
    }
    cmd.args(["--resolve-image", "never", "-c", "compose.yml", name]);
    let out = cmd
        .output()
        .with_context(|| format!("running docker stack deploy {name}"))?;
    if !out.status.success() {
        bail!(
            "docker stack deploy {name} in {}: {}",
            checkout.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn lines(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// How long removing a stack may take before the guard gives up and reports what is left.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes a stack and everything it left: services, containers, volumes, networks. Returns
/// what is still there after [`REMOVE_TIMEOUT`] (empty when all is gone).
pub fn remove_stack(name: &str) -> Vec<String> {
    let label = format!("label=com.docker.stack.namespace={name}");
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        let services = lines(&["service", "ls", "-q", "--filter", &label]);
        if !services.is_empty() {
            // Repeated while services remain: a removal racing a deploy can miss some.
            let _ = Command::new("docker").args(["stack", "rm", name]).output();
        }
        // Swarm never removes the exited containers of a one-shot job by itself, and they keep
        // the volumes busy.
        let _ = Command::new("docker")
            .args(["container", "prune", "-f", "--filter", &label])
            .output();
        let containers = lines(&["ps", "-aq", "--filter", &label]);
        if services.is_empty() && containers.is_empty() {
            // Volumes can only go once no container holds them.
            for v in lines(&["volume", "ls", "-q", "--filter", &label]) {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f", &v])
                    .output();
            }
            for n in lines(&["network", "ls", "-q", "--filter", &label]) {
                let _ = Command::new("docker").args(["network", "rm", &n]).output();
            }
            // Secrets an abra bootstrap generated (`<stack>_<name>_<version>`).
            for s in lines(&["secret", "ls", "-q", "--filter", &format!("name={name}_")]) {
                let _ = Command::new("docker").args(["secret", "rm", &s]).output();
            }
        }
        let left: Vec<String> = lines(&[
            "service",
            "ls",
            "--format",
            "service {{.Name}}",
            "--filter",
            &label,
        ])
        .into_iter()
        .chain(lines(&[
            "ps",
            "-a",
            "--format",
            "container {{.Names}}",
            "--filter",
            &label,
        ]))
        .chain(lines(&[
            "volume",
            "ls",
            "--format",
            "volume {{.Name}}",
            "--filter",
            &label,
        ]))
        .chain(lines(&[
            "network",
            "ls",
            "--format",
            "network {{.Name}}",
            "--filter",
            &label,
        ]))
        .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let left = remove_stack(&self.name);
        if !left.is_empty() {
            eprintln!("warning: stack {} left {left:?} behind", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_valid_and_short() {
        let a = unique_name("Some::Very-Long test name, with punctuation and more");
        let b = unique_name("Some::Very-Long test name, with punctuation and more");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.starts_with(PREFIX), "{n}");
            assert!(n.len() <= 40, "{n} is {} long", n.len());
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
            let last = n.rsplit('_').next().unwrap_or_default();
            assert!(
                !last.chars().all(|c| c.is_ascii_digit()),
                "{n}: the abra domain would end in a number"
            );
        }
    }
}
