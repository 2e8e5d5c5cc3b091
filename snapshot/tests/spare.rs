//! The replaced snapshot kept as the next take's workspace (`snapshot/.cache/spare`): it pins
//! no data of its own, a take built from it is exact and touches only what changed, and a
//! spare altered by anyone is neither followed nor trusted.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ci_warm_snapshot::{take, verify};
use common::*;

fn tree(src: &Path, rng: &mut Rng) {
    for i in 0..200 {
        let dir = src.join(format!("d{}/e{}", i % 5, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:03}")), rng.bytes(100 + i * 13)).unwrap();
    }
    std::fs::hard_link(src.join("d0/e0/f000"), src.join("d1/link")).unwrap();
    std::os::unix::fs::symlink("d0/e0/f000", src.join("sym")).unwrap();
}

/// Every regular file below `dir`, as (relative path, inode).
fn inodes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out: Vec<_> = lstat_all(dir)
        .into_iter()
        .filter(|(_, md)| md.is_file())
        .map(|(p, md)| (p.strip_prefix(dir).unwrap().to_owned(), md.ino()))
        .collect();
    out.sort();
    out
}

/// A source, its first take and a second one after a change: the first snapshot is now the
/// second one's spare.
fn with_spare(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    let mut rng = Rng(seed);
    tree(&src, &mut rng);
    take(&req(&app, "data", &src)).unwrap();
    std::fs::write(src.join("d0/e1/f010"), b"a change").unwrap();
    take(&req(&app, "data", &src)).unwrap();
    (d, src, app)
}

fn check(src: &Path, app: &Path) {
    let snap = app.join("snapshot");
    let report = verify(&snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_same_snapshot(src, &snap.join("volumes/data"), &[]);
    assert_rsync_clean(src, &snap.join("volumes/data"), &[]);
}

#[test]
fn the_replaced_snapshot_becomes_the_workspace_and_pins_no_data() {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    let mut rng = Rng(7);
    tree(&src, &mut rng);
    take(&req(&app, "data", &src)).unwrap();
    std::fs::write(src.join("d2/e2/f002"), b"changed once").unwrap();
    take(&req(&app, "data", &src)).unwrap();
    check(&src, &app);

    let vol = app.join("snapshot/volumes/data");
    let spare = app.join("snapshot/.cache/spare/volumes/data");
    let published: std::collections::HashMap<_, _> = inodes(&vol).into_iter().collect();
    let kept = inodes(&spare);
    assert!(!kept.is_empty(), "no spare was kept");
    for (rel, ino) in &kept {
        assert_eq!(
            published.get(rel),
            Some(ino),
            "{}: the spare holds an inode the snapshot has not",
            rel.display()
        );
    }
    assert!(
        !kept.iter().any(|(rel, _)| rel == Path::new("d2/e2/f002")),
        "the replaced content was unlinked"
    );

    // A take from the spare copies only what changed and keeps every other inode.
    std::fs::write(src.join("d3/e0/f003"), b"changed twice").unwrap();
    std::fs::remove_file(src.join("d4/e1/f004")).unwrap();
    std::fs::create_dir_all(src.join("d9")).unwrap();
    std::fs::write(src.join("d9/new"), b"added").unwrap();
    let s = take(&req(&app, "data", &src)).unwrap();
    assert_eq!((s.files_copied, s.bytes_copied), (2, 13 + 5), "{s:?}");
    check(&src, &app);
    let after: std::collections::HashMap<_, _> = inodes(&vol).into_iter().collect();
    for (rel, ino) in &published {
        if rel != Path::new("d3/e0/f003") && rel != Path::new("d4/e1/f004") {
            assert_eq!(after.get(rel), Some(ino), "{}: not kept", rel.display());
        }
    }
    assert!(names(&app).iter().all(|n| !n.starts_with(".tmp-")));
}

#[test]
fn an_altered_spare_is_neither_followed_nor_trusted() {
    let (d, src, app) = with_spare(8);
    let spare = app.join("snapshot/.cache/spare/volumes/data");

    // A directory of the spare swapped for a symlink to a directory outside; a stray file;
    // a kept file replaced by another inode with other content; a file planted where the
    // plan has a further name of a hardlinked file.
    std::fs::create_dir_all(d.path().join("outside")).unwrap();
    let inside = Victim::file(&d.path().join("outside/f001"));
    let outside = Victim::dir(&d.path().join("outside"));
    std::fs::remove_dir_all(spare.join("d1/e1")).unwrap();
    std::os::unix::fs::symlink(d.path().join("outside"), spare.join("d1/e1")).unwrap();
    std::fs::write(spare.join("d2/stray"), b"stray").unwrap();
    std::fs::remove_file(spare.join("d3/e2/f008")).unwrap();
    std::fs::write(spare.join("d3/e2/f008"), b"not the snapshot's").unwrap();
    std::fs::write(spare.join("d1/link"), b"not a link").unwrap();

    std::fs::write(src.join("d0/e2/f020"), b"another change").unwrap();
    take(&req(&app, "data", &src)).unwrap();
    check(&src, &app);
    outside.assert_unchanged();
    inside.assert_unchanged();

    // The spare itself swapped for a symlink: removed, never followed; the take builds
    // from nothing.
    let cache = app.join("snapshot/.cache");
    std::fs::remove_dir_all(cache.join("spare")).unwrap();
    std::os::unix::fs::symlink(d.path().join("outside"), cache.join("spare")).unwrap();
    std::fs::write(src.join("d0/e0/f015"), b"a third change").unwrap();
    take(&req(&app, "data", &src)).unwrap();
    check(&src, &app);
    outside.assert_unchanged();
    inside.assert_unchanged();
    assert!(
        std::fs::symlink_metadata(cache.join("spare"))
            .unwrap()
            .is_dir(),
        "a new spare replaced the symlink"
    );
}

/// Writing into a file of the spare writes into the published snapshot (they are one inode):
/// its identity moves, so the next take trusts neither, and copies it from the source.
#[test]
fn a_spare_file_written_in_place_is_copied_again() {
    let (_d, src, app) = with_spare(9);
    let spare = app.join("snapshot/.cache/spare/volumes/data");
    let f = spare.join("d4/e0/f009");
    let md = std::fs::symlink_metadata(&f).unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    set_mtime(&f, md.mtime(), md.mtime_nsec());
    let report = verify(&app.join("snapshot")).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);

    let s = take(&req(&app, "data", &src)).unwrap();
    assert!(!s.unchanged, "{s:?}");
    assert_eq!(s.files_copied, 1, "{s:?}");
    check(&src, &app);
}

/// Volumes come and go between takes: the spare follows, and the snapshot is exact each time.
#[test]
fn volumes_added_and_removed_between_takes_keep_the_spare() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, app) = (d.path().join("a"), d.path().join("b"), d.path().join("app"));
    let mut rng = Rng(10);
    tree(&a, &mut rng);
    tree(&b, &mut rng);
    let both = |vols: &[(&str, &Path)]| {
        let mut r = req(&app, vols[0].0, vols[0].1);
        r.sources = vols
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect();
        take(&r).unwrap()
    };
    let spare = app.join("snapshot/.cache/spare/volumes");
    both(&[("a", &a)]);
    std::fs::write(a.join("d0/e1/f010"), b"a change").unwrap();
    both(&[("a", &a), ("b", &b)]);
    assert_eq!(names(&spare), ["a"], "the spare is the replaced snapshot");
    let report = verify(&app.join("snapshot")).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_same_snapshot(&b, &app.join("snapshot/volumes/b"), &[]);

    std::fs::write(b.join("d0/e1/f010"), b"b change").unwrap();
    let s = both(&[("b", &b)]);
    assert_eq!(s.files_copied, 1, "{s:?}");
    assert_eq!(
        names(&spare),
        ["b"],
        "only volumes the snapshot has stay in the spare"
    );
    let report = verify(&app.join("snapshot")).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_same_snapshot(&b, &app.join("snapshot/volumes/b"), &[]);
    assert!(!app.join("snapshot/volumes/a").exists());
}
