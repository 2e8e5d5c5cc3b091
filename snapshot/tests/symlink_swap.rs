//! A user owning files inside a volume swaps a directory of the restore target for a symlink
//! to somewhere else while a restore runs: nothing outside the target may be written.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ci_warm_snapshot::{Progress, restore, restore_with_progress, take};
use common::*;

fn outside_with_victims(d: &Path) -> (Victim, Victim) {
    let outside = d.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let keep = Victim::file(&outside.join("keep"));
    (keep, Victim::dir(&outside))
}

fn swap_for_symlink(target: &Path, dir: &str, to: &Path) -> std::io::Result<()> {
    std::fs::rename(target.join(dir), target.join(format!("{dir}.moved")))?;
    std::os::unix::fs::symlink(to, target.join(dir))
}

/// Swaps `d` for a symlink the first time the restore reports progress (an unchanged file
/// inside `d`, found before the files of `d` that must be rewritten).
struct SwapOnFirstProgress<'a> {
    target: &'a Path,
    outside: &'a Path,
    done: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Progress for SwapOnFirstProgress<'_> {
    fn advanced(&self, _files: u64, _bytes: u64) {
        if !self.done.swap(true, Ordering::SeqCst)
            && let Err(e) = swap_for_symlink(self.target, "d", self.outside)
        {
            *self.error.lock().unwrap() = Some(e.to_string());
        }
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_restore_is_never_followed() {
    let d = tempfile::tempdir().unwrap();
    let (keep, outside) = outside_with_victims(d.path());
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a-unchanged"), b"stays").unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("d/f{i:02}")), format!("file {i}")).unwrap();
    }
    take(&req(&d.path().join("app"), "data", &src)).unwrap();
    let snap = d.path().join("app/snapshot");
    let target = d.path().join("target");
    restore(&snap, "data", &target).unwrap();
    for i in 0..20 {
        std::fs::write(target.join(format!("d/f{i:02}")), b"changed in the target").unwrap();
    }
    let hook = SwapOnFirstProgress {
        target: &target,
        outside: &d.path().join("outside"),
        done: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    // Refusing is fine; following is not.
    let _ = restore_with_progress(&snap, "data", &target, &hook);
    assert!(hook.done.load(Ordering::SeqCst), "the swap never ran");
    assert_eq!(*hook.error.lock().unwrap(), None);
    keep.assert_unchanged();
    outside.assert_unchanged();
    // And the next restore repairs the target completely.
    restore(&snap, "data", &target).unwrap();
    assert_same(&src, &target, &[]);
    keep.assert_unchanged();
    outside.assert_unchanged();
}

#[test]
fn concurrent_symlink_swaps_never_redirect_a_restore() {
    const SWAPS: usize = 1_000_000;
    const RESTORES: usize = 30;
    let d = tempfile::tempdir().unwrap();
    let (keep, outside) = outside_with_victims(d.path());
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("a/f{i:02}")), format!("a {i}")).unwrap();
        std::fs::write(src.join(format!("a/b/g{i:02}")), format!("b {i}")).unwrap();
    }
    take(&req(&d.path().join("app"), "data", &src)).unwrap();
    let snap = d.path().join("app/snapshot");
    let target = d.path().join("target");
    restore(&snap, "data", &target).unwrap();
    let out = d.path().join("outside");
    let finished = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Bounded by iterations; stops early once the restores are done.
            for _ in 0..SWAPS {
                if finished.load(Ordering::SeqCst) {
                    break;
                }
                if swap_for_symlink(&target, "a", &out).is_ok() {
                    swaps.fetch_add(1, Ordering::SeqCst);
                    // Leave the symlink in place a little (no timing is asserted on).
                    std::thread::yield_now();
                }
                let _ = std::fs::remove_file(target.join("a"));
                let _ = std::fs::rename(target.join("a.moved"), target.join("a"));
            }
        });
        // Each swap leaves `a` missing, a symlink or renamed to `a.moved` (an extra), so the
        // restores keep rewriting `a` and everything below it. (The test itself never writes
        // below `a`: that could follow the swapped-in symlink.)
        for _ in 0..RESTORES {
            let _ = restore(&snap, "data", &target);
        }
        finished.store(true, Ordering::SeqCst);
    });
    assert!(swaps.load(Ordering::SeqCst) > 0, "no swap happened");
    keep.assert_unchanged();
    outside.assert_unchanged();
    // Nothing lingers outside, and a quiet restore makes the target exact again.
    let _ = std::fs::remove_file(target.join("a"));
    let _ = std::fs::rename(target.join("a.moved"), target.join("a"));
    restore(&snap, "data", &target).unwrap();
    assert_same(&src, &target, &[]);
}
