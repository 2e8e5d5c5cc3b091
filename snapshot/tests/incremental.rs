//! Incremental takes: only changed and added files are copied; unchanged ones are the previous
//! snapshot's inodes.

mod common;

use std::os::unix::fs::MetadataExt;

use ci_warm_snapshot::{restore, take, verify};
use common::*;

#[test]
fn a_re_take_copies_only_what_changed() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let mut rng = Rng(42);
    let mut total = 0u64;
    for i in 0..300 {
        let dir = src.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let len = 100 + rng.below(5000) as usize;
        std::fs::write(dir.join(format!("f{i:03}")), rng.bytes(len)).unwrap();
        total += len as u64;
    }
    // A hardlinked setuid pair, unchanged between the takes.
    std::fs::write(src.join("tool"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&src.join("tool"), 0o4755);
    std::fs::hard_link(src.join("tool"), src.join("d0/tool-link")).unwrap();
    total += 18;
    let app = d.path().join("app");
    let first = take(&req(&app, "data", &src)).unwrap();
    assert_eq!(first.bytes_copied, total, "{first:?}");
    assert_eq!(first.bytes_reused, 0, "{first:?}");

    let snap = app.join("snapshot");
    let vol = snap.join("volumes/data");
    let ino = |rel: &str| std::fs::symlink_metadata(vol.join(rel)).unwrap().ino();
    let kept_ino = ino("d3/f003");
    let tool_ino = ino("tool");

    // One file changed (different size), one changed with size and mtime kept (only ctime
    // tells), one added, one deleted.
    std::fs::write(src.join("d1/f001"), b"changed!").unwrap();
    let f2 = src.join("d2/f002");
    let md = std::fs::metadata(&f2).unwrap();
    let mut bytes = std::fs::read(&f2).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&f2, &bytes).unwrap();
    set_mtime(&f2, md.mtime(), md.mtime_nsec());
    std::fs::write(src.join("d4/new"), b"brand new file").unwrap();
    std::fs::remove_file(src.join("d5/f005")).unwrap();

    let second = take(&req(&app, "data", &src)).unwrap();
    let expected = 8 + bytes.len() as u64 + 14;
    assert_eq!(second.bytes_copied, expected, "{second:?}");
    assert_eq!(second.files, first.files, "{second:?}");
    assert_eq!(
        ino("d3/f003"),
        kept_ino,
        "unchanged file reused by hardlink"
    );
    assert_eq!(ino("tool"), tool_ino, "unchanged hardlinked file reused");
    assert_eq!(ino("d0/tool-link"), tool_ino, "its other name links to it");
    assert_eq!(
        std::fs::symlink_metadata(vol.join("tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(!vol.join("d5/f005").exists());
    let report = verify(&snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_rsync_clean(&src, &vol, &[]);
    assert_same_snapshot(&src, &vol, &[]);
    // Only the new snapshot remains (caches beside it aside), and it restores exactly.
    assert!(
        names(&app).iter().all(|n| !n.starts_with(".tmp-")),
        "{:?}",
        names(&app)
    );
    let target = d.path().join("t");
    restore(&snap, "data", &target).unwrap();
    assert_same(&src, &target, &[]);

    // A take of an unchanged source copies nothing.
    let third = take(&req(&app, "data", &src)).unwrap();
    assert_eq!(third.bytes_copied, 0, "{third:?}");
    assert_eq!(ino("d3/f003"), kept_ino);
}

/// One name's (path, inode, ctime, mtime, size, mode, content).
type Seen = (std::path::PathBuf, u64, i64, i64, i64, u32, Option<Vec<u8>>);
type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);

/// Every name under `dir` with its inode, ctime, mtime, mode and (files) content: two equal
/// fingerprints mean nothing in the tree was written, renamed, chmodded or replaced.
fn fingerprint(dir: &std::path::Path) -> Vec<Seen> {
    let mut out: Vec<Seen> = lstat_all(dir)
        .into_iter()
        .map(|(p, md)| {
            (
                p.strip_prefix(dir).unwrap().to_owned(),
                md.ino(),
                md.ctime() * 1_000_000_000 + md.ctime_nsec(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                md.size() as i64,
                md.mode(),
                md.is_file().then(|| std::fs::read(&p).unwrap()),
            )
        })
        .collect();
    out.sort();
    out
}

fn small_tree(src: &std::path::Path) {
    let mut rng = Rng(9);
    for i in 0..50 {
        let dir = src.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:02}")), rng.bytes(100 + i * 37)).unwrap();
    }
    std::fs::hard_link(src.join("d0/f00"), src.join("d1/link")).unwrap();
    std::os::unix::fs::symlink("d0/f00", src.join("sym")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
}

#[test]
fn a_take_of_an_unchanged_source_leaves_the_snapshot_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    small_tree(&src);
    take(&req(&app, "data", &src)).unwrap();
    let before = fingerprint(&app);
    let s = take(&req(&app, "data", &src)).unwrap();
    assert!(s.unchanged, "{s:?}");
    assert_eq!(
        (s.files_copied, s.files_reused, s.files),
        (0, 50, 50),
        "{s:?}"
    );
    assert_eq!(fingerprint(&app), before, "the no-op take wrote something");
    let report = verify(&app.join("snapshot")).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_same_snapshot(&src, &app.join("snapshot/volumes/data"), &[]);
    // A clean verify records the same identities: still nothing to do.
    let before = fingerprint(&app.join("snapshot/volumes"));
    assert!(take(&req(&app, "data", &src)).unwrap().unchanged);
    assert_eq!(fingerprint(&app.join("snapshot/volumes")), before);
}

/// Each change, to the source or to the published snapshot, makes the next take a real one,
/// and the snapshot it publishes is exact.
#[test]
fn any_change_to_the_source_or_the_snapshot_makes_a_real_take() {
    let d = tempfile::tempdir().unwrap();
    let (src, app) = (d.path().join("src"), d.path().join("app"));
    let snap = app.join("snapshot");
    let vol = snap.join("volumes/data");
    small_tree(&src);
    take(&req(&app, "data", &src)).unwrap();
    let changes: Vec<Change> = vec![
        (
            "source file content",
            Box::new(|| {
                let p = src.join("d2/f07");
                let md = std::fs::symlink_metadata(&p).unwrap();
                let mut b = std::fs::read(&p).unwrap();
                b[0] ^= 1;
                std::fs::write(&p, b).unwrap();
                set_mtime(&p, md.mtime(), md.mtime_nsec());
            }),
        ),
        (
            "source directory mode",
            Box::new(|| chmod(&src.join("d3"), 0o711)),
        ),
        (
            "source symlink replaced",
            Box::new(|| {
                std::fs::remove_file(src.join("sym")).unwrap();
                std::os::unix::fs::symlink("d0/f01", src.join("sym")).unwrap();
            }),
        ),
        (
            "source name added then removed",
            Box::new(|| {
                std::fs::write(src.join("d4/tmp"), b"x").unwrap();
                std::fs::remove_file(src.join("d4/tmp")).unwrap();
            }),
        ),
        (
            "snapshot directory mode",
            Box::new(|| chmod(&vol.join("d1"), 0o700)),
        ),
        (
            "stray name in the snapshot",
            Box::new(|| std::fs::write(vol.join("d0/stray"), b"s").unwrap()),
        ),
        (
            "snapshot xattr on a symlink",
            Box::new(|| {
                let _ = std::process::Command::new("setfattr")
                    .args(["-h", "-n", "user.x", "-v", "1"])
                    .arg(vol.join("sym"))
                    .status();
                // Symlinks take no user xattrs on most filesystems: chown it instead.
                lchown(&vol.join("sym"), 1234, 1234);
            }),
        ),
        (
            "snapshot fifo replaced",
            Box::new(|| {
                std::fs::remove_file(vol.join("fifo")).unwrap();
                nix::unistd::mkfifo(
                    &vol.join("fifo"),
                    nix::sys::stat::Mode::from_bits_truncate(0o640),
                )
                .unwrap();
                let md = std::fs::symlink_metadata(src.join("fifo")).unwrap();
                set_mtime(&vol.join("fifo"), md.mtime(), md.mtime_nsec());
            }),
        ),
        (
            "snapshot further name replaced",
            Box::new(|| {
                let bytes = std::fs::read(vol.join("d1/link")).unwrap();
                let md = std::fs::symlink_metadata(vol.join("d1/link")).unwrap();
                std::fs::remove_file(vol.join("d1/link")).unwrap();
                std::fs::write(vol.join("d1/link"), bytes).unwrap();
                chmod(&vol.join("d1/link"), md.mode() & 0o7777);
                set_mtime(&vol.join("d1/link"), md.mtime(), md.mtime_nsec());
            }),
        ),
    ];
    for (what, change) in changes {
        assert!(
            take(&req(&app, "data", &src)).unwrap().unchanged,
            "{what}: before"
        );
        change();
        let s = take(&req(&app, "data", &src)).unwrap();
        assert!(!s.unchanged, "{what}: {s:?}");
        let report = verify(&snap).unwrap();
        assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
        assert_same_snapshot(&src, &vol, &[]);
    }
}
