//! Snapshots altered on disk to reach outside a restore target: through the snapshot's own
//! symlink, and through a `..` path in the manifest. Verify must refuse them, and restore
//! must not write anything outside the target.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ci_warm_snapshot::manifest::{self, Bytes, Kind, Manifest};
use ci_warm_snapshot::{restore, take, verify};
use common::*;

/// Rewrites the snapshot's manifest with `edit` and a fresh digest (a consistent forgery).
fn forge(snap: &Path, edit: impl FnOnce(&mut Manifest)) {
    let p = snap.join("manifest.json");
    let mut m: Manifest = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut m);
    m.digest = manifest::digest(&m.volumes);
    std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(snap.join(".cache"));
}

/// Runs `f` inside the directory `dir` and puts its mtime back afterwards.
fn keeping_mtime(dir: &Path, f: impl FnOnce()) {
    let md = std::fs::symlink_metadata(dir).unwrap();
    f();
    set_mtime(dir, md.mtime(), md.mtime_nsec());
}

/// The reported symlink case: volume `data` holds `link -> ../victim` and an entry
/// `link/secret.txt`, which resolves to a file of the snapshot beside the volume.
fn snapshot_with_its_own_symlink(d: &Path) -> PathBuf {
    let src = d.join("src");
    std::fs::create_dir_all(src.join("link")).unwrap();
    std::fs::write(src.join("link/secret.txt"), b"attacker's content").unwrap();
    take(&req(&d.join("app"), "data", &src)).unwrap();
    let snap = d.join("app/snapshot");
    let root = snap.join("volumes/data");
    keeping_mtime(&root, || {
        std::fs::rename(root.join("link"), snap.join("volumes/victim")).unwrap();
        std::os::unix::fs::symlink("../victim", root.join("link")).unwrap();
    });
    let md = std::fs::symlink_metadata(root.join("link")).unwrap();
    forge(&snap, |m| {
        let e = m.volumes[0]
            .entries
            .iter_mut()
            .find(|e| e.path.as_deref() == Some("link"))
            .unwrap();
        e.kind = Kind::Symlink;
        e.mode = md.mode() & 0o7777;
        e.uid = md.uid();
        e.gid = md.gid();
        e.mtime_sec = md.mtime();
        e.mtime_nsec = md.mtime_nsec();
        e.xattrs.clear();
        e.target = Some(Bytes::Text {
            text: "../victim".into(),
        });
    });
    snap
}

#[test]
fn verify_refuses_an_entry_below_the_snapshots_own_symlink() {
    let d = tempfile::tempdir().unwrap();
    let snap = snapshot_with_its_own_symlink(d.path());
    let problems: Vec<String> = verify(&snap)
        .unwrap()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("data/link/secret.txt: ") && p.contains("data/link")),
        "{problems:?}"
    );
}

#[test]
fn restore_never_writes_through_the_snapshots_own_symlink() {
    let d = tempfile::tempdir().unwrap();
    let snap = snapshot_with_its_own_symlink(d.path());
    // The target's `link -> ../victim` would be <tempdir>/victim.
    std::fs::create_dir(d.path().join("victim")).unwrap();
    let secret = Victim::file(&d.path().join("victim/secret.txt"));
    let dir = Victim::dir(&d.path().join("victim"));
    let target = d.path().join("target");
    let e = restore(&snap, "data", &target)
        .expect_err("a snapshot reaching through its own symlink must be refused")
        .to_string();
    assert!(e.contains("data/link/secret.txt"), "{e}");
    secret.assert_unchanged();
    dir.assert_unchanged();
}

#[test]
fn a_dotdot_manifest_path_is_refused_by_verify_and_restore() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("x"), b"attacker's content").unwrap();
    take(&req(&d.path().join("app"), "data", &src)).unwrap();
    let snap = d.path().join("app/snapshot");
    let root = snap.join("volumes/data");
    // volumes/data/../victim is a file of the snapshot, so the metadata and hash match.
    keeping_mtime(&root, || {
        std::fs::rename(root.join("x"), snap.join("volumes/victim")).unwrap();
    });
    forge(&snap, |m| {
        let e = m.volumes[0]
            .entries
            .iter_mut()
            .find(|e| e.path.as_deref() == Some("x"))
            .unwrap();
        e.path = Some("../victim".into());
    });
    // From <tempdir>/t/target, ../victim is <tempdir>/t/victim.
    std::fs::create_dir(d.path().join("t")).unwrap();
    let victim = Victim::file(&d.path().join("t/victim"));
    let v = format!("{:?}", verify(&snap));
    assert!(
        v.contains("../victim") && !v.starts_with("Ok(VerifyReport { problems: []"),
        "{v}"
    );
    let e = restore(&snap, "data", &d.path().join("t/target"))
        .expect_err("a '..' path must be refused")
        .to_string();
    assert!(e.contains("../victim"), "{e}");
    victim.assert_unchanged();
}
