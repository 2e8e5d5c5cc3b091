//! kill -9 of `ci-warm snapshot dir take` at states chosen by observing it from outside (the
//! production binary has no test hooks): after each, the published snapshot verifies clean and
//! is the old one or the new one as the state implies, and the next take succeeds and sweeps.
//!
//! A take is held at a chosen point with a file lease (`F_SETLEASE`, `F_WRLCK`): the take's
//! open of that file blocks until the lease holder (this test) lets go, and the holder can see
//! that the open is waiting (`F_GETLEASE` no longer says `F_WRLCK`). Held on a source file the take must
//! copy, the take is stopped mid-copy (first, middle, last changed file); held on the restore
//! record the take carries over into the new tree, it is stopped with the manifest written and
//! nothing published. The steps after the exchange open no file and cannot be held from
//! outside: that round waits until the new snapshot is published and kills the take wherever
//! it is then (still removing the previous snapshot, or already done); only the invariants are
//! asserted there. Every publish step is killed at exactly in the snapshot crate's crash test.
//!
//! The one clock here is a deadline on waiting for a state, which fails the test when it
//! expires; and the kernel breaks a lease by force after `lease-break-time` (45 s by default),
//! far beyond the few syscalls between seeing the open wait and killing the take.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ci_warm_snapshot::{Manifest, Reserve, TakeRequest, restore, take, verify};
use ci_warm_tests::ci_warm_bin;

/// How long a state may take to come: a debug build on a slow, shared machine. Expiry fails.
const DEADLINE: Duration = Duration::from_secs(300);

fn source(src: &Path) {
    std::fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..3000 {
        std::fs::write(
            src.join(format!("many/f{i:05}")),
            format!("{i}\n").repeat(20),
        )
        .unwrap();
    }
    std::fs::write(src.join("big"), vec![3u8; 24 << 20]).unwrap();
}

/// A write lease on `path`: any other open of it waits until this is dropped.
struct Lease(File);

impl Lease {
    fn take(path: &Path) -> Lease {
        let f = File::open(path).unwrap();
        // SAFETY: fcntl on an open fd.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(
            r,
            0,
            "F_SETLEASE on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Lease(f)
    }

    /// Someone's open is waiting for the lease to go: `F_GETLEASE` then reports what the
    /// lease must become (`F_RDLCK` for a reader, `F_UNLCK` for a writer).
    fn wanted(&self) -> bool {
        // SAFETY: fcntl on an open fd.
        unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_GETLEASE) != libc::F_WRLCK }
    }
}

fn stale(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}

fn spawn_take(bin: &Path, src: &Path, parent: &Path) -> Child {
    Command::new(bin)
        .args(["snapshot", "dir", "take"])
        .arg(src)
        .arg(parent)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `reached`, failing the test, named `what`, if the take ends first without it
/// or the deadline passes.
fn wait_for(what: &str, child: &mut Child, mut reached: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        if reached() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                reached(),
                "{what}: never reached, the take ended first ({status})"
            );
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not reached within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

enum Hold {
    /// Stopped opening this source file to copy it: mid-copy, nothing published.
    Copying(&'static str),
    /// Stopped carrying the restore record over: manifest written, nothing published.
    ManifestWritten,
    /// Killed wherever it is once the new snapshot is published.
    Published,
}

#[test]
fn kill_9_at_chosen_states_never_breaks_the_published_snapshot() {
    // A lease break signals the holder (SIGIO, fatal by default); the test polls instead.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    let parent = d.path().join("app");
    let snap = parent.join("snapshot");
    let req = TakeRequest {
        parent: parent.clone(),
        sources: vec![("data".into(), src.clone())],
        reserve: Reserve::default(),
    };
    take(&req).unwrap();
    // A restore leaves a record in the snapshot, which every take carries into the new one.
    restore(&snap, "data", &d.path().join("restored")).unwrap();
    let bin = ci_warm_bin();
    let started = Instant::now();
    let mut digest = Manifest::load(&snap).unwrap().digest;

    let holds = [
        // In walk order: `big` is the first file copied, then every 50th of `many/`.
        Hold::Copying("big"),
        Hold::Copying("many/f01500"),
        Hold::Copying("many/f02950"),
        Hold::ManifestWritten,
        Hold::Published,
    ];
    for (round, hold) in holds.iter().enumerate() {
        // Change enough that the take has real work to do, the held files included.
        std::fs::write(src.join("big"), vec![round as u8; 24 << 20]).unwrap();
        for i in (0..3000).step_by(50) {
            std::fs::write(
                src.join(format!("many/f{i:05}")),
                format!("round {round}\n"),
            )
            .unwrap();
        }
        let (what, lease) = match hold {
            Hold::Copying(rel) => (format!("copying {rel}"), Some(Lease::take(&src.join(rel)))),
            Hold::ManifestWritten => {
                let record = std::fs::read_dir(snap.join(".cache"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("restore-")
                    })
                    .expect("the restore record");
                ("manifest written".to_owned(), Some(Lease::take(&record)))
            }
            Hold::Published => ("published".to_owned(), None),
        };
        let round_started = Instant::now();
        let mut child = spawn_take(&bin, &src, &parent);
        match &lease {
            Some(lease) => wait_for(&what, &mut child, || lease.wanted()),
            None => wait_for(&what, &mut child, || {
                Manifest::load(&snap).is_ok_and(|m| m.digest != digest)
            }),
        }
        eprintln!("{what}: reached in {:?}", round_started.elapsed());
        let _ = child.kill(); // SIGKILL; a take already done is fine after `Published`
        let status = child.wait().unwrap();
        drop(lease);

        let report = verify(&snap).unwrap();
        assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
        let now = Manifest::load(&snap).unwrap().digest;
        let remains = stale(&parent);
        match hold {
            Hold::Copying(_) | Hold::ManifestWritten => {
                assert_eq!(status.signal(), Some(9), "{what}: killed while held");
                assert_eq!(now, digest, "{what}: the old snapshot stays published");
                assert_eq!(
                    remains.len(),
                    1,
                    "{what}: the new tree is left: {remains:?}"
                );
                let tmp = &remains[0];
                if let Hold::ManifestWritten = hold {
                    let r = verify(tmp).unwrap();
                    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
                } else {
                    assert!(!tmp.join("manifest.json").exists(), "{what}");
                }
            }
            Hold::Published => {
                assert!(
                    status.success() || status.signal() == Some(9),
                    "{what}: {status}"
                );
                assert_ne!(now, digest, "{what}: the new snapshot is published");
                assert!(remains.len() <= 1, "{what}: {remains:?}");
                assert_eq!(
                    std::fs::read(snap.join("volumes/data/big")).unwrap(),
                    std::fs::read(src.join("big")).unwrap(),
                    "{what}"
                );
            }
        }

        // The next take succeeds and sweeps what the killed one left.
        take(&req).unwrap();
        assert_eq!(stale(&parent), Vec::<PathBuf>::new(), "{what}");
        let report = verify(&snap).unwrap();
        assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
        digest = Manifest::load(&snap).unwrap().digest;
    }
    eprintln!("{} kill rounds in {:?}", holds.len(), started.elapsed());
    let mut left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["snapshot"], "stale in-progress snapshots are swept");
}
