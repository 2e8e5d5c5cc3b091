//! The identity caches (see `cache.rs`) only ever save work: they never let a corruption or a
//! drift through, and they survive a re-take.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ci_warm_snapshot::{Progress, Reserve, TakeRequest, restore, take, take_with_progress, verify};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

fn req(parent: &Path, src: &Path) -> TakeRequest {
    TakeRequest {
        parent: parent.to_owned(),
        sources: vec![("data".into(), src.to_owned())],
        reserve: Reserve::default(),
    }
}

fn tree(src: &Path, n: usize) {
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..n {
        std::fs::write(
            src.join(format!("d/f{i:03}")),
            format!("file {i}\n").repeat(40),
        )
        .unwrap();
    }
}

/// Rewrites `p` with other bytes of the same length and puts its mtime back.
fn rewrite_keeping_mtime(p: &Path) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let mut bytes = std::fs::read(p).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(p, bytes).unwrap();
    let t = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// A file of the published snapshot altered in place (same size, mtime put back) while its
/// source stayed the same: the manifest and the source both say "unchanged", only the inode's
/// identity (its ctime moved) says otherwise.
#[test]
fn an_altered_file_in_the_previous_snapshot_is_not_reused() {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    tree(&src, 5);
    take(&req(&app, &src)).unwrap();
    let snap = app.join("snapshot");
    let altered = snap.join("volumes/data/d/f002");
    rewrite_keeping_mtime(&altered);
    let altered_ino = std::fs::symlink_metadata(&altered).unwrap().ino();

    let s = take(&req(&app, &src)).unwrap();
    let report = verify(&snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((s.files_reused, s.files_copied), (4, 1), "{s:?}");
    let fresh = snap.join("volumes/data/d/f002");
    assert_ne!(
        std::fs::symlink_metadata(&fresh).unwrap().ino(),
        altered_ino
    );
    assert_eq!(
        std::fs::read(&fresh).unwrap(),
        std::fs::read(src.join("d/f002")).unwrap()
    );
    let target = d.path().join("target");
    restore(&snap, "data", &target).unwrap();
    assert_eq!(
        std::fs::read(target.join("d/f002")).unwrap(),
        std::fs::read(src.join("d/f002")).unwrap()
    );
}

/// Metadata counts too: a reused inode carries its metadata into the new snapshot.
#[test]
fn a_previous_snapshot_file_with_altered_metadata_is_not_reused() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    tree(&src, 5);
    take(&req(&app, &src)).unwrap();
    let snap = app.join("snapshot");
    let altered = snap.join("volumes/data/d/f001");
    std::fs::set_permissions(&altered, std::fs::Permissions::from_mode(0o777)).unwrap();

    let s = take(&req(&app, &src)).unwrap();
    let report = verify(&snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((s.files_reused, s.files_copied), (4, 1), "{s:?}");
}

/// Without a verify cache nothing vouches for the previous snapshot's files: they are copied,
/// and the next take, vouched for by the cache that take recorded, reuses them again.
#[test]
fn without_a_verify_cache_the_previous_snapshot_is_not_trusted() {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    tree(&src, 5);
    take(&req(&app, &src)).unwrap();
    let snap = app.join("snapshot");
    std::fs::remove_file(snap.join(".cache/verified.json")).unwrap();
    rewrite_keeping_mtime(&snap.join("volumes/data/d/f003"));

    let s = take(&req(&app, &src)).unwrap();
    assert_eq!((s.files_reused, s.files_copied), (0, 5), "{s:?}");
    assert!(verify(&snap).unwrap().problems.is_empty());
    let s = take(&req(&app, &src)).unwrap();
    assert_eq!((s.files_reused, s.files_copied), (5, 0), "{s:?}");
}

#[test]
fn restore_rewrites_a_file_changed_behind_an_unchanged_size_and_mtime() {
    let d = tempfile::tempdir().unwrap();
    let (src, app, target) = (
        d.path().join("src"),
        d.path().join("app"),
        d.path().join("t"),
    );
    tree(&src, 5);
    take(&req(&app, &src)).unwrap();
    let snap = app.join("snapshot");
    restore(&snap, "data", &target).unwrap();
    let s = restore(&snap, "data", &target).unwrap();
    assert_eq!((s.files_copied, s.files_reused), (0, 5));

    rewrite_keeping_mtime(&target.join("d/f003"));
    let s = restore(&snap, "data", &target).unwrap();
    assert_eq!((s.files_copied, s.files_reused), (1, 4));
    assert_eq!(
        std::fs::read(target.join("d/f003")).unwrap(),
        std::fs::read(src.join("d/f003")).unwrap()
    );
}

#[test]
fn the_restore_record_survives_a_re_take() {
    let d = tempfile::tempdir().unwrap();
    let (src, app, target) = (
        d.path().join("src"),
        d.path().join("app"),
        d.path().join("t"),
    );
    tree(&src, 20);
    take(&req(&app, &src)).unwrap();
    let snap = app.join("snapshot");
    restore(&snap, "data", &target).unwrap();
    std::fs::write(src.join("d/f007"), "changed").unwrap();
    take(&req(&app, &src)).unwrap();
    let s = restore(&snap, "data", &target).unwrap();
    assert_eq!((s.files_copied, s.files_reused), (1, 19));
    assert_eq!(std::fs::read(target.join("d/f007")).unwrap(), b"changed");
}

#[derive(Default)]
struct Count {
    planned: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Progress for Count {
    fn planned(&self, files: u64, _bytes: u64) {
        self.planned.store(files, Ordering::Relaxed);
    }
    fn advanced(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[test]
fn progress_counts_every_file_once() {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    tree(&src, 30);
    let c = Count::default();
    let s = take_with_progress(&req(&app, &src), &c).unwrap();
    assert_eq!(c.planned.load(Ordering::Relaxed), 30);
    assert_eq!(c.files.load(Ordering::Relaxed), 30);
    assert_eq!(c.bytes.load(Ordering::Relaxed), s.bytes_copied);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["files_copied"], 30);
}
