//! The demo workload ci-warm deploys in its demo and tests: a tiny HTTP app with a data volume.
//!
//! It has no dependencies so it builds as one static binary for a `FROM scratch` image. It is
//! configured by environment:
//!
//! - `DEMO_VERSION` (baked into the image) and `RECIPE_VERSION` (set by the recipe's compose);
//! - `DEMO_MODE`: `ok` | `crash` (exit 1 at start) | `never-healthy` (serves, but `/health`
//!   answers 503 forever, and it overwrites the marker and writes junk into the data dir, so
//!   tests can prove a rollback restores the data) | `slow:<secs>` (healthy after that long);
//! - `DATA_DIR` (default `/data`) and `PORT` (default `8080`; `0` picks a free port, which the
//!   app names on stderr as `demo-app: listening on ADDR`).
//!
//! On a healthy start it creates `$DATA_DIR/marker` if missing (naming the version that created
//! it) and appends its version to `$DATA_DIR/versions.log`.
//!
//! Endpoints: `/health`, `/version`, `/marker`. Subcommands: `serve` (the default),
//! `healthcheck` (the image has no curl: exit 0 iff `/health` answers 200) and `oneshot` (a job
//! that prints and exits 0). SIGTERM and SIGINT exit 0 at once, so `docker stack rm` is quick.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Ok,
    Crash,
    NeverHealthy,
    Slow(u64),
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "" | "ok" => Ok(Mode::Ok),
        "crash" => Ok(Mode::Crash),
        "never-healthy" => Ok(Mode::NeverHealthy),
        other => match other.strip_prefix("slow:").map(str::parse) {
            Some(Ok(secs)) => Ok(Mode::Slow(secs)),
            _ => Err(format!(
                "DEMO_MODE={other:?}: expected ok, crash, never-healthy or slow:<secs>"
            )),
        },
    }
}

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn version() -> String {
    std::env::var("RECIPE_VERSION").unwrap_or_else(|_| env("DEMO_VERSION", "unknown"))
}

/// `docker stack rm` sends SIGTERM; as PID 1 in a scratch image the default action is ignored,
/// so without a handler every removal would wait out the stop grace period.
fn exit_on_sigterm() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn on_term(_: i32) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(0) }
    }
    const SIGTERM: i32 = 15;
    const SIGINT: i32 = 2;
    // SAFETY: installing a handler that only calls an async-signal-safe function.
    unsafe {
        signal(SIGTERM, on_term);
        signal(SIGINT, on_term);
    }
}

fn healthcheck(port: &str) -> i32 {
    let ok = TcpStream::connect(format!("127.0.0.1:{port}")).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        Ok(r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
    });
    if matches!(ok, Ok(true)) { 0 } else { 1 }
}

/// What `/health` answers after the app has been up for `up`.
fn is_healthy(mode: &Mode, up: Duration) -> bool {
    match mode {
        Mode::Ok => true,
        Mode::Slow(secs) => up >= Duration::from_secs(*secs),
        Mode::NeverHealthy | Mode::Crash => false,
    }
}

/// What the data directory looks like after a start in `mode`.
fn prepare_data(dir: &Path, mode: &Mode, version: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let marker = dir.join("marker");
    if *mode == Mode::NeverHealthy {
        std::fs::write(&marker, format!("clobbered by broken {version}\n"))?;
        std::fs::write(dir.join(format!("junk-{version}")), vec![0xa5u8; 64 * 1024])?;
        return Ok(());
    }
    if !marker.exists() {
        std::fs::write(&marker, format!("created by {version}\n"))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("versions.log"))?;
    writeln!(log, "{version}")
}

fn respond(mut stream: TcpStream, healthy: bool, data: &Path) {
    // Read the whole request head: a client may send it in several writes, and closing with
    // unread request bytes makes the kernel reset the connection, losing our response.
    let mut buf = [0u8; 4096];
    let mut n = 0;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/health" if healthy => ("200 OK", "ok\n".to_owned()),
        "/health" => ("503 Service Unavailable", "not healthy\n".to_owned()),
        "/version" => ("200 OK", format!("{}\n", version())),
        "/marker" => match std::fs::read_to_string(data.join("marker")) {
            Ok(m) => ("200 OK", m),
            Err(e) => ("404 Not Found", format!("no marker: {e}\n")),
        },
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve() -> i32 {
    let mode = match parse_mode(&env("DEMO_MODE", "ok")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("demo-app: {e}");
            return 2;
        }
    };
    let version = version();
    eprintln!("demo-app {version} starting in mode {mode:?}");
    if mode == Mode::Crash {
        eprintln!("demo-app: crashing at start as DEMO_MODE asks");
        return 1;
    }
    let data = PathBuf::from(env("DATA_DIR", "/data"));
    if let Err(e) = prepare_data(&data, &mode, &version) {
        eprintln!("demo-app: data dir {}: {e}", data.display());
        return 1;
    }
    let port = env("PORT", "8080");
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-app: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    // With PORT=0 the kernel picks the port: say which, so a caller never has to guess a free one.
    match listener.local_addr() {
        Ok(addr) => eprintln!("demo-app: listening on {addr}"),
        Err(e) => eprintln!("demo-app: listening (address unknown: {e})"),
    }
    let started = Instant::now();
    for stream in listener.incoming().flatten() {
        let healthy = is_healthy(&mode, started.elapsed());
        let data = data.clone();
        std::thread::spawn(move || respond(stream, healthy, &data));
    }
    0
}

/// The subcommand among the arguments. The image's ENTRYPOINT is `/demo-app`, so a compose
/// `command: ["/demo-app", "oneshot"]` (the habit from images with a shell) arrives as
/// `/demo-app /demo-app oneshot`; both spellings work.
fn subcommand(mut args: impl Iterator<Item = String>) -> Option<String> {
    let first = args.next()?;
    if Path::new(&first).file_name() == Some("demo-app".as_ref()) {
        return args.next();
    }
    Some(first)
}

fn main() {
    exit_on_sigterm();
    let code = match subcommand(std::env::args().skip(1)).as_deref() {
        None | Some("serve") => serve(),
        Some("healthcheck") => healthcheck(&env("PORT", "8080")),
        Some("oneshot") => {
            println!("demo-app {} one-shot job done", version());
            0
        }
        Some(other) => {
            eprintln!("demo-app: unknown subcommand {other:?} (serve, healthcheck, oneshot)");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("ok"), Ok(Mode::Ok));
        assert_eq!(parse_mode(""), Ok(Mode::Ok));
        assert_eq!(parse_mode("crash"), Ok(Mode::Crash));
        assert_eq!(parse_mode("never-healthy"), Ok(Mode::NeverHealthy));
        assert_eq!(parse_mode("slow:7"), Ok(Mode::Slow(7)));
        assert!(parse_mode("slow:x").is_err());
        assert!(parse_mode("sometimes").is_err());
    }

    #[test]
    fn subcommand_with_or_without_the_program_path() {
        let sub = |a: &[&str]| subcommand(a.iter().map(|s| s.to_string()));
        assert_eq!(sub(&[]), None);
        assert_eq!(sub(&["oneshot"]).as_deref(), Some("oneshot"));
        assert_eq!(sub(&["/demo-app", "oneshot"]).as_deref(), Some("oneshot"));
        assert_eq!(
            sub(&["/demo-app", "healthcheck"]).as_deref(),
            Some("healthcheck")
        );
        assert_eq!(sub(&["/demo-app"]), None);
    }

    #[test]
    fn health_follows_the_mode() {
        let s = Duration::from_secs;
        assert!(is_healthy(&Mode::Ok, s(0)));
        assert!(!is_healthy(&Mode::Slow(3), s(2)));
        assert!(is_healthy(&Mode::Slow(3), s(3)));
        assert!(!is_healthy(&Mode::NeverHealthy, s(3600)));
    }

    #[test]
    fn healthy_start_keeps_the_first_marker() {
        let d = std::env::temp_dir().join(format!("demo-app-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        prepare_data(&d, &Mode::Ok, "1.0.0+1.0.0").unwrap();
        prepare_data(&d, &Mode::Ok, "1.1.0+1.0.0").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("marker")).unwrap(),
            "created by 1.0.0+1.0.0\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("versions.log")).unwrap(),
            "1.0.0+1.0.0\n1.1.0+1.0.0\n"
        );
        prepare_data(&d, &Mode::NeverHealthy, "1.2.0+1.0.0").unwrap();
        assert!(
            std::fs::read_to_string(d.join("marker"))
                .unwrap()
                .contains("clobbered")
        );
        assert!(d.join("junk-1.2.0+1.0.0").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
