//! The demo app as a process, outside Docker: endpoints, modes, the healthcheck subcommand and
//! a prompt exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_demo-app");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("demo-app-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

struct App {
    child: Child,
    port: u16,
}

impl App {
    /// Starts the app on a port the kernel picks (`PORT=0`) and reads the port from the app's
    /// own `listening on` line: no port is chosen here, so none can be taken in between.
    fn start(mode: &str, data: &Path) -> App {
        let mut child = Command::new(BIN)
            .env("DEMO_MODE", mode)
            .env("DEMO_VERSION", "9.9.9")
            .env("PORT", "0")
            .env("DATA_DIR", data)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("demo-app exited before it listened")
                .unwrap();
            eprintln!("{line}");
            if let Some(addr) = line.strip_prefix("demo-app: listening on ") {
                break addr.parse::<std::net::SocketAddr>().unwrap().port();
            }
        };
        // Keep the pipe drained (and the app's log visible) for the rest of its life.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
        App { child, port }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        let status = r.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, r.split_once("\r\n\r\n")?.1.to_owned()))
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get("/version").is_none() {
            // An app that could not bind its port must not pass for one that answers there.
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "demo-app exited before it listened"
            );
            assert!(Instant::now() < deadline, "demo-app did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn healthcheck(&self) -> bool {
        Command::new(BIN)
            .arg("healthcheck")
            .env("PORT", self.port.to_string())
            .status()
            .unwrap()
            .success()
    }

    fn terminate(mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = start + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("demo-app ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn ok_mode_serves_marker_and_version_and_exits_on_sigterm() {
    let data = scratch("ok");
    let mut app = App::start("ok", &data);
    app.wait_up();
    assert_eq!(app.get("/health"), Some((200, "ok\n".into())));
    assert_eq!(app.get("/version"), Some((200, "9.9.9\n".into())));
    assert_eq!(app.get("/marker"), Some((200, "created by 9.9.9\n".into())));
    assert_eq!(app.get("/nope").map(|r| r.0), Some(404));
    assert!(app.healthcheck());
    let (status, took) = app.terminate();
    assert_eq!(status.code(), Some(0));
    // Docker's stop grace period: an app slower than that is SIGKILLed by every `stack rm`.
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert_eq!(
        std::fs::read_to_string(data.join("versions.log")).unwrap(),
        "9.9.9\n"
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn never_healthy_mode_answers_503_and_clobbers_the_data() {
    let data = scratch("never");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("marker"), "created by 1.0.0\n").unwrap();
    let mut app = App::start("never-healthy", &data);
    app.wait_up();
    assert_eq!(app.get("/health").map(|r| r.0), Some(503));
    assert!(!app.healthcheck());
    let marker = std::fs::read_to_string(data.join("marker")).unwrap();
    assert!(marker.contains("clobbered"), "{marker}");
    assert!(data.join("junk-9.9.9").exists());
    app.terminate();
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn slow_mode_becomes_healthy_later() {
    let data = scratch("slow");
    // The app's clock starts after `spawned`: an answer received less than 1 s after it is
    // certainly from before the app turned healthy, and a 200 certainly not. Nothing here
    // depends on how fast the app starts or answers.
    let spawned = Instant::now();
    let mut app = App::start("slow:1", &data);
    app.wait_up();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = app.get("/health").map(|r| r.0);
        let since = spawned.elapsed();
        if status == Some(200) {
            assert!(since >= Duration::from_secs(1), "healthy after {since:?}");
            break;
        }
        assert_eq!(status, Some(503), "after {since:?}");
        assert!(Instant::now() < deadline, "never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    app.terminate();
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn crash_mode_exits_1_and_oneshot_exits_0() {
    let data = scratch("crash");
    let status = Command::new(BIN)
        .env("DEMO_MODE", "crash")
        .env("DATA_DIR", &data)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(!data.exists(), "a crash must not touch the data dir");
    for args in [&["oneshot"][..], &["/demo-app", "oneshot"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("one-shot job done"));
    }
    let bad = Command::new(BIN).env("DEMO_MODE", "sometimes").status();
    assert_eq!(bad.unwrap().code(), Some(2));
}
