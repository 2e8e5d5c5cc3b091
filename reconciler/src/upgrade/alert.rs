//! Alert files: `<state_dir>/alerts/<time>-<app>-<kind>.json`, polled by the CI's builder loop.
//!
//! An alert is published with `link(2)` from a fsynced temporary file, so it appears whole or
//! not at all, and an existing alert is never overwritten. Schema: docs/alerts.md.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::platform::atomic;
use crate::platform::text::redact_userinfo;

/// Bumped on any incompatible change of the alert JSON.
pub const ALERT_SCHEMA: u32 = 1;

/// The largest alert file a reader reads (docs/alerts.md); anything larger in `alerts/` is not
/// ci-warm's and is skipped. [`publish`] shortens an alert's free text so it stays below.
pub const MAX_ALERT_BYTES: u64 = 8 << 20;

/// Shortens the longest free-text field (notes, message, an error) until the alert serializes
/// within [`MAX_ALERT_BYTES`] (less a margin for the pretty-printing's newline).
fn fit(alert: &mut Alert) -> Result<Vec<u8>, serde_json::Error> {
    loop {
        let bytes = serde_json::to_vec_pretty(alert)?;
        if (bytes.len() as u64) < MAX_ALERT_BYTES - 16 {
            return Ok(bytes);
        }
        let mut fields: Vec<&mut String> = vec![&mut alert.message];
        fields.extend(alert.notes.as_mut());
        fields.extend(alert.error.iter_mut());
        let Some(longest) = fields.into_iter().max_by_key(|f| f.len()) else {
            return Ok(bytes);
        };
        let mut cut = longest.len() / 2;
        while !longest.is_char_boundary(cut) {
            cut -= 1;
        }
        longest.truncate(cut);
        longest.push_str(" [truncated]");
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A major bump waits for `ci-warm approve`.
    HeldMajor,
    /// A release note asks for a manual migration.
    HeldManualMigration,
    /// An upgrade failed its gate; version and data were rolled back.
    RolledBack,
    /// An upgrade failed and so did the rollback: the app needs a person.
    RollbackFailed,
    /// The snapshot failed verification and was not restored; the app is left undeployed.
    SnapshotCorrupt,
    /// A run was killed mid-upgrade; the next run rolled back.
    Interrupted,
    /// `disk check` found a watched filesystem below a free-space threshold (once per crossing).
    DiskLow,
    /// A snapshot could not be taken, so the upgrade was not attempted.
    SnapshotFailed,
    /// Undeploying a stateful app before its snapshot failed (a task did not stop, a container
    /// kept a volume, the deployer's command failed): the upgrade was not attempted and the old
    /// version was redeployed on its untouched data.
    UndeployFailed,
    /// The first deployment of an app failed its gate (nothing to roll back to).
    BootstrapFailed,
    /// A canonical's known-good could not be restored over drifted volumes before its upgrade;
    /// the upgrade was not attempted.
    CanonicalRestoreFailed,
    /// A canonical passed its gate, but its known-good could not be refreshed to the new version.
    CanonicalRefreshFailed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HeldMajor => "held-major",
            Kind::HeldManualMigration => "held-manual-migration",
            Kind::RolledBack => "rolled-back",
            Kind::RollbackFailed => "rollback-failed",
            Kind::SnapshotCorrupt => "snapshot-corrupt",
            Kind::Interrupted => "interrupted",
            Kind::DiskLow => "disk-low",
            Kind::BootstrapFailed => "bootstrap-failed",
            Kind::SnapshotFailed => "snapshot-failed",
            Kind::UndeployFailed => "undeploy-failed",
            Kind::CanonicalRestoreFailed => "canonical-restore-failed",
            Kind::CanonicalRefreshFailed => "canonical-refresh-failed",
        }
    }
}

// No `deny_unknown_fields`: fields may be added within a schema version (docs/alerts.md), and
// an alert written by a newer ci-warm (a host rolled back) must still be relayed, not skipped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    pub schema: u32,
    /// The file name without `.json`; what `alerts ack` takes.
    pub id: String,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub host: String,
    pub app: String,
    pub recipe: Option<String>,
    pub kind: Kind,
    /// One line for a person.
    pub message: String,
    pub last_good: Option<String>,
    /// The version (or ref) that was attempted or held.
    pub attempted: Option<String>,
    /// Whether the app is serving its last good version with its data.
    pub recovered: bool,
    /// Release notes that triggered a hold.
    pub notes: Option<String>,
    /// The error chain, outermost first.
    pub error: Vec<String>,
    /// For `disk-low`: the filesystem that crossed a threshold; `null` for every other kind.
    #[serde(default)]
    pub disk: Option<DiskAlert>,
}

/// The filesystem facts of a `disk-low` alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskAlert {
    /// `warn` or `critical`.
    pub level: String,
    /// The watched paths on this filesystem (state dir, Docker's root).
    pub paths: Vec<String>,
    pub free_bytes: u64,
    pub size_bytes: u64,
    pub free_percent: f64,
    /// The threshold that was crossed, in percent free.
    pub threshold_percent: u8,
}

/// What a caller fills in; the rest is stamped by [`publish`].
#[derive(Debug, Clone, Default)]
pub struct NewAlert {
    pub app: String,
    pub recipe: Option<String>,
    pub message: String,
    pub last_good: Option<String>,
    pub attempted: Option<String>,
    pub recovered: bool,
    pub notes: Option<String>,
    pub error: Vec<String>,
    pub disk: Option<DiskAlert>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write alert {kind} for app {app} in {dir}: {source}")]
pub struct AlertError {
    pub app: String,
    pub kind: &'static str,
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub fn alerts_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("alerts")
}

/// Writes a new alert and returns its path.
pub fn publish(
    state_dir: &Path,
    kind: Kind,
    new: NewAlert,
) -> Result<(Alert, PathBuf), AlertError> {
    let dir = alerts_dir(state_dir);
    let err = |source| AlertError {
        app: new.app.clone(),
        kind: kind.as_str(),
        dir: dir.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(err)?;
    let now = SystemTime::now();
    let time = humantime::format_rfc3339_nanos(now).to_string();
    let stamp: String = time.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned());
    let tmp = dir.join(format!(
        "{}alert.{}",
        atomic::TMP_PREFIX,
        std::process::id()
    ));
    for attempt in 0u32..1000 {
        let suffix = if attempt == 0 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let id = format!("{stamp}-{}-{}{suffix}", new.app, kind.as_str());
        let mut alert = Alert {
            schema: ALERT_SCHEMA,
            id: id.clone(),
            time: time.clone(),
            host: host.clone(),
            app: new.app.clone(),
            recipe: new.recipe.clone(),
            kind,
            // A URL with inline credentials must not reach the builder loop's chat.
            message: redact_userinfo(&new.message),
            last_good: new.last_good.clone(),
            attempted: new.attempted.clone(),
            recovered: new.recovered,
            notes: new.notes.clone(),
            error: new.error.iter().map(|e| redact_userinfo(e)).collect(),
            disk: new.disk.clone(),
        };
        let mut bytes = fit(&mut alert).map_err(|e| err(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        let path = dir.join(format!("{id}.json"));
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                atomic::sync_dir(&dir).map_err(err)?;
                tracing::warn!(app = %alert.app, kind = kind.as_str(), path = %path.display(), "{}", alert.message);
                return Ok((alert, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "1000 alerts with the same time stamp",
    )))
}

/// How long an `on_alert` hook may run before it is killed: a hung chat post must not hold
/// the app's lock (and so every later run) forever.
pub const HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the configured `on_alert` hook with the alert's path; a failing hook is logged only.
pub fn run_hook(argv: Option<&[String]>, alert_path: &Path) {
    run_hook_with_timeout(argv, alert_path, HOOK_TIMEOUT);
}

/// [`run_hook`] with an explicit time limit; returns whether the hook ran and succeeded.
pub fn run_hook_with_timeout(
    argv: Option<&[String]>,
    alert_path: &Path,
    timeout: std::time::Duration,
) -> bool {
    let Some((cmd, args)) = argv.and_then(|a| a.split_first()) else {
        return false;
    };
    // The hook's stdout goes to our stderr: stdout may be carrying `--json` output.
    let spawned = std::process::Command::new(cmd)
        .args(args)
        .arg(alert_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(hook = %cmd, alert = %alert_path.display(), "on_alert hook could not run: {e}");
            return false;
        }
    };
    let deadline = crate::platform::deadline::after(std::time::Instant::now(), timeout);
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return true,
            Ok(Some(s)) => {
                tracing::warn!(hook = %cmd, alert = %alert_path.display(), "on_alert hook failed: {s}");
                return false;
            }
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(hook = %cmd, alert = %alert_path.display(), "on_alert hook killed after {timeout:?}");
                return false;
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!(hook = %cmd, alert = %alert_path.display(), "on_alert hook could not be waited for: {e}");
                return false;
            }
        }
    }
}

/// Whether `id` can name an alert file: what `alerts ack` accepts, so an id can never point
/// outside the alerts directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
        && !id.contains("..")
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_huge_alert_is_shortened_to_fit_what_readers_read() {
        let d = tempfile::tempdir().unwrap();
        let new = NewAlert {
            app: "demo".into(),
            message: "m".repeat(3 << 20),
            notes: Some("\u{1}".repeat(5 << 20)),
            ..NewAlert::default()
        };
        let (a, path) = publish(d.path(), Kind::HeldMajor, new).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= MAX_ALERT_BYTES, "{len}");
        assert!(a.notes.unwrap().ends_with(" [truncated]"));
    }

    use super::*;

    #[test]
    fn publishes_whole_files_with_unique_ids() {
        let d = tempfile::tempdir().unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let (a, path) = publish(
                d.path(),
                Kind::RolledBack,
                NewAlert {
                    app: "demo".into(),
                    message: "rolled back".into(),
                    recovered: true,
                    ..NewAlert::default()
                },
            )
            .unwrap();
            let back: Alert = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            assert_eq!(back, a);
            assert!(a.id.ends_with("-demo-rolled-back") || a.id.contains("-demo-rolled-back-"));
            ids.insert(a.id);
        }
        assert_eq!(ids.len(), 20);
        let leftovers = fs::read_dir(alerts_dir(d.path()))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(atomic::TMP_PREFIX)
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn alert_files_never_hold_url_credentials() {
        let d = tempfile::tempdir().unwrap();
        let (_, path) = publish(
            d.path(),
            Kind::RolledBack,
            NewAlert {
                app: "demo".into(),
                message: "probe https://bob:hunter2@demo.example.org/: status 500".into(),
                error: vec!["fetching https://x:hunter2@git.example.org/r.git failed".into()],
                ..NewAlert::default()
            },
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("https://***@demo.example.org/"), "{text}");
    }

    #[test]
    fn failing_hook_is_not_fatal() {
        run_hook(Some(&["/bin/false".to_owned()]), Path::new("/x"));
        run_hook(Some(&["/nonexistent/hook".to_owned()]), Path::new("/x"));
        run_hook(None, Path::new("/x"));
    }

    #[test]
    fn hook_gets_the_path_and_a_hung_hook_is_killed() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("got");
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("printf %s \"$1\" > {}", out.display()),
            "hook".to_owned(),
        ];
        assert!(run_hook_with_timeout(
            Some(&argv),
            Path::new("/a/b.json"),
            HOOK_TIMEOUT
        ));
        assert_eq!(fs::read_to_string(&out).unwrap(), "/a/b.json");
        let started = std::time::Instant::now();
        let sleeper = vec!["/bin/sleep".to_owned(), "30".to_owned()];
        assert!(!run_hook_with_timeout(
            Some(&sleeper),
            Path::new("5"),
            std::time::Duration::from_millis(200)
        ));
        // Not a speed limit: a hook that was waited for took its whole 30 s.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        assert!(valid_id("20261122T190512.123456789Z-demo-rolled-back"));
        for bad in ["", "../x", "a/b", ".tmp-alert.1", "x\0", "a..b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
