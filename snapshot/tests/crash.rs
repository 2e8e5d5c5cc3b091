//! Crash safety: a take killed with SIGKILL at any point, from its first copied file to the
//! removal of the previous snapshot, leaves the published snapshot whole (exactly the old one
//! before the exchange, exactly the new one after it, verifying clean), and the next take
//! sweeps its remains.
//!
//! The kill points are chosen, not drawn: `snapshot-cli take --pause-at POINT` stops the take
//! inside the engine's progress call for that point and says so, and only then is it killed.
//! A point that is never reached fails the test.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ci_warm_snapshot::{Manifest, take, verify};
use common::*;

/// The `snapshot-cli` example, built now: `cargo test --test crash` does not build examples, and a stale
/// one would not know `--pause-at`.
fn cli() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let bin = profile_dir.join("examples/snapshot-cli");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = profile_dir.parent().unwrap();
    let st = Command::new(cargo)
        .args([
            "build",
            "--quiet",
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

fn stale(parent: &Path) -> Vec<PathBuf> {
    names(parent)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .map(|n| parent.join(n))
        .collect()
}

/// Regular files of `root` counted once per inode: the files a take copies or reuses, each
/// reported once to its progress.
fn files(root: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for d in std::fs::read_dir(&dir).unwrap() {
            let d = d.unwrap();
            let md = d.path().symlink_metadata().unwrap();
            if md.is_dir() {
                stack.push(d.path());
            } else if md.is_file() {
                seen.insert(md.ino());
            }
        }
    }
    seen.len() as u64
}

/// Runs `snapshot-cli take --pause-at point` until it reports it stopped there, then
/// SIGKILLs it. Panics, naming the point, if the take ends without reaching it.
fn take_killed_at(bin: &Path, src: &Path, app: &Path, point: &str, expected_files: u64) {
    let mut child = Command::new(bin)
        .arg("take")
        .arg(src)
        .arg(app)
        .args(["--pause-at", point])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    let mut paused = false;
    for line in lines {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("planned ") {
            assert_eq!(
                n.parse::<u64>().unwrap(),
                expected_files,
                "{point}: planned"
            );
        }
        paused = line == format!("paused {point}");
        said.push(line);
        if paused {
            break;
        }
    }
    if !paused {
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!(
            "kill point {point} was never reached: the take ended ({status}) first; stdout {said:?}, stderr {err}"
        );
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{point}: {status}");
}

#[test]
fn a_take_killed_at_each_chosen_point_leaves_the_old_or_the_new_snapshot_whole() {
    let bin = cli();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let app = d.path().join("app");
    let snap = app.join("snapshot");
    let mut rng = Rng(0xc0ff_ee00_1234_5678);
    build(&src, &mut rng);
    take(&req(&app, "data", &src)).unwrap();
    let mut digest = Manifest::load(&snap).unwrap().digest;

    let n = files(&src);
    // From the first file copied to the last, then every step of publishing.
    let points: Vec<String> = [1, 2, n / 3, 2 * n / 3, n - 1, n]
        .iter()
        .map(|k| format!("entries:{k}"))
        .chain(
            [
                "tree-built",
                "manifest-written",
                "flushed",
                "exchanged",
                "removing-previous",
                "published",
            ]
            .iter()
            .map(|p| format!("phase:{p}")),
        )
        .collect();

    let started = Instant::now();
    for (round, point) in points.iter().enumerate() {
        modify(&src, &mut rng, round);
        let expected_files = files(&src);
        take_killed_at(&bin, &src, &app, point, expected_files);

        let report = verify(&snap).unwrap();
        assert!(report.problems.is_empty(), "{point}: {:?}", report.problems);
        let now = Manifest::load(&snap).unwrap().digest;
        let remains = stale(&app);
        let exchanged = [
            "phase:exchanged",
            "phase:removing-previous",
            "phase:published",
        ]
        .contains(&point.as_str());
        if !exchanged {
            assert_eq!(now, digest, "{point}: the old snapshot stays published");
            assert_eq!(
                remains.len(),
                1,
                "{point}: the new tree is left: {remains:?}"
            );
            let tmp = &remains[0];
            let has_manifest = tmp.join("manifest.json").exists();
            if let Some(k) = point.strip_prefix("entries:") {
                assert!(
                    !has_manifest,
                    "{point}: no manifest before every file is in"
                );
                let k: u64 = k.parse().unwrap();
                let copied = files(&tmp.join("volumes/data"));
                assert!(copied >= k, "{point}: only {copied} files in the tree");
            } else if point == "phase:tree-built" {
                assert!(!has_manifest, "{point}");
                assert_eq!(files(&tmp.join("volumes/data")), expected_files, "{point}");
            } else {
                // The new tree is whole, only not published.
                let r = verify(tmp).unwrap();
                assert!(r.problems.is_empty(), "{point}: {:?}", r.problems);
                assert_ne!(Manifest::load(tmp).unwrap().digest, digest, "{point}");
            }
        } else {
            assert_ne!(now, digest, "{point}: the new snapshot is published");
            match point.as_str() {
                "phase:exchanged" => {
                    assert_eq!(remains.len(), 1, "{point}: {remains:?}");
                    assert_eq!(
                        Manifest::load(&remains[0]).unwrap().digest,
                        digest,
                        "{point}: the previous snapshot awaits removal, untouched"
                    );
                }
                "phase:removing-previous" => {
                    assert_eq!(remains.len(), 1, "{point}: {remains:?}");
                }
                _ => assert_eq!(remains, Vec::<PathBuf>::new(), "{point}"),
            }
            // The new snapshot shares inodes with the remains of the old one: link counts
            // are right only once those are swept.
            ci_warm_snapshot::sweep_stale(&app).unwrap();
            assert_same_snapshot(&src, &snap.join("volumes/data"), &[]);
        }

        // The next take succeeds and sweeps what the killed one left.
        take(&req(&app, "data", &src)).unwrap();
        assert_eq!(stale(&app), Vec::<PathBuf>::new(), "{point}");
        let report = verify(&snap).unwrap();
        assert!(report.problems.is_empty(), "{point}: {:?}", report.problems);
        assert_same_snapshot(&src, &snap.join("volumes/data"), &[]);
        digest = Manifest::load(&snap).unwrap().digest;
    }
    eprintln!(
        "{} kill points, each reached and killed, in {:?}",
        points.len(),
        started.elapsed()
    );
}
