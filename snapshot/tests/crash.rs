//! Crash safety: a take killed with SIGKILL at a random moment leaves the published snapshot
//! whole (the old one or the new one, verifying clean), and the next take sweeps its remains.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ci_warm_snapshot::{Manifest, take, verify};
use common::*;

/// The `snapshot-cli` example: built by `cargo test` next to the test binary, else built here.
fn cli() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let bin = profile_dir.join("examples/snapshot-cli");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target_dir = profile_dir.parent().unwrap();
        let st = Command::new(cargo)
            .args([
                "build",
                "-p",
                "ci-warm-snapshot",
                "--example",
                "snapshot-cli",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "building the snapshot-cli example");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

fn build(src: &Path, rng: &mut Rng) {
    for i in 0..2000 {
        let dir = src.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:04}")), rng.bytes(200 + (i % 50) * 40)).unwrap();
    }
    std::fs::write(src.join("big.bin"), rng.bytes(20 << 20)).unwrap();
    std::fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
    chmod(&src.join("tool"), 0o4755);
    std::fs::hard_link(src.join("tool"), src.join("d00/tool-link")).unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
}

/// Rewrites about 5% of the small files and a block of the big one, adds and removes a file.
fn modify(src: &Path, rng: &mut Rng, round: usize) {
    for _ in 0..100 {
        let i = rng.below(2000) as usize;
        let p = src.join(format!("d{:02}/f{i:04}", i % 40));
        if p.exists() {
            std::fs::write(&p, rng.bytes(300)).unwrap();
        }
    }
    let big = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .unwrap();
    big.write_all_at(&rng.bytes(4096), rng.below(20 << 20) & !4095)
        .unwrap();
    std::fs::write(src.join(format!("d01/new{round}")), rng.bytes(1000)).unwrap();
    if round > 0 {
        let _ = std::fs::remove_file(src.join(format!("d01/new{}", round - 1)));
    }
}

fn stale(parent: &Path) -> Vec<String> {
    names(parent)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

#[test]
fn a_killed_take_never_damages_the_published_snapshot() {
    let bin = cli();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let app = d.path().join("app");
    let snap = app.join("snapshot");
    let mut rng = Rng(0xc0ff_ee00_1234_5678 ^ std::process::id() as u64);
    build(&src, &mut rng);
    take(&req(&app, "data", &src)).unwrap();

    // Kill instants are drawn over 1.5 times how long one take of a round's changes lasts here, so they
    // land all through a take, publish included: a fixed window lets a fast machine finish
    // most takes before the kill, proving nothing.
    modify(&src, &mut rng, 0);
    let timed = Instant::now();
    let st = Command::new(&bin)
        .arg("take")
        .arg(&src)
        .arg(&app)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let window_ms = (timed.elapsed().as_millis() as u64 * 3 / 2).max(20);
    let mut digest = Manifest::load(&snap).unwrap().digest;

    let (mut old, mut new, mut stale_seen) = (0, 0, 0);
    let started = Instant::now();
    for round in 1..=20 {
        modify(&src, &mut rng, round);
        let mut child = Command::new(&bin)
            .arg("take")
            .arg(&src)
            .arg(&app)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(window_ms + 1)));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();

        // The published snapshot is whole: the previous one, or a complete new one.
        let report = verify(&snap).unwrap();
        assert!(
            report.problems.is_empty(),
            "round {round}: {:?}",
            report.problems
        );
        if !stale(&app).is_empty() {
            stale_seen += 1;
        }
        let now = Manifest::load(&snap).unwrap().digest;
        if now == digest {
            old += 1;
        } else {
            new += 1;
            // Killed while removing the previous snapshot, whose inodes the new one shares:
            // link counts are right only once the remains are swept.
            ci_warm_snapshot::sweep_stale(&app).unwrap();
            assert_same(&src, &snap.join("volumes/data"), &[]);
        }

        // The next take succeeds and sweeps what the killed one left.
        take(&req(&app, "data", &src)).unwrap();
        assert_eq!(stale(&app), Vec::<String>::new(), "round {round}");
        digest = Manifest::load(&snap).unwrap().digest;
    }
    let report = verify(&snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_same(&src, &snap.join("volumes/data"), &[]);
    eprintln!(
        "20 kills within {window_ms} ms of a start, in {:?}: {old} left the old snapshot, {new} had published a new one, {stale_seen} left a .tmp-* dir",
        started.elapsed()
    );
    // Most kills must land mid-take, or the test proves nothing.
    assert!(stale_seen >= 5, "only {stale_seen} kills landed mid-take");
}
