//! The alert relay with real processes on a real filesystem: two `ci-warm alerts poll`
//! processes racing over the same alerts, a poller killed with SIGKILL mid-delivery, and alert
//! writers killed with SIGKILL mid-write.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ci_warm::upgrade::alert::{self, Alert, Kind, NewAlert};

const WRITER_ENV: &str = "CI_WARM_TEST_ALERT_WRITER";

fn config(dir: &Path) -> PathBuf {
    let state_dir = dir.join("state");
    let path = dir.join("config.json");
    let json = serde_json::json!({ "state_dir": state_dir });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn big_alert(app: &str) -> NewAlert {
    NewAlert {
        app: app.into(),
        // Megabytes, so a writer spends long enough inside write(2) and fsync(2) to be killed
        // there.
        message: "x".repeat(4 << 20),
        recovered: true,
        ..NewAlert::default()
    }
}

#[test]
fn two_poller_processes_deliver_each_of_200_alerts_exactly_once() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let state_dir = d.path().join("state");
    for round in 0..3 {
        let mut all = BTreeSet::new();
        for i in 0..200 {
            let (a, _) = alert::publish(
                &state_dir,
                Kind::RolledBack,
                NewAlert {
                    app: format!("app{i}"),
                    message: format!("round {round} alert {i}"),
                    ..NewAlert::default()
                },
            )
            .unwrap();
            all.insert(a.id);
        }
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_ci-warm"))
                .arg("--config")
                .arg(&cfg)
                .args(["--json", "alerts", "poll"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let mut per_poller = Vec::new();
        let mut got = Vec::new();
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ids: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<Alert>(l)
                        .expect("one JSON alert per line")
                        .id
                })
                .collect();
            per_poller.push(ids.len());
            got.extend(ids);
        }
        eprintln!("round {round}: delivered per poller {per_poller:?}");
        assert_eq!(got.len(), 200, "no alert delivered twice: {per_poller:?}");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), all);
        let new = std::fs::read_dir(state_dir.join("alerts"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count();
        assert_eq!(new, 0, "every delivered alert is archived");
        // A third poll finds nothing.
        let out = spawn().wait_with_output().unwrap();
        assert!(out.status.success() && out.stdout.is_empty());
    }
    let seen = std::fs::read_dir(state_dir.join("alerts/seen"))
        .unwrap()
        .count();
    assert_eq!(seen, 600);
}

fn run(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ci-warm"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn list_and_ack_on_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let state_dir = d.path().join("state");
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|app| {
            let new = NewAlert {
                app: (*app).into(),
                message: format!("{app} rolled back"),
                recovered: true,
                ..NewAlert::default()
            };
            alert::publish(&state_dir, Kind::RolledBack, new)
                .unwrap()
                .0
                .id
        })
        .collect();
    let listed = run(&cfg, &["--json", "alerts", "list"]);
    assert!(listed.status.success());
    let listed: Vec<Alert> = serde_json::from_slice(&listed.stdout).unwrap();
    let listed: Vec<String> = listed.into_iter().map(|a| a.id).collect();
    assert_eq!(listed, ids, "oldest first");

    // One known id (with its .json), one unknown: the known one is acknowledged, exit 2.
    let with_json = format!("{}.json", ids[0]);
    let out = run(
        &cfg,
        &[
            "alerts",
            "ack",
            &with_json,
            "20260101T000000Z-x-rolled-back",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alert"));
    assert!(state_dir.join("alerts/seen").join(&with_json).exists());
    let out = run(&cfg, &["alerts", "ack", "../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2), "a path is not an id");

    let out = run(&cfg, &["--json", "alerts", "ack", &ids[0]]);
    assert!(out.status.success());
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again, serde_json::json!([{"id": ids[0], "moved": false}]));

    let out = run(&cfg, &["--json", "alerts", "ack", "--all"]);
    assert!(out.status.success());
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        all,
        serde_json::json!([{"id": ids[1], "moved": true}, {"id": ids[2], "moved": true}])
    );
    let out = run(&cfg, &["alerts", "list"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no new alerts\n");
    assert_eq!(
        std::fs::read_dir(state_dir.join("alerts/seen"))
            .unwrap()
            .count(),
        3
    );
}

fn new_alert_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

#[test]
fn a_poller_killed_mid_delivery_loses_no_alert() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let state_dir = d.path().join("state");
    let alerts_dir = state_dir.join("alerts");
    let mut all = BTreeSet::new();
    for i in 0..200 {
        let (a, _) = alert::publish(
            &state_dir,
            Kind::RollbackFailed,
            NewAlert {
                app: format!("app{i}"),
                // 200 of these are more than any pipe buffer holds.
                message: "y".repeat(8000),
                ..NewAlert::default()
            },
        )
        .unwrap();
        all.insert(a.id);
    }
    let poll = || {
        Command::new(env!("CARGO_BIN_EXE_ci-warm"))
            .arg("--config")
            .arg(&cfg)
            .args(["--json", "alerts", "poll"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Nobody reads this poller's stdout: the pipe fills and it blocks inside a write, in the
    // middle of delivering one alert. Then it is killed.
    let mut child = poll();
    let started = std::time::Instant::now();
    let mut last = (new_alert_files(&alerts_dir), std::time::Instant::now());
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the poller never blocked"
        );
        std::thread::sleep(Duration::from_millis(50));
        let n = new_alert_files(&alerts_dir);
        if n != last.0 {
            last = (n, std::time::Instant::now());
        } else if n < 200 && last.1.elapsed() > Duration::from_millis(700) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    // Whole lines only: the alert being written when the kill came is cut off.
    let first: Vec<String> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| {
            serde_json::from_str::<Alert>(l)
                .expect("a whole line is a whole alert")
                .id
        })
        .collect();
    assert!(
        !first.is_empty() && first.len() < 200,
        "killed mid-way: {}",
        first.len()
    );
    eprintln!(
        "killed after {} whole alerts, {} bytes of the next one",
        first.len(),
        text.len() - text.rfind('\n').map_or(0, |i| i + 1)
    );
    assert_eq!(
        new_alert_files(&alerts_dir),
        200 - first.len(),
        "only delivered alerts were archived; the one cut off is still new"
    );

    let out = poll().wait_with_output().unwrap();
    assert!(out.status.success());
    let second: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap().id)
        .collect();
    let got: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(got, all, "no alert lost");
    assert_eq!(
        first.len() + second.len(),
        200,
        "none delivered twice whole"
    );
    assert_eq!(new_alert_files(&alerts_dir), 0);
}

/// Every `*.json` in the alerts directory must parse whole; returns (alerts, leftovers).
fn check_visible(dir: &Path) -> (usize, usize) {
    let (mut alerts, mut tmp) = (0, 0);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            tmp += 1;
        } else if name.ends_with(".json") {
            let bytes = std::fs::read(e.path()).unwrap();
            let a: Alert = serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("torn alert {name} ({} bytes): {err}", bytes.len()));
            assert_eq!(format!("{}.json", a.id), name);
            assert_eq!(a.message.len(), 4 << 20);
            alerts += 1;
        }
    }
    (alerts, tmp)
}

#[test]
fn a_writer_killed_mid_write_never_leaves_a_visible_torn_alert() {
    let d = tempfile::tempdir().unwrap();
    let alerts_dir = alert::alerts_dir(d.path());
    let mut caught_mid_write = 0;
    for round in 0u64..30 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "alert_writer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let tmp = alerts_dir.join(format!(".tmp-alert.{}", child.id()));
        let started = std::time::Instant::now();
        if round % 3 == 0 {
            // Spread over the writer's life: start-up, between alerts, inside a write.
            let until = started + Duration::from_millis(20 + (round * 37) % 300);
            while std::time::Instant::now() < until {
                check_visible(&alerts_dir);
                std::thread::sleep(Duration::from_millis(2));
            }
        } else {
            // Kill the moment its temporary file exists: the writer is inside write/fsync/link.
            while !tmp.exists() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the writer never started an alert"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if tmp.exists() {
            caught_mid_write += 1;
        }
        check_visible(&alerts_dir);
    }
    let (alerts, leftovers) = check_visible(&alerts_dir);
    eprintln!(
        "30 writers killed, {caught_mid_write} inside a write: {alerts} whole alerts, \
         {leftovers} in-progress leftovers"
    );
    assert!(alerts > 0, "the writers published something");
    assert!(
        caught_mid_write >= 5,
        "writers were killed inside a write (else the test proved nothing)"
    );
    // Readers skip the leftovers: the relay lists exactly the whole alerts.
    assert_eq!(ci_warm::ops::relay::list(d.path()).unwrap().len(), alerts);
}

/// The writer process of the test above when started with `CI_WARM_TEST_ALERT_WRITER`
/// (it then publishes big alerts until it is killed); run on its own, it checks that one big
/// alert round-trips.
#[test]
fn alert_writer_process() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        loop {
            alert::publish(Path::new(&dir), Kind::RolledBack, big_alert("writer")).unwrap();
        }
    }
    let d = tempfile::tempdir().unwrap();
    let (a, path) = alert::publish(d.path(), Kind::RolledBack, big_alert("writer")).unwrap();
    let back: Alert = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(back, a);
}
