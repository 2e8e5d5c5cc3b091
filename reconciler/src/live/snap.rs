//! The reconciler's one door to the snapshot crate: an app's snapshot lives at
//! `<state_dir>/<app>/snapshot/`, one tree per Docker volume (by compose name).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ci_warm_snapshot as snapshot;

use crate::upgrade::reconcile::Verified;

/// Free space that must remain after a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Reserve {
    pub bytes: u64,
    pub percent: u8,
}

pub fn snapshot_dir(app_dir: &Path) -> PathBuf {
    app_dir.join("snapshot")
}

/// Takes a snapshot of `volumes` (compose name, mountpoint) and publishes it atomically.
pub fn take(
    app_dir: &Path,
    volumes: &[(String, PathBuf)],
    reserve: Reserve,
) -> anyhow::Result<snapshot::Summary> {
    let request = snapshot::TakeRequest {
        parent: app_dir.to_owned(),
        sources: volumes.to_vec(),
        reserve: snapshot::Reserve {
            bytes: reserve.bytes,
            percent: reserve.percent,
        },
    };
    let progress = crate::platform::progress::for_stderr("snapshot");
    Ok(snapshot::take_with_progress(&request, progress.as_ref())?)
}

/// Verifies the app's snapshot; a missing snapshot is not an error here.
pub fn verify(app_dir: &Path) -> anyhow::Result<Verified> {
    let dir = snapshot_dir(app_dir);
    if !dir.join("manifest.json").exists() {
        return Ok(Verified::Missing);
    }
    let report =
        snapshot::verify(&dir).with_context(|| format!("verifying snapshot {}", dir.display()))?;
    Ok(if report.problems.is_empty() {
        Verified::Ok
    } else {
        Verified::Corrupt(report.problems.iter().map(ToString::to_string).collect())
    })
}

/// Restores every volume of the snapshot onto its mountpoint (verifying first).
pub fn restore(app_dir: &Path, volumes: &[(String, PathBuf)]) -> anyhow::Result<()> {
    let dir = snapshot_dir(app_dir);
    for name in snapshot::volume_names(&dir)? {
        let (_, target) = volumes.iter().find(|(n, _)| *n == name).with_context(|| {
            format!(
                "snapshot {} holds volume {name}, which the stack no longer has",
                dir.display()
            )
        })?;
        let progress = crate::platform::progress::for_stderr(&format!("restore {name}"));
        snapshot::restore_with_progress(&dir, &name, target, progress.as_ref())
            .with_context(|| format!("restoring volume {name} onto {}", target.display()))?;
    }
    Ok(())
}
