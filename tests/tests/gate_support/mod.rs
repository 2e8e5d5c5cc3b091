//! The demo workload shared by `deployer_stack.rs` and `health_gate.rs`: its own small image
//! (`ciwt-gate-demo:1`) and a one-service stack around it, for tests of the deployer and the
//! health gate that need finer control than the demo recipe gives.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ci_warm::platform::docker::Engine;

pub const IMAGE: &str = "ciwt-gate-demo:1";

/// The demo workload: `serve` answers `/health` on $PORT (503 under DEMO_MODE=unhealthy;
/// DEMO_MODE=crash exits 3 at once), `check` is its healthcheck, `exit N` a one-shot.
const DEMO_SRC: &str = r#"
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
fn port() -> String { std::env::var("PORT").unwrap_or_else(|_| "8080".into()) }
fn main() {
let a: Vec<String> = std::env::args().collect();
match a.get(1).map(|s| s.as_str()) {
    Some("check") => {
        let ok = TcpStream::connect(format!("127.0.0.1:{}", port())).and_then(|mut s| {
            s.write_all(b"GET /health HTTP/1.0\r\n\r\n")?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r.starts_with("HTTP/1.1 200"))
        });
        std::process::exit(if matches!(ok, Ok(true)) { 0 } else { 1 });
    }
    Some("exit") => std::process::exit(a.get(2).and_then(|s| s.parse().ok()).unwrap_or(0)),
    _ => {}
}
let mode = std::env::var("DEMO_MODE").unwrap_or_default();
if mode == "crash" { eprintln!("crashing as asked"); std::process::exit(3); }
if let Some(p) = std::env::var_os("DATA_FILE") { let _ = std::fs::write(p, "demo data"); }
let l = TcpListener::bind(format!("0.0.0.0:{}", port())).expect("bind");
for s in l.incoming() {
    let Ok(mut s) = s else { continue };
    let mut buf = [0u8; 2048];
    let _ = s.read(&mut buf);
    let (code, body) = if mode == "unhealthy" { ("503 Unavailable", "down") } else { ("200 OK", "ok") };
    let _ = write!(s, "HTTP/1.1 {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
}
}
"#;

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Builds the demo image once per test binary (and not at all when it exists).
pub fn demo_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        if run(Command::new("docker").args(["image", "inspect", IMAGE])).is_ok() {
            return Ok(());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let src = dir.path().join("demo.rs");
        std::fs::write(&src, DEMO_SRC).map_err(|e| e.to_string())?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data")).map_err(|e| e.to_string())?;
        run(Command::new("rustc").args([
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-o",
            &root.join("demo").to_string_lossy(),
            &src.to_string_lossy(),
        ]))?;
        let tar = dir.path().join("root.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        run(Command::new("docker").args([
            "import",
            "-c",
            "ENTRYPOINT [\"/demo\"]",
            &tar.to_string_lossy(),
            IMAGE,
        ]))?;
        Ok(())
    });
    if let Err(e) = r {
        panic!("building the demo image: {e}");
    }
}

/// The engine, or `None` (skip) when Docker is unreachable and neither `CI` nor
/// `CI_WARM_REQUIRE_DOCKER` is set; with either set, an unreachable Docker fails the test.
pub async fn require_docker() -> Option<Engine> {
    match Engine::connect().await {
        Ok(e) => match e.docker().info().await {
            Ok(info)
                if info
                    .swarm
                    .as_ref()
                    .and_then(|s| s.control_available)
                    .unwrap_or(false) =>
            {
                Some(e)
            }
            other => fail_or_skip(&format!("Docker is not a swarm manager: {other:?}")),
        },
        Err(e) => fail_or_skip(&e.to_string()),
    }
}

fn fail_or_skip(why: &str) -> Option<Engine> {
    let required = ["CI", "CI_WARM_REQUIRE_DOCKER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if required {
        panic!("Docker is required (CI/CI_WARM_REQUIRE_DOCKER set): {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// One allocator for the whole test binary: a port handed out once is never handed out again
/// while the tests of this run deploy on it.
pub use ci_warm_tests::free_port;

/// A unique stack with its recipe dir; removes stack and volumes on drop, whatever happened.
pub struct Stack {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn new(test: &str) -> Stack {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("ciwt_{test}_{}_{n}", std::process::id());
        Stack {
            name,
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.name])
            .output();
        // Volumes can only go once swarm has removed the containers.
        let label = format!("label=com.docker.stack.namespace={}", self.name);
        for _ in 0..60 {
            let _ = Command::new("docker")
                .args(["container", "prune", "-f", "--filter", &label])
                .output();
            let vols = Command::new("docker")
                .args(["volume", "ls", "-q", "--filter", &label])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let nets = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &label])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for v in vols.split_whitespace() {
                let _ = Command::new("docker").args(["volume", "rm", v]).output();
            }
            if vols.trim().is_empty() && nets.trim().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}
