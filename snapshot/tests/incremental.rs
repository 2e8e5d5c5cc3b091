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
    assert_same(&src, &vol, &[]);
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
