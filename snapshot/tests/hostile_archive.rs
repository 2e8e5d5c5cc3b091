//! Hostile archives given to `import` and `import_legacy`: each aims at a victim outside the
//! import directory (inside the test's own tempdir), and each must be refused with an error
//! naming the bad entry, with the victim byte-, mode-, owner- and xattr-unchanged.

mod common;

use std::path::Path;

use ci_warm_snapshot::manifest::{Bytes, Entry, Kind, Manifest, Volume};
use ci_warm_snapshot::{import, import_legacy};
use common::*;
use sha2::Digest;

fn entry(path: &str, kind: Kind, mode: u32) -> Entry {
    Entry {
        path: Some(path.to_owned()),
        path_hex: None,
        kind,
        mode,
        uid: 4321,
        gid: 4321,
        size: 0,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        xattrs: Default::default(),
        target: None,
        rdev: None,
        link_of: None,
        sha256: None,
        data: None,
        src: None,
    }
}

fn file(path: &str, content: &[u8]) -> Entry {
    let mut e = entry(path, Kind::File, 0o6777);
    e.size = content.len() as u64;
    e.sha256 = Some(
        sha2::Sha256::digest(content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    );
    e
}

fn symlink(path: &str, target: &str) -> Entry {
    let mut e = entry(path, Kind::Symlink, 0o777);
    e.target = Some(Bytes::Text {
        text: target.to_owned(),
    });
    e
}

fn manifest_json(entries: Vec<Entry>) -> Vec<u8> {
    let m = Manifest::new(
        "1".into(),
        vec![Volume {
            name: "data".into(),
            entries,
        }],
    );
    serde_json::to_vec(&m).unwrap()
}

/// Appends an entry with raw name and link bytes (tar's own setters refuse `..`).
fn raw(b: &mut tar::Builder<Vec<u8>>, t: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(if t == tar::EntryType::Symlink {
        0o777
    } else {
        0o6777
    });
    h.set_uid(4321);
    h.set_gid(4321);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn archive(manifest: &[u8], rest: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw(
        &mut b,
        tar::EntryType::Regular,
        b"manifest.json",
        b"",
        manifest,
    );
    rest(&mut b);
    b.into_inner().unwrap()
}

fn assert_refused(r: Result<impl std::fmt::Debug, ci_warm_snapshot::Error>, names: &[&str]) {
    let e = r
        .expect_err("a hostile archive must be refused")
        .to_string();
    for n in names {
        assert!(e.contains(n), "the error should name {n:?}: {e}");
    }
}

fn no_leftovers(app: &Path) {
    assert!(!app.join("snapshot").exists(), "nothing may be published");
}

#[test]
fn import_refuses_dotdot_and_absolute_manifest_paths_before_touching_anything() {
    let d = tempfile::tempdir().unwrap();
    let victim = Victim::file(&d.path().join("victim"));
    let app = d.path().join("app");
    // From <app>/.tmp-*/volumes/data, four levels up is the tempdir.
    for bad in [
        "../../../../victim".to_owned(),
        d.path().join("victim").display().to_string(),
        "sub/../../../../../victim".to_owned(),
    ] {
        let m = manifest_json(vec![entry("", Kind::Dir, 0o755), file(&bad, b"")]);
        let a = archive(&m, |_| {});
        assert_refused(import(&app, a.as_slice()), &[&bad]);
        victim.assert_unchanged();
        no_leftovers(&app);
    }
}

#[test]
fn import_never_writes_below_an_archive_symlink() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let keep = Victim::file(&outside.join("keep"));
    let dir = Victim::dir(&outside);
    let app = d.path().join("app");
    let target = outside.display().to_string();
    let m = manifest_json(vec![
        entry("", Kind::Dir, 0o755),
        symlink("link", &target),
        file("link/file", b"pwned"),
    ]);
    let a = archive(&m, |b| {
        raw(b, tar::EntryType::Directory, b"volumes/data", b"", b"");
        raw(
            b,
            tar::EntryType::Symlink,
            b"volumes/data/link",
            target.as_bytes(),
            b"",
        );
        raw(
            b,
            tar::EntryType::Regular,
            b"volumes/data/link/file",
            b"",
            b"pwned",
        );
    });
    assert_refused(import(&app, a.as_slice()), &["link/file", "link"]);
    keep.assert_unchanged();
    dir.assert_unchanged();
    no_leftovers(&app);
}

#[test]
fn import_hardlink_through_an_archive_symlink_cannot_overwrite_a_host_file() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = Victim::file(&outside.join("victim"));
    let app = d.path().join("app");
    let target = outside.display().to_string();
    let m = manifest_json(vec![
        entry("", Kind::Dir, 0o755),
        symlink("dirlink", &target),
        file("h", b"pwned"),
    ]);
    let a = archive(&m, |b| {
        raw(b, tar::EntryType::Directory, b"volumes/data", b"", b"");
        raw(
            b,
            tar::EntryType::Symlink,
            b"volumes/data/dirlink",
            target.as_bytes(),
            b"",
        );
        raw(
            b,
            tar::EntryType::Link,
            b"volumes/data/h",
            b"volumes/data/dirlink/victim",
            b"",
        );
        raw(b, tar::EntryType::Regular, b"volumes/data/h", b"", b"pwned");
    });
    assert_refused(import(&app, a.as_slice()), &["volumes/data/h"]);
    victim.assert_unchanged();
    no_leftovers(&app);
}

/// The prototype's layout: `<app>/snapshot/{meta.json, volumes/data.tar}`.
fn legacy(app: &Path, rest: impl FnOnce(&mut tar::Builder<Vec<u8>>)) {
    std::fs::create_dir_all(app.join("snapshot/volumes")).unwrap();
    std::fs::write(app.join("snapshot/meta.json"), b"{}").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, tar::EntryType::Directory, b"./", b"", b"");
    raw(&mut b, tar::EntryType::Regular, b"./ok", b"", b"fine");
    rest(&mut b);
    std::fs::write(
        app.join("snapshot/volumes/data.tar"),
        b.into_inner().unwrap(),
    )
    .unwrap();
}

#[test]
fn legacy_import_refuses_dotdot_entries_instead_of_dropping_them() {
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("app");
    legacy(&app, |b| {
        raw(b, tar::EntryType::Regular, b"./../../escape", b"", b"pwned");
    });
    assert_refused(import_legacy(&app), &["../../escape"]);
    assert!(!app.join("escape").exists() && !d.path().join("escape").exists());
    // The prototype's snapshot is put back, untouched.
    assert!(app.join("snapshot/volumes/data.tar").exists());
}

#[test]
fn legacy_import_never_follows_an_archive_symlink() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let keep = Victim::file(&outside.join("keep"));
    let dir = Victim::dir(&outside);
    let target = outside.display().to_string();
    // A directory entry over the symlink (its mode and owner would land on the outside
    // directory), then a file below it.
    let app = d.path().join("app1");
    legacy(&app, |b| {
        raw(
            b,
            tar::EntryType::Symlink,
            b"./link",
            target.as_bytes(),
            b"",
        );
        raw(b, tar::EntryType::Directory, b"./link/", b"", b"");
    });
    assert_refused(import_legacy(&app), &["./link/"]);
    let app = d.path().join("app2");
    legacy(&app, |b| {
        raw(
            b,
            tar::EntryType::Symlink,
            b"./link",
            target.as_bytes(),
            b"",
        );
        raw(b, tar::EntryType::Regular, b"./link/file", b"", b"pwned");
    });
    assert_refused(import_legacy(&app), &["./link/file"]);
    // A hardlink through the symlink, then a regular entry of the same name.
    let app = d.path().join("app3");
    legacy(&app, |b| {
        raw(
            b,
            tar::EntryType::Symlink,
            b"./link",
            target.as_bytes(),
            b"",
        );
        raw(b, tar::EntryType::Link, b"./h", b"./link/keep", b"");
        raw(b, tar::EntryType::Regular, b"./h", b"", b"pwned");
    });
    assert_refused(import_legacy(&app), &["./h"]);
    keep.assert_unchanged();
    dir.assert_unchanged();
}
