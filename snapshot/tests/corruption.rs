//! Corruption is found by verify, named by path, and makes restore refuse without touching the
//! target.

mod common;

use std::path::Path;

use ci_warm_snapshot::{Error, restore, take, verify};
use common::*;

fn build(src: &Path) {
    let mut rng = Rng(7);
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("a/f{i:02}")), rng.bytes(1000 + i * 100)).unwrap();
    }
    std::fs::write(src.join("a/b/big"), rng.bytes(1 << 20)).unwrap();
    std::os::unix::fs::symlink("f01", src.join("a/link")).unwrap();
}

fn fresh() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    build(&src);
    take(&req(&d.path().join("app"), "data", &src)).unwrap();
    let snap = d.path().join("app/snapshot");
    assert!(verify(&snap).unwrap().problems.is_empty());
    (d, snap)
}

fn problems(snap: &Path) -> Vec<String> {
    verify(snap)
        .unwrap()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn has(p: &[String], prefix: &str) -> bool {
    p.iter().any(|x| x.starts_with(prefix))
}

/// Flips one byte in place, keeping size and mtime.
fn flip(p: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let md = std::fs::symlink_metadata(p).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    drop(f);
    use std::os::unix::fs::MetadataExt;
    set_mtime(p, md.mtime(), md.mtime_nsec());
}

/// The target is untouched by a refused restore.
fn assert_restore_refused(snap: &Path, root: &Path) {
    let target = root.join("target");
    std::fs::create_dir_all(target.join("keep/me")).unwrap();
    std::fs::write(target.join("keep/me/live"), b"live data").unwrap();
    std::fs::write(target.join("a-file"), b"current").unwrap();
    let before = scan(&target, &[]);
    match restore(snap, "data", &target) {
        Err(Error::Corrupt { problems, .. }) => assert!(!problems.is_empty()),
        other => panic!("a corrupt snapshot must be refused, got {other:?}"),
    }
    let after = scan(&target, &[]);
    assert_eq!(after.entries, before.entries, "the target was touched");
}

#[test]
fn a_flipped_byte_is_named() {
    let (d, snap) = fresh();
    flip(&snap.join("volumes/data/a/b/big"), 700_000);
    let p = problems(&snap);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(has(&p, "data/a/b/big: sha256 mismatch"), "{p:?}");
    assert_restore_refused(&snap, d.path());
}

#[test]
fn a_changed_mode_is_named() {
    let (d, snap) = fresh();
    chmod(&snap.join("volumes/data/a/f03"), 0o777);
    let p = problems(&snap);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(has(&p, "data/a/f03: mode is 777, expected 644"), "{p:?}");
    assert_restore_refused(&snap, d.path());
}

#[test]
fn a_stray_file_is_named() {
    let (d, snap) = fresh();
    let dir = snap.join("volumes/data/a/b");
    let md = std::fs::symlink_metadata(&dir).unwrap();
    std::fs::write(dir.join("stray"), b"x").unwrap();
    use std::os::unix::fs::MetadataExt;
    set_mtime(&dir, md.mtime(), md.mtime_nsec());
    let p = problems(&snap);
    assert_eq!(p, ["data/a/b/stray: not in the manifest"], "{p:?}");
    assert_restore_refused(&snap, d.path());
}

#[test]
fn a_missing_file_and_a_retargeted_link_are_named() {
    let (d, snap) = fresh();
    std::fs::remove_file(snap.join("volumes/data/a/f07")).unwrap();
    let link = snap.join("volumes/data/a/link");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("f02", &link).unwrap();
    let p = problems(&snap);
    assert!(p.iter().any(|x| x.starts_with("data/a/f07: ")), "{p:?}");
    assert!(has(&p, "data/a/link: symlink target differs"), "{p:?}");
    assert_restore_refused(&snap, d.path());
}

#[test]
fn a_tampered_manifest_digest_is_named() {
    let (d, snap) = fresh();
    let m = snap.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digest = v["digest"].as_str().unwrap().to_owned();
    let mut tampered = digest.into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    v["digest"] = serde_json::Value::String(String::from_utf8(tampered).unwrap());
    std::fs::write(&m, serde_json::to_vec(&v).unwrap()).unwrap();
    let p = problems(&snap);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(has(&p, "manifest.json: digest mismatch"), "{p:?}");
    assert_restore_refused(&snap, d.path());
}

#[test]
fn a_tampered_manifest_entry_is_named() {
    let (d, snap) = fresh();
    // An entry's hash replaced with the hash of other content: the digest no longer matches.
    let m = snap.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let entries = v["volumes"][0]["entries"].as_array_mut().unwrap();
    let e = entries.iter_mut().find(|e| e["path"] == "a/f04").unwrap();
    e["sha256"] = serde_json::Value::String("00".repeat(32));
    std::fs::write(&m, serde_json::to_vec(&v).unwrap()).unwrap();
    let p = problems(&snap);
    assert!(has(&p, "manifest.json: digest mismatch"), "{p:?}");
    assert!(has(&p, "data/a/f04: sha256 mismatch"), "{p:?}");
    assert_restore_refused(&snap, d.path());
}

#[test]
fn a_truncated_manifest_is_an_error_and_restore_refuses() {
    let (d, snap) = fresh();
    let m = snap.join("manifest.json");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..bytes.len() / 2]).unwrap();
    assert!(verify(&snap).is_err());
    let target = d.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("live"), b"live").unwrap();
    let before = scan(&target, &[]);
    assert!(restore(&snap, "data", &target).is_err());
    assert_eq!(scan(&target, &[]).entries, before.entries);
}
