//! kill -9 of `ci-warm snapshot dir take` at 20+ random instants: after each, the published
//! snapshot verifies clean (old or new, never torn) and a new take succeeds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ci_warm_snapshot::{Reserve, TakeRequest, take, verify};
use ci_warm_tests::ci_warm_bin;

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

/// A cheap pseudo-random delay (no rand dependency needed for picking instants).
fn jitter(round: u64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis((nanos ^ round.wrapping_mul(0x9E37_79B9)) % 400)
}

#[test]
fn kill_9_at_random_instants_never_breaks_the_published_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    let parent = d.path().join("app");
    let req = TakeRequest {
        parent: parent.clone(),
        sources: vec![("data".into(), src.clone())],
        reserve: Reserve::default(),
    };
    take(&req).unwrap();
    let bin = ci_warm_bin();
    for round in 0..22u64 {
        // Change enough that the take has real work to do.
        std::fs::write(src.join("big"), vec![round as u8; 24 << 20]).unwrap();
        for i in (0..3000).step_by(50) {
            std::fs::write(
                src.join(format!("many/f{i:05}")),
                format!("round {round}\n"),
            )
            .unwrap();
        }
        let mut child = Command::new(&bin)
            .args(["snapshot", "dir", "take"])
            .arg(&src)
            .arg(&parent)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(jitter(round));
        let _ = child.kill();
        child.wait().unwrap();
        let report = verify(&parent.join("snapshot")).unwrap();
        assert!(
            report.problems.is_empty(),
            "round {round}: {:?}",
            report.problems
        );
    }
    take(&req).unwrap();
    assert!(
        verify(&parent.join("snapshot"))
            .unwrap()
            .problems
            .is_empty()
    );
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["snapshot"], "stale in-progress snapshots are swept");
}
