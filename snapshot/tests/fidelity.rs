//! Fidelity: every kind of entry survives take → restore (into an empty and into a drifted
//! target) exactly, checked by `rsync -naHAXc` and by an lstat/xattr/content/hardlink comparison.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ci_warm_snapshot::{restore, take, verify, volume_names};
use common::*;

const SOCKET: &str = "app.sock";

fn non_utf8() -> &'static OsStr {
    OsStr::from_bytes(b"name-\xff\xfe")
}

/// Builds the source tree with every kind of entry; returns the paths whose mtimes to set.
fn build(src: &Path) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("small.txt"), b"hello snapshot\n").unwrap();
    std::fs::write(src.join("dir/random.bin"), rng.bytes(3 << 20)).unwrap();

    // Sparse: 64 MiB with four 4 KiB blocks of data.
    let sparse = std::fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    for off in [0u64, 5 << 20, 33 << 20, (64 << 20) - 4096] {
        sparse.write_all_at(&rng.bytes(4096), off).unwrap();
    }
    drop(sparse);

    // 200 levels deep.
    let mut deep = src.join("deep");
    for i in 0..200 {
        deep.push(format!("l{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"at the bottom\n").unwrap();

    // Symlinks: outside the tree, dangling, relative, and one with a non-UTF-8 target.
    std::os::unix::fs::symlink("/etc/passwd", src.join("outside")).unwrap();
    std::os::unix::fs::symlink("no/such/thing", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../small.txt", src.join("dir/relative")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"odd-\xfe"), src.join("dir/odd-target")).unwrap();

    // Hardlinks: two names, one inode, in different directories; and a group of three.
    std::fs::write(src.join("hl-a"), b"linked content\n").unwrap();
    std::fs::hard_link(src.join("hl-a"), src.join("dir/sub/hl-b")).unwrap();
    std::fs::write(src.join("dir/tri-1"), rng.bytes(10_000)).unwrap();
    std::fs::hard_link(src.join("dir/tri-1"), src.join("dir/tri-2")).unwrap();
    std::fs::hard_link(src.join("dir/tri-1"), src.join("deep/tri-3")).unwrap();

    // Specials.
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &src.join("null-dev"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &src.join("dir/blockdev"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(7, 42),
    )
    .unwrap();
    // A unix socket: skipped by the snapshot (with a warning).
    drop(std::os::unix::net::UnixListener::bind(src.join(SOCKET)).unwrap());

    // Non-UTF-8 names (a file and a directory).
    std::fs::write(src.join(non_utf8()), b"bytes name\n").unwrap();
    std::fs::create_dir(src.join("dir").join(non_utf8())).unwrap();
    std::fs::write(src.join("dir").join(non_utf8()).join("inner"), b"x").unwrap();

    // Owners first (chown clears setuid/setgid), then modes.
    std::fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::write(src.join("setgid"), b"#!/bin/sh\n").unwrap();
    std::fs::create_dir(src.join("sticky")).unwrap();
    std::fs::create_dir(src.join("sgid-dir")).unwrap();
    for p in [
        "setuid",
        "setgid",
        "small.txt",
        "dir",
        "outside",
        "fifo",
        "sgid-dir",
    ] {
        lchown(&src.join(p), 12345, 54321);
    }
    lchown(&src.join("dir/sub/hl-b"), 4242, 4343);
    chmod(&src.join("setuid"), 0o4755);
    chmod(&src.join("setgid"), 0o2711);
    chmod(&src.join("sticky"), 0o1777);
    chmod(&src.join("sgid-dir"), 0o2770);
    chmod(&src.join("small.txt"), 0o604);
    chmod(&src.join("empty"), 0o000);

    // xattrs in the user., trusted. and security. namespaces, on files, dirs and a symlink.
    set_xattr(&src.join("small.txt"), "user.comment", b"hello");
    set_xattr(&src.join("small.txt"), "trusted.bin", b"\x00\xff\xfe\x01");
    set_xattr(&src.join("small.txt"), "security.test", b"label");
    set_xattr(&src.join("dir"), "user.dir", b"on a directory");
    set_xattr(&src.join("outside"), "trusted.onlink", b"on a symlink");
    set_xattr(&src.join("setuid"), "user.empty", b"");
    set_xattr(&src.join("hl-a"), "user.linked", b"shared by both names");

    // POSIX ACLs: an access ACL on a file, access + default on a directory.
    for args in [
        vec!["-m", "u:1234:rwx"],
        vec!["-m", "u:1234:rwx,d:u:1234:rx,d:g:99:r"],
    ] {
        let target = if args[1].contains("d:") {
            src.join("dir/sub")
        } else {
            src.join("small.txt")
        };
        let st = Command::new("setfacl")
            .args(&args)
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "setfacl {args:?}");
    }

    // Nanosecond mtimes on everything, deepest first (directories last).
    let mut all: Vec<_> = lstat_all(src).into_iter().map(|(p, _)| p).collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(
            p,
            1_600_000_000 + i as i64 * 7,
            (i as i64 * 123_456_789 + 1) % 1_000_000_000,
        );
    }
}

fn blocks(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().blocks()
}

fn check_sparse(src: &Path, copy: &Path) {
    let (s, c) = (
        blocks(&src.join("sparse.img")),
        blocks(&copy.join("sparse.img")),
    );
    assert!(
        c <= s * 2 + 64,
        "sparse copy allocates {c} blocks, source {s}"
    );
}

struct Setup {
    _d: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    snap: PathBuf,
}

fn setup() -> Setup {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_owned();
    let src = root.join("src");
    std::fs::create_dir(&src).unwrap();
    build(&src);
    let app = root.join("app");
    let summary = take(&req(&app, "vol", &src)).unwrap();
    assert_eq!(summary.sockets_skipped, 1, "{summary:?}");
    let snap = app.join("snapshot");
    Setup {
        _d: d,
        root,
        src,
        snap,
    }
}

fn check_snapshot(s: &Setup) {
    let report = verify(&s.snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(volume_names(&s.snap).unwrap(), ["vol"]);
    let copy = s.snap.join("volumes/vol");
    assert_rsync_clean(&s.src, &copy, &[SOCKET]);
    assert_same_snapshot(&s.src, &copy, &[SOCKET]);
    check_sparse(&s.src, &copy);
    assert!(!copy.join(SOCKET).exists());
}

#[test]
fn take_and_restore_into_an_empty_dir_is_exact() {
    let s = setup();
    check_snapshot(&s);
    let target = s.root.join("restored");
    std::fs::create_dir(&target).unwrap();
    restore(&s.snap, "vol", &target).unwrap();
    assert_rsync_clean(&s.src, &target, &[SOCKET]);
    assert_same(&s.src, &target, &[SOCKET]);
    check_sparse(&s.src, &target);
    // Restoring onto the just-restored target copies nothing (hardlinked files included).
    let again = restore(&s.snap, "vol", &target).unwrap();
    assert_eq!(again.bytes_copied, 0, "{again:?}");
    assert_rsync_clean(&s.src, &target, &[SOCKET]);
    assert_same(&s.src, &target, &[SOCKET]);

    // A file rewritten in place with its size and mtime put back (rsync's quick check would
    // miss it), and a hardlinked one likewise: the next restore still puts the content back.
    for rel in ["dir/random.bin", "dir/tri-2"] {
        let p = target.join(rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"XXXXXXXX", 100).unwrap();
        drop(f);
        set_mtime(&p, md.mtime(), md.mtime_nsec());
    }
    restore(&s.snap, "vol", &target).unwrap();
    assert_rsync_clean(&s.src, &target, &[SOCKET]);
    assert_same(&s.src, &target, &[SOCKET]);
}

#[test]
fn restore_into_a_drifted_dir_is_exact_and_follows_nothing() {
    let s = setup();
    check_snapshot(&s);
    let target = s.root.join("drifted");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&s.src)
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success());
    assert_same(&s.src, &target, &[]);

    // Drift: content, metadata, deletions, additions, type changes, link changes.
    std::fs::write(target.join("dir/random.bin"), b"rewritten").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(target.join("small.txt"))
        .unwrap()
        .write_all_at(b"appended", 15)
        .unwrap();
    std::fs::remove_file(target.join("empty")).unwrap();
    std::fs::remove_file(target.join("outside")).unwrap();
    std::fs::remove_file(target.join("fifo")).unwrap();
    std::fs::write(target.join("fifo"), b"now a file").unwrap();
    std::fs::write(target.join("extra"), b"extra file").unwrap();
    std::fs::create_dir_all(target.join("dir/extra-dir/a/b")).unwrap();
    std::fs::write(target.join("dir/extra-dir/a/b/c"), b"c").unwrap();
    chmod(&target.join("setuid"), 0o755);
    lchown(&target.join("setgid"), 1, 1);
    set_xattr(&target.join("small.txt"), "user.comment", b"drifted");
    set_xattr(&target.join("small.txt"), "user.added", b"added");
    Command::new("setfacl")
        .arg("-b")
        .arg(target.join("small.txt"))
        .status()
        .unwrap();
    // Hardlinks broken apart and a new one made.
    std::fs::remove_file(target.join("dir/sub/hl-b")).unwrap();
    std::fs::write(target.join("dir/sub/hl-b"), b"linked content\n").unwrap();
    std::fs::remove_file(target.join("dir/tri-2")).unwrap();
    std::fs::hard_link(target.join("setgid"), target.join("dir/tri-2")).unwrap();
    // A symlink retargeted, a file replaced by a directory.
    std::fs::remove_file(target.join("dangling")).unwrap();
    std::os::unix::fs::symlink("elsewhere", target.join("dangling")).unwrap();
    std::fs::remove_file(target.join("setuid")).unwrap();
    std::fs::create_dir_all(target.join("setuid/inside")).unwrap();
    // A directory replaced by a symlink to a directory outside the target: restore must
    // replace the link, never write through it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("random.bin"), b"must stay").unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::remove_dir_all(target.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.path(), target.join("dir")).unwrap();
    let outside_before = scan(outside.path(), &[]).entries;
    // The deepest directory removed.
    let mut bottom = target.join("deep");
    for i in 0..200 {
        bottom.push(format!("l{i}"));
    }
    std::fs::remove_dir_all(&bottom).unwrap();

    restore(&s.snap, "vol", &target).unwrap();
    assert_eq!(
        scan(outside.path(), &[]).entries,
        outside_before,
        "wrote through a symlink"
    );
    assert_rsync_clean(&s.src, &target, &[SOCKET]);
    assert_same(&s.src, &target, &[SOCKET]);
    check_sparse(&s.src, &target);
    // The snapshot itself is untouched by restoring from it.
    check_snapshot(&s);
}
