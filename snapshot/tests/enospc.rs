//! A snapshot never fills the disk: refused up front when it would not fit, and a copy that
//! runs out of space mid-way leaves nothing behind and the previous snapshot intact.

mod common;

use std::path::Path;

use ci_warm_snapshot::{Error, Progress, Reserve, take, take_with_progress, verify};
use common::*;

fn leftovers(parent: &Path) -> Vec<String> {
    if !parent.exists() {
        return vec![];
    }
    names(parent)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-") || n == "snapshot")
        .collect()
}

/// The published snapshot's trees and manifest (caches kept beside them aside).
fn published(
    app: &Path,
) -> (
    std::collections::BTreeMap<std::path::PathBuf, Seen>,
    Vec<u8>,
) {
    let snap = app.join("snapshot");
    (
        scan(&snap.join("volumes"), &[]).entries,
        std::fs::read(snap.join("manifest.json")).unwrap(),
    )
}

fn fill(dir: &Path, files: usize, each: usize) {
    let mut rng = Rng(99);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        std::fs::write(dir.join(format!("blob{i:03}")), rng.bytes(each)).unwrap();
    }
}

#[test]
fn too_big_for_the_disk_is_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&d.path().join("small"), "size=8m");
    let src = d.path().join("src");
    fill(&src, 20, 1 << 20);
    let app = fs.0.join("app");
    match take(&req(&app, "data", &src)) {
        Err(Error::NoSpace { needed, free, .. }) => {
            assert!(needed > 20 << 20, "needed {needed}");
            assert!(free <= 8 << 20, "free {free}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert_eq!(leftovers(&app), Vec::<String>::new());
    assert!(
        ci_warm_snapshot::free_and_total(&fs.0).unwrap().0 > 7 << 20,
        "nothing written"
    );
}

#[test]
fn a_refused_take_leaves_the_previous_snapshot_intact() {
    let d = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&d.path().join("small"), "size=8m");
    let app = fs.0.join("app");
    let src = d.path().join("src");
    fill(&src, 4, 256 << 10);
    take(&req(&app, "data", &src)).unwrap();
    let before = published(&app);

    fill(&src.join("more"), 20, 1 << 20);
    assert!(matches!(
        take(&req(&app, "data", &src)),
        Err(Error::NoSpace { .. })
    ));
    assert_eq!(leftovers(&app), ["snapshot"]);
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());
    let after = published(&app);
    assert!(after == before, "the previous snapshot changed");

    // The reserve counts too: 1 MiB more with 7 MiB to stay free does not fit in 8 MiB.
    std::fs::remove_dir_all(src.join("more")).unwrap();
    fill(&src.join("more"), 1, 1 << 20);
    let mut r = req(&app, "data", &src);
    r.reserve = Reserve {
        bytes: 7 << 20,
        percent: 0,
    };
    assert!(matches!(take(&r), Err(Error::NoSpace { .. })));
    r.reserve = Reserve {
        bytes: 0,
        percent: 90,
    };
    assert!(matches!(take(&r), Err(Error::NoSpace { .. })));
    assert_eq!(leftovers(&app), ["snapshot"]);
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());
}

/// Takes all the free space of `fs` when the take reports its plan (the pre-flight passed).
struct FillUp {
    fs: std::path::PathBuf,
    filler: std::path::PathBuf,
}

impl Progress for FillUp {
    fn planned(&self, _files: u64, _bytes: u64) {
        let f = std::fs::File::create(&self.filler).unwrap();
        let free = ci_warm_snapshot::free_and_total(&self.fs).unwrap().0;
        let _ = nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, free as i64);
    }
}

/// The pre-flight passes, then the filesystem fills up from outside before the copy: the
/// failed attempt is removed and the previous snapshot stays.
#[test]
fn running_out_after_the_preflight_cleans_up_and_keeps_the_previous_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&d.path().join("small"), "size=16m");
    let app = fs.0.join("app");
    let src = d.path().join("src");
    fill(&src, 4, 1000);
    take(&req(&app, "data", &src)).unwrap();
    let before = published(&app);

    // 6 MiB in 600 files: fits.
    let mut rng = Rng(5);
    std::fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..600 {
        std::fs::write(src.join(format!("many/f{i:03}")), rng.bytes(10 << 10)).unwrap();
    }
    let filler = fs.0.join("filler");
    // The filesystem fills up at a chosen point, not when a racing thread gets there: right
    // after the pre-flight passed (the take reports its plan then), before the first write.
    let fill_up = FillUp {
        fs: fs.0.clone(),
        filler: filler.clone(),
    };
    let taken = take_with_progress(&req(&app, "data", &src), &fill_up);
    match taken {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}")
        }
        other => panic!("expected ENOSPC, got {other:?} (left: {:?})", names(&app)),
    }
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(leftovers(&app), ["snapshot"]);
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());
    assert!(published(&app) == before, "the previous snapshot changed");

    // And with the space back, the next take works.
    take(&req(&app, "data", &src)).unwrap();
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());
    drop(fs);
}
