//! Corruption, incremental reuse, free-space refusal and stale in-progress sweeping.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ci_warm_snapshot::{Error, Reserve, TakeRequest, restore, take, verify};

fn req(parent: &Path, src: &Path) -> TakeRequest {
    TakeRequest {
        parent: parent.to_owned(),
        sources: vec![("data".into(), src.to_owned())],
        reserve: Reserve::default(),
    }
}

fn many_files(src: &Path, n: usize) {
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..n {
        std::fs::write(
            src.join(format!("d/f{i:04}")),
            format!("file {i}\n").repeat(50),
        )
        .unwrap();
    }
}

fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
                out.push((p, vec![], md.mode()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default(), md.mode()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn verify_names_each_corruption_and_restore_refuses() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    many_files(&src, 10);
    take(&req(&d.path().join("app"), &src)).unwrap();
    let snap = d.path().join("app/snapshot");
    assert!(verify(&snap).unwrap().problems.is_empty());

    // One flipped byte, one changed mode, one stray file.
    let f3 = snap.join("volumes/data/d/f0003");
    let mut bytes = std::fs::read(&f3).unwrap();
    bytes[0] ^= 1;
    let mtime = std::fs::metadata(&f3).unwrap().modified().unwrap();
    std::fs::write(&f3, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f3)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::set_permissions(
        snap.join("volumes/data/d/f0005"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(snap.join("volumes/data/stray"), "x").unwrap();
    let problems = verify(&snap).unwrap().problems;
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.starts_with("data/d/f0003: sha256 mismatch")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("data/d/f0005: mode is 600")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("data/stray: not in the manifest")),
        "{text:?}"
    );

    let target = d.path().join("target");
    many_files(&target, 3);
    std::fs::write(target.join("live"), "current data").unwrap();
    let before = listing(&target);
    match restore(&snap, "data", &target) {
        // The stray file also changed its directory's mtime: a fourth problem.
        Err(Error::Corrupt { problems, .. }) => assert_eq!(problems.len(), 4, "{problems:?}"),
        other => panic!("restore of a corrupt snapshot must be refused, got {other:?}"),
    }
    assert_eq!(listing(&target), before, "the target is untouched");
}

#[test]
fn tampered_manifest_is_caught() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    many_files(&src, 3);
    take(&req(&d.path().join("app"), &src)).unwrap();
    let m = d.path().join("app/snapshot/manifest.json");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("\"mode\":420", "\"mode\":438");
    std::fs::write(&m, text).unwrap();
    let problems = verify(&d.path().join("app/snapshot")).unwrap().problems;
    assert!(
        problems.iter().any(|p| p.path == "manifest.json"),
        "{problems:?}"
    );
}

#[test]
fn re_take_reuses_unchanged_files_by_hardlink() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    many_files(&src, 200);
    let app = d.path().join("app");
    let first = take(&req(&app, &src)).unwrap();
    assert_eq!(first.files, 200);
    let kept = app.join("snapshot/volumes/data/d/f0100");
    let ino = std::fs::metadata(&kept).unwrap().ino();

    std::fs::write(src.join("d/f0007"), "changed\n").unwrap();
    std::fs::remove_file(src.join("d/f0008")).unwrap();
    std::fs::write(src.join("d/new"), "new\n").unwrap();
    let second = take(&req(&app, &src)).unwrap();
    assert_eq!(second.files, 200);
    assert_eq!(
        second.bytes_copied,
        ("changed\n".len() + "new\n".len()) as u64
    );
    assert_eq!(
        std::fs::metadata(&kept).unwrap().ino(),
        ino,
        "unchanged file reused, not copied"
    );
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());
    let target = d.path().join("t");
    restore(&app.join("snapshot"), "data", &target).unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("d/f0007")).unwrap(),
        "changed\n"
    );
    assert!(!target.join("d/f0008").exists());
}

#[test]
fn stale_in_progress_snapshots_are_swept() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    many_files(&src, 3);
    let app = d.path().join("app");
    std::fs::create_dir_all(app.join(".tmp-999-1/volumes/data")).unwrap();
    take(&req(&app, &src)).unwrap();
    let names: Vec<String> = std::fs::read_dir(&app)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["snapshot"]);
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_snapshot_that_would_fill_the_disk_is_refused_up_front() {
    let d = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&d.path().join("small"), "8m");
    let app = fs.0.join("app");
    let small = d.path().join("small-src");
    many_files(&small, 5);
    take(&req(&app, &small)).unwrap();

    let big = d.path().join("big-src");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..4 {
        std::fs::write(big.join(format!("blob{i}")), vec![i as u8 + 1; 5 << 20]).unwrap();
    }
    match take(&req(&app, &big)) {
        Err(Error::NoSpace { needed, free, .. }) => assert!(needed > free, "{needed} <= {free}"),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    let names: Vec<String> = std::fs::read_dir(&app)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["snapshot"],
        "nothing half-written beside the previous snapshot"
    );
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());

    // A reserve is honoured too: 1 MiB of data with 7.5 MiB kept free does not fit in 8 MiB.
    let mid = d.path().join("mid-src");
    std::fs::create_dir_all(&mid).unwrap();
    std::fs::write(mid.join("blob"), vec![9u8; 1 << 20]).unwrap();
    let mut r = req(&app, &mid);
    r.reserve = Reserve {
        bytes: 7_500_000,
        percent: 0,
    };
    assert!(matches!(take(&r), Err(Error::NoSpace { .. })));
    drop(fs);
}
