//! A unique swarm stack per test, removed with its volumes and networks when the guard drops,
//! even when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Prefix of every test stack; scripts/test.sh fails when one is left behind.
pub const PREFIX: &str = "ciwt_";

pub struct TestStack {
    pub name: String,
    /// A private directory for the test (recipe, env file, state dir).
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl TestStack {
    /// `test` becomes part of the name: lowercase `[a-z0-9_]`, at most 40 characters in all.
    pub fn new(test: &str) -> TestStack {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
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
        let name = format!("{PREFIX}{clean}_{}_{n}", std::process::id() % 100_000);
        TestStack {
            name,
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            port: crate::free_port(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the app's env file (what abra keeps as `<domain>.env`) and returns its path.
    pub fn env_file(&self) -> PathBuf {
        let path = self.dir.path().join("app.env");
        let text = format!(
            "TYPE=demo\nDOMAIN={}.example.org\nPORT={}\nCOMPOSE_FILE=compose.yml\n",
            self.name.replace('_', "-"),
            self.port
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// `docker stack deploy` of `compose.yml` in `checkout`, with the stack's env.
    pub fn deploy(&self, checkout: &Path) -> anyhow::Result<()> {
        let out = Command::new("docker")
            .current_dir(checkout)
            .env("STACK_NAME", &self.name)
            .env("PORT", self.port.to_string())
            .args([
                "stack",
                "deploy",
                "--detach=true",
                "--resolve-image",
                "never",
                "-c",
                "compose.yml",
                &self.name,
            ])
            .output()
            .context("running docker stack deploy")?;
        if !out.status.success() {
            bail!(
                "docker stack deploy {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// GETs a path of the app on its published port.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .with_context(|| format!("connecting to 127.0.0.1:{}", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
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

/// Removes a stack and everything it left: services, containers, volumes, networks.
pub fn remove_stack(name: &str) -> Vec<String> {
    let _ = Command::new("docker").args(["stack", "rm", name]).output();
    let label = format!("label=com.docker.stack.namespace={name}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Exited job containers are never removed by swarm and keep volumes busy.
        let _ = Command::new("docker")
            .args(["container", "prune", "-f", "--filter", &label])
            .output();
        let containers = lines(&["ps", "-aq", "--filter", &label]);
        let volumes = lines(&["volume", "ls", "-q", "--filter", &label]);
        let networks = lines(&["network", "ls", "-q", "--filter", &label]);
        if containers.is_empty() {
            for v in &volumes {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f", v])
                    .output();
            }
            for n in &networks {
                let _ = Command::new("docker").args(["network", "rm", n]).output();
            }
        }
        let left: Vec<String> = lines(&["ps", "-aq", "--filter", &label])
            .into_iter()
            .chain(lines(&["volume", "ls", "-q", "--filter", &label]))
            .chain(lines(&["network", "ls", "-q", "--filter", &label]))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(500));
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
