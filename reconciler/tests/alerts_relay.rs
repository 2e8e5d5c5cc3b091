//! The alert relay with real processes on a real filesystem: two `ci-warm alerts poll
//! --ack-stdin` processes racing over the same alerts, a poller killed with SIGKILL
//! mid-delivery, consumers killed with SIGKILL after reading some alerts, junk in the alerts
//! directory, and alert writers killed with SIGKILL mid-write.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        // Each poller's consumer acknowledges every alert it reads.
        let spawn = || {
            std::thread::spawn({
                let cfg = cfg.clone();
                move || acking_poll(&cfg, &[])
            })
        };
        let (a, b) = (spawn(), spawn());
        let mut per_poller = Vec::new();
        let mut got = Vec::new();
        for t in [a, b] {
            let ids = t.join().unwrap();
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
        assert!(acking_poll(&cfg, &[]).is_empty());
    }
    let seen = std::fs::read_dir(state_dir.join("alerts/seen"))
        .unwrap()
        .count();
    assert_eq!(seen, 600);
}

/// `ci-warm --config <cfg> <args>`, every stream piped (callers override what they need).
fn ci_warm_cmd(cfg: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ci-warm"));
    cmd.arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `ci-warm --json alerts poll --ack-stdin` (plus `extra`) with a consumer that
/// acknowledges every alert it reads; returns the ids in the order delivered. Fails when the
/// poller does not exit successfully.
fn acking_poll(cfg: &Path, extra: &[&str]) -> Vec<String> {
    let mut child = ci_warm_cmd(cfg, &["--json", "alerts", "poll", "--ack-stdin"])
        .args(extra)
        .spawn()
        .unwrap();
    let mut acks = child.stdin.take().unwrap();
    let mut ids = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let id = serde_json::from_str::<Alert>(&line.unwrap())
            .expect("one JSON alert per line")
            .id;
        writeln!(acks, "{id}").unwrap();
        acks.flush().unwrap();
        ids.push(id);
    }
    drop(acks);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ids
}

/// Waits for `child` to exit, at most `limit`; kills it and fails the test on expiry.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    for i in 0..20 {
        let (a, _) = alert::publish(
            &state_dir,
            Kind::RollbackFailed,
            NewAlert {
                app: format!("app{i}"),
                // One alert is more than a pipe buffer holds.
                message: "y".repeat(200_000),
                ..NewAlert::default()
            },
        )
        .unwrap();
        all.insert(a.id);
    }
    // Nobody reads this poller's stdout: it blocks inside the write of its first alert (the
    // kernel says so in /proc/<pid>/wchan), and is killed there.
    let mut child = ci_warm_cmd(&cfg, &["--json", "alerts", "poll", "--ack-stdin"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wchan = format!("/proc/{}/wchan", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("pipe_write")) {
        assert!(
            Instant::now() < deadline,
            "the poller never blocked in a pipe write"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        new_alert_files(&alerts_dir),
        20,
        "nothing archived: nothing was acknowledged"
    );

    let got: BTreeSet<String> = acking_poll(&cfg, &[]).into_iter().collect();
    assert_eq!(got, all, "no alert lost");
    assert_eq!(new_alert_files(&alerts_dir), 0);
}

/// Publishes `n` small alerts; returns their ids, oldest first.
fn publish_n(state_dir: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            alert::publish(
                state_dir,
                Kind::RollbackFailed,
                NewAlert {
                    app: format!("app{i}"),
                    message: format!("alert {i}"),
                    ..NewAlert::default()
                },
            )
            .unwrap()
            .0
            .id
        })
        .collect()
}

fn seen_files(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir.join("alerts/seen")).map_or(0, |rd| rd.count())
}

/// A shell consumer, as a builder loop is: reads `k` alerts (one JSON line each), appends each
/// to `log` and, with `ack`, writes its id back; then reads one more, logs it and is killed
/// with SIGKILL before it could acknowledge it.
fn killed_consumer(log: &Path, k: usize, ack: bool) -> String {
    let ack = if ack {
        r#"printf '%s\n' "$line" | sed -n 's/^{"schema":1,"id":"\([^"]*\)".*/\1/p'"#
    } else {
        ":"
    };
    format!(
        r#"for i in $(seq {k}); do IFS= read -r line || exit 3; printf '%s\n' "$line" >> {log}; {ack}; done
IFS= read -r line && printf '%s\n' "$line" >> {log}
kill -KILL $$"#,
        log = log.display()
    )
}

fn logged_ids(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).expect("whole lines").id)
        .collect()
}

#[test]
fn a_consumer_killed_after_reading_k_alerts_loses_none() {
    const N: usize = 50;
    const K: usize = 3;
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let state_dir = d.path().join("state");
    let alerts_dir = state_dir.join("alerts");
    let all: BTreeSet<String> = publish_n(&state_dir, N).into_iter().collect();

    // 1. `poll` into a pipe whose consumer dies after K alerts: the rest sat in the pipe's
    //    buffer, unread, so none of them may be archived.
    let log = d.path().join("pipe.log");
    let mut poller = ci_warm_cmd(&cfg, &["--json", "alerts", "poll"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut consumer = Command::new("bash")
        .args(["-c", &killed_consumer(&log, K, false)])
        .stdin(Stdio::from(poller.stdout.take().unwrap()))
        .spawn()
        .unwrap();
    wait_bounded(&mut consumer, Duration::from_secs(60), "the consumer");
    wait_bounded(&mut poller, Duration::from_secs(60), "the poller");
    assert_eq!(logged_ids(&log).len(), K + 1);
    assert_eq!(
        new_alert_files(&alerts_dir),
        N,
        "an alert written into the pipe is not an alert read: none archived"
    );
    assert_eq!(seen_files(&state_dir), 0);

    // 2. The builder loop's protocol: `poll --follow --ack-stdin`, the consumer acknowledging
    //    each alert by id; killed after acknowledging K and reading one more.
    let log = d.path().join("acked.log");
    let mut poller = ci_warm_cmd(
        &cfg,
        &["--json", "alerts", "poll", "--follow", "--ack-stdin"],
    )
    .spawn()
    .unwrap();
    let mut consumer = Command::new("bash")
        .args(["-c", &killed_consumer(&log, K, true)])
        .stdin(Stdio::from(poller.stdout.take().unwrap()))
        .stdout(Stdio::from(poller.stdin.take().unwrap()))
        .spawn()
        .unwrap();
    wait_bounded(&mut consumer, Duration::from_secs(60), "the consumer");
    // Its acknowledgements' pipe closed with it: the follower stops, it does not hang.
    let status = wait_bounded(&mut poller, Duration::from_secs(60), "the follower");
    assert!(
        !status.success(),
        "the follower reports the unacknowledged alert"
    );
    let first = logged_ids(&log);
    assert_eq!(first.len(), K + 1);
    assert_eq!(
        seen_files(&state_dir),
        K,
        "exactly the acknowledged ones are archived"
    );
    assert_eq!(new_alert_files(&alerts_dir), N - K);

    // The loop restarts: everything not acknowledged comes again, the one in flight included.
    let second = acking_poll(&cfg, &[]);
    assert_eq!(second.len(), N - K);
    assert_eq!(
        second[0], first[K],
        "the read-but-unacknowledged alert is delivered again"
    );
    let got: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(got, all, "no alert lost");
    assert_eq!(new_alert_files(&alerts_dir), 0);
    assert_eq!(seen_files(&state_dir), N);
}

#[test]
fn follow_without_acknowledgements_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let mut child = ci_warm_cmd(&cfg, &["--json", "alerts", "poll", "--follow"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30), "poll --follow");
    assert_eq!(status.code(), Some(2));
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ack-stdin"));
}

#[test]
fn junk_in_the_alerts_dir_is_skipped_once_never_fatal_never_blocking() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let state_dir = d.path().join("state");
    let dir = state_dir.join("alerts");
    let good = publish_n(&state_dir, 1);
    let fifo = dir.join("20260101T000000.000000001Z-fifo-rolled-back.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let subdir = dir.join("20260101T000000.000000002Z-dir-rolled-back.json");
    std::fs::create_dir(&subdir).unwrap();
    // A valid alert padded past the size limit: read whole, it would parse.
    let huge_id = "20260101T000000.000000003Z-huge-rolled-back";
    let huge = dir.join(format!("{huge_id}.json"));
    let mut text = serde_json::json!({
        "schema": 1, "id": huge_id, "time": "2026-01-01T00:00:00.000000003Z", "host": "h",
        "app": "huge", "recipe": null, "kind": "rolled-back", "message": "m",
        "last_good": null, "attempted": null, "recovered": true, "notes": null, "error": [],
    })
    .to_string();
    text.push_str(&" ".repeat((alert::MAX_ALERT_BYTES as usize) + 1));
    std::fs::write(&huge, text).unwrap();
    let bad = dir.join("20260101T000000.000000004Z-bad-rolled-back.json");
    std::fs::write(&bad, b"{\"schema\": 1").unwrap();

    let listed = {
        let mut child = ci_warm_cmd(&cfg, &["--json", "alerts", "list"])
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(60), "alerts list");
        assert!(status.success(), "list is not aborted by junk");
        let out = child.wait_with_output().unwrap();
        let alerts: Vec<Alert> = serde_json::from_slice(&out.stdout).unwrap();
        alerts.into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    assert_eq!(listed, good);

    // A follower over several rounds (a second alert appears after the first was delivered,
    // and is delivered too): each junk entry is warned about once, named.
    let mut child = ci_warm_cmd(
        &cfg,
        &[
            "--json",
            "alerts",
            "poll",
            "--follow",
            "--ack-stdin",
            "--interval-secs",
            "1",
        ],
    )
    .spawn()
    .unwrap();
    let mut acks = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut next = |what: &str| {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the follower delivered no {what} within 60 s"));
        let id = serde_json::from_str::<Alert>(&line).unwrap().id;
        writeln!(acks, "{id}").unwrap();
        acks.flush().unwrap();
        id
    };
    assert_eq!(next("first alert"), good[0]);
    let later = publish_n(&state_dir, 1);
    assert_eq!(next("second alert"), later[0]);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for p in [&fifo, &subdir, &huge, &bad] {
        let name = p.file_name().unwrap().to_string_lossy();
        assert_eq!(
            stderr.matches(name.as_ref()).count(),
            1,
            "{name} warned about once: {stderr}"
        );
        assert!(std::fs::symlink_metadata(p).is_ok(), "{name} left in place");
    }
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
