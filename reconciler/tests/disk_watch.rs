//! `ci-warm disk check` on a real, small tmpfs filled past its thresholds, and `ci-warm disk
//! prune` against a state dir with something of every kind to prune (and to keep).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A tmpfs mounted for the test and lazily unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn ci_warm(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ci-warm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "ci-warm {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn disk_alerts(state_dir: &Path) -> Vec<Value> {
    let mut v: Vec<Value> = std::fs::read_dir(state_dir.join("alerts"))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with("-disk-low.json"))
                .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|a| a["time"].as_str().unwrap().to_owned());
    v
}

/// Grows or shrinks the filler file so the filesystem has `percent` free.
fn fill_to(root: &Path, percent: f64) {
    let filler = root.join("filler");
    if let Ok(meta) = std::fs::metadata(&filler) {
        let (before, _) = ci_warm_snapshot::free_and_total(root).unwrap();
        std::fs::remove_file(&filler).unwrap();
        // The freed pages can show in statfs a moment after the unlink returns (seen with the
        // test files run side by side); sizing the new filler from a stale free count leaves
        // the filesystem far emptier than asked. Wait for the space to be back.
        let freed = before + meta.len().saturating_sub(2 * 4096);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while ci_warm_snapshot::free_and_total(root).unwrap().0 < freed {
            assert!(
                std::time::Instant::now() < deadline,
                "the removed filler's space never came back"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (free, total) = ci_warm_snapshot::free_and_total(root).unwrap();
    let want_free = (total as f64 * percent / 100.0) as u64;
    let bytes = free.saturating_sub(want_free);
    std::fs::write(&filler, vec![1u8; bytes as usize]).unwrap();
}

fn check(config: &Path) -> Value {
    let out = ci_warm(config, &["--json", "disk", "check"]);
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn disk_low_alerts_once_per_crossing_and_a_failing_hook_is_not_fatal() {
    let fs = Tmpfs::mount("8m");
    let state_dir = fs.path().join("state");
    let docker_root = fs.path().join("docker");
    std::fs::create_dir_all(&docker_root).unwrap();
    let hook_log = fs.path().join("hook.log");
    let config = fs.path().join("config.json");
    let json = serde_json::json!({
        "state_dir": state_dir,
        "disk": {"warn_free_percent": 30, "critical_free_percent": 10, "docker_root": docker_root},
        // Records that it ran, then fails: the check must succeed anyway.
        "alerts": {"on_alert": ["/bin/sh", "-c",
            format!("echo \"$1\" >> {}; exit 3", hook_log.display()), "hook"]},
    });
    std::fs::write(&config, json.to_string()).unwrap();

    let first = check(&config);
    assert_eq!(
        first.as_array().unwrap().len(),
        1,
        "one filesystem: {first}"
    );
    assert_eq!(first[0]["level"], "ok");
    assert_eq!(first[0]["paths"].as_array().unwrap().len(), 2);
    assert!(disk_alerts(&state_dir).is_empty());

    fill_to(fs.path(), 20.0);
    let out = ci_warm(&config, &["--json", "disk", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a failing on_alert hook is not fatal"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("on_alert hook failed"),
        "the hook's failure is logged"
    );
    let warn: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(warn[0]["level"], "warn");
    let alerts = disk_alerts(&state_dir);
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["schema"], 1);
    assert_eq!(a["kind"], "disk-low");
    assert_eq!(a["app"], "host");
    assert_eq!(a["disk"]["level"], "warn");
    assert_eq!(a["disk"]["threshold_percent"], 30);
    let pct = a["disk"]["free_percent"].as_f64().unwrap();
    assert!((10.0..30.0).contains(&pct), "{pct}");
    assert_eq!(warn[0]["alert"], a["id"]);
    let hook_ran = std::fs::read_to_string(&hook_log).unwrap();
    assert!(
        hook_ran.contains(a["id"].as_str().unwrap()),
        "the hook got the alert's path"
    );

    for _ in 0..3 {
        assert_eq!(check(&config)[0]["level"], "warn");
    }
    assert_eq!(
        disk_alerts(&state_dir).len(),
        1,
        "one alert per crossing, not per run"
    );

    fill_to(fs.path(), 5.0);
    assert_eq!(check(&config)[0]["level"], "critical");
    check(&config);
    let alerts = disk_alerts(&state_dir);
    assert_eq!(alerts.len(), 2, "crossing into critical is a new crossing");
    assert_eq!(alerts[1]["disk"]["level"], "critical");

    fill_to(fs.path(), 60.0);
    assert_eq!(check(&config)[0]["level"], "ok");
    fill_to(fs.path(), 20.0);
    check(&config);
    check(&config);
    assert_eq!(
        disk_alerts(&state_dir).len(),
        3,
        "after space came back, the next crossing alerts again"
    );
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap().lines().count(),
        3
    );
}

fn set_age(p: &Path, age: Duration) {
    let t = SystemTime::now() - age;
    std::fs::File::open(p).unwrap().set_modified(t).unwrap();
}

fn paths(v: &Value) -> Vec<(String, String)> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_owned(),
                i["what"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn prune_dry_run_lists_exactly_what_prune_removes() {
    let d = tempfile::tempdir().unwrap();
    let state_dir = d.path().join("state");
    let config = d.path().join("config.json");
    let json = serde_json::json!({
        "state_dir": state_dir,
        "disk": {"prune_seen_alerts_days": 30},
        "ci_domain": "ci.example.org",
        "apps": {"demo": {"recipe": "demo", "domain": "demo.example.org"}},
        "canonicals": {"nextcloud": {}},
    });
    std::fs::write(&config, json.to_string()).unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "data").unwrap();
    let take = |app: &str| {
        let app_dir = state_dir.join(app);
        ci_warm::live::snap::take(
            &app_dir,
            &[("data".into(), src.clone())],
            ci_warm::live::snap::Reserve {
                bytes: 0,
                percent: 0,
            },
        )
        .unwrap();
        ci_warm::upgrade::state::AppState::load(&app_dir)
            .unwrap()
            .save(&app_dir)
            .unwrap();
    };
    take("demo"); // configured: its only snapshot is never pruned
    take("gone"); // no longer configured: its snapshot goes
    take("warm-nextcloud"); // a configured canonical: its known-good is never pruned
    take("warm-gone"); // the canonical of a recipe no longer enrolled: its snapshot goes
    // A single-file write into an app dir not under the app's lock (the metrics' run counters):
    // pruned only once it is old.
    let fresh_counters_tmp = state_dir.join("demo/.tmp-counters.json.4243");
    let old_counters_tmp = state_dir.join("demo/.tmp-counters.json.4244");
    std::fs::write(&fresh_counters_tmp, "{").unwrap();
    std::fs::write(&old_counters_tmp, "{").unwrap();
    set_age(&old_counters_tmp, Duration::from_secs(7200));
    let demo_tmp = state_dir.join("demo/.tmp-4242-1");
    std::fs::create_dir_all(demo_tmp.join("volumes")).unwrap();
    let seen = state_dir.join("alerts/seen");
    std::fs::create_dir_all(&seen).unwrap();
    let old_seen = seen.join("20260101T000000Z-demo-rolled-back.json");
    let new_seen = seen.join("20261120T000000Z-demo-rolled-back.json");
    std::fs::write(&old_seen, "{}").unwrap();
    std::fs::write(&new_seen, "{}").unwrap();
    set_age(&old_seen, Duration::from_secs(40 * 86400));
    let old_tmp = state_dir.join("alerts/.tmp-alert.77");
    let fresh_tmp = state_dir.join("alerts/.tmp-alert.78");
    let old_top_tmp = state_dir.join(".tmp-registry.json.5");
    for p in [&old_tmp, &fresh_tmp, &old_top_tmp] {
        std::fs::write(p, "partial").unwrap();
    }
    set_age(&old_tmp, Duration::from_secs(7200));
    set_age(&old_top_tmp, Duration::from_secs(7200));

    let dry = ci_warm(&config, &["--json", "disk", "prune", "--dry-run"]);
    assert!(dry.status.success());
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let listed = paths(&dry);
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
    let mut expected = vec![
        (s(&old_tmp), "stale-tmp".to_owned()),
        (s(&old_seen), "seen-alert".to_owned()),
        (s(&old_top_tmp), "stale-tmp".to_owned()),
        (s(&demo_tmp), "stale-tmp".to_owned()),
        (s(&old_counters_tmp), "stale-tmp".to_owned()),
        (
            s(&state_dir.join("warm-gone/snapshot")),
            "unconfigured-snapshot".to_owned(),
        ),
        (
            s(&state_dir.join("gone/snapshot")),
            "unconfigured-snapshot".to_owned(),
        ),
    ];
    expected.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    for (p, _) in &listed {
        assert!(Path::new(p).exists(), "a dry run removes nothing: {p}");
    }

    // A busy app is skipped, never pruned under a running reconcile.
    {
        let _busy =
            ci_warm::platform::lock::acquire(&state_dir.join("demo"), "demo", false).unwrap();
        let out = ci_warm(&config, &["--json", "disk", "prune", "--dry-run"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["skipped"][0]["app"], "demo");
        assert!(!paths(&v).iter().any(|(p, _)| p == &s(&demo_tmp)));
    }

    let real = ci_warm(&config, &["--json", "disk", "prune"]);
    assert!(real.status.success());
    let real: Value = serde_json::from_slice(&real.stdout).unwrap();
    assert_eq!(
        paths(&real),
        listed,
        "prune removes exactly what the dry run listed"
    );
    for (p, _) in &listed {
        assert!(!Path::new(p).exists(), "removed: {p}");
    }
    for kept in [
        state_dir.join("demo/snapshot/manifest.json"),
        state_dir.join("warm-nextcloud/snapshot/manifest.json"),
        state_dir.join("gone/state.json"),
        fresh_counters_tmp,
        new_seen,
        fresh_tmp,
    ] {
        assert!(kept.exists(), "kept: {}", kept.display());
    }
    assert!(
        !std::fs::read_dir(state_dir.join("gone")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp-")),
        "the moved-aside snapshot is gone too"
    );
    let again = ci_warm(&config, &["--json", "disk", "prune", "--dry-run"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(paths(&again).is_empty(), "nothing left to prune");
}

#[test]
fn prune_never_follows_a_symlink_out_of_the_state_dir() {
    let d = tempfile::tempdir().unwrap();
    let state_dir = d.path().join("state");
    let config = d.path().join("config.json");
    let json = serde_json::json!({
        "state_dir": state_dir,
        "disk": {"prune_seen_alerts_days": 0},
        "apps": {},
    });
    std::fs::write(&config, json.to_string()).unwrap();
    // Somewhere else on the host, looking like an app directory and like alerts/seen.
    let outside = d.path().join("outside");
    for dir in ["snapshot/volumes", ".tmp-4242-1", "seen"] {
        std::fs::create_dir_all(outside.join(dir)).unwrap();
    }
    std::fs::write(outside.join("state.json"), "{}").unwrap();
    std::fs::write(outside.join("snapshot/manifest.json"), "{}").unwrap();
    std::fs::write(
        outside.join("seen/20260101T000000Z-x-rolled-back.json"),
        "{}",
    )
    .unwrap();
    std::fs::create_dir_all(state_dir.join("alerts")).unwrap();
    std::os::unix::fs::symlink(&outside, state_dir.join("ghost")).unwrap();
    std::os::unix::fs::symlink(outside.join("seen"), state_dir.join("alerts/seen")).unwrap();

    let dry = ci_warm(&config, &["--json", "disk", "prune", "--dry-run"]);
    assert!(dry.status.success());
    let real = ci_warm(&config, &["--json", "disk", "prune"]);
    assert!(real.status.success());
    for out in [&dry, &real] {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["items"],
            serde_json::json!([]),
            "nothing through a symlink"
        );
        let skipped = v["skipped"].to_string();
        assert!(
            skipped.contains("ghost") && skipped.contains("alerts/seen"),
            "{skipped}"
        );
        assert!(skipped.contains("symlink"), "{skipped}");
    }
    let stderr = String::from_utf8_lossy(&real.stderr);
    assert!(stderr.contains("symlink"), "warned: {stderr}");
    for p in [
        "snapshot/manifest.json",
        ".tmp-4242-1",
        "state.json",
        "seen/20260101T000000Z-x-rolled-back.json",
    ] {
        assert!(
            outside.join(p).exists(),
            "{p} outside the state dir was touched"
        );
    }
    assert!(
        !outside.join("lock").exists(),
        "not even a lock file out there"
    );
}
