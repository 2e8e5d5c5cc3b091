//! The alert relay: listing, acknowledging and polling the alert files of
//! `<state_dir>/alerts/` (written by [`crate::upgrade::alert::publish`]).
//!
//! Acknowledging is one `rename(2)` into `alerts/seen/`, and only the *consumer* acknowledges:
//! an alert written into a pipe is not an alert read (a consumer that dies loses what sat in the
//! pipe's buffer). So [`poll`] archives an alert only once its consumer acknowledged it — in
//! band, after each alert (`--ack-stdin`), or later with `alerts ack` — all under one flock
//! (`alerts/.poll.lock`) so that only one poller delivers at a time. A poller or consumer killed
//! at any instant loses nothing: at worst the one alert in flight is delivered again
//! (at-least-once), and a lost `rollback-failed` is far worse than a repeated one.
//!
//! The entries of `alerts/` are untrusted (anybody with write access may drop anything there):
//! each is opened without following symlinks and without blocking (a FIFO), checked to be a
//! regular file of at most [`alert::MAX_ALERT_BYTES`], and read only that far. Anything else, or
//! a file that does not parse as an alert, is skipped with one warning per process naming it,
//! and left where it is for a person to look at.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::Flock;

use crate::platform::{atomic, lock};
use crate::upgrade::alert::{self, Alert};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0:?} is not an alert id (ids are the alert file names without .json)")]
    BadId(String),
    #[error("no alert {id} in {dir}")]
    Unknown { id: String, dir: PathBuf },
    #[error("delivering alert {id} failed (it stays new for the next poll): {source}")]
    Deliver {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("alert {id} was not acknowledged (it stays new for the next poll): {why}")]
    NotAcked { id: String, why: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RelayError + 'a {
    move |source| RelayError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub fn seen_dir(state_dir: &Path) -> PathBuf {
    alert::alerts_dir(state_dir).join("seen")
}

/// A new alert as found on disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub alert: Alert,
    pub path: PathBuf,
}

/// Whether a directory entry name is a published alert (not an in-progress temporary file).
fn alert_id(name: &str) -> Option<&str> {
    name.strip_suffix(".json")
        .filter(|id| !name.starts_with(atomic::TMP_PREFIX) && alert::valid_id(id))
}

/// Warns about a skipped entry once per process (a `--follow` poller looks every few seconds).
fn warn_once(path: &Path, why: &str) {
    static WARNED: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());
    let first = WARNED
        .lock()
        .map(|mut w| w.insert((path.to_owned(), why.to_owned())))
        .unwrap_or(true);
    if first {
        tracing::warn!(path = %path.display(), "skipping an entry of the alerts directory: {why} (left in place)");
    }
}

/// What reading one directory entry found.
enum Entry {
    Bytes(Vec<u8>),
    /// Acknowledged or claimed by somebody else since the listing.
    Gone,
    /// Not something to read as an alert, and why.
    Skip(String),
}

/// Reads one entry of an alert directory as untrusted: no symlink is followed, opening never
/// blocks (a FIFO), only a regular file is read, and at most [`alert::MAX_ALERT_BYTES`].
fn read_entry(path: &Path) -> Result<Entry, RelayError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Gone),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Ok(Entry::Skip("a symlink, never followed".to_owned()));
        }
        Err(e) => return Ok(Entry::Skip(format!("cannot be opened: {e}"))),
    };
    let meta = file.metadata().map_err(io_err("inspecting", path))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Ok(Entry::Skip(kind.to_owned()));
    }
    if meta.len() > alert::MAX_ALERT_BYTES {
        return Ok(Entry::Skip(format!(
            "{} bytes, more than the {} an alert may have",
            meta.len(),
            alert::MAX_ALERT_BYTES
        )));
    }
    let mut bytes = Vec::new();
    file.take(alert::MAX_ALERT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("reading", path))?;
    if bytes.len() as u64 > alert::MAX_ALERT_BYTES {
        return Ok(Entry::Skip(
            "grew past the size an alert may have".to_owned(),
        ));
    }
    Ok(Entry::Bytes(bytes))
}

/// The alerts in `dir`, oldest first. An entry that is not a readable alert (see
/// [`read_entry`]; a file that does not parse) is warned about and skipped, never fatal for the
/// others, and never moved or deleted.
pub fn read_dir_alerts(dir: &Path) -> Result<Vec<Found>, RelayError> {
    read_dir_alerts_where(dir, |_| true)
}

/// [`read_dir_alerts`] limited to ids `keep` accepts, so a big `seen/` is not parsed whole.
pub fn read_dir_alerts_where(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Found>, RelayError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(alert_id).filter(|id| keep(id)) else {
            continue;
        };
        let path = entry.path();
        let bytes = match read_entry(&path)? {
            Entry::Bytes(b) => b,
            Entry::Gone => continue,
            Entry::Skip(why) => {
                warn_once(&path, &why);
                continue;
            }
        };
        match serde_json::from_slice::<Alert>(&bytes) {
            Ok(alert) if alert.id == id => out.push(Found { alert, path }),
            Ok(alert) => warn_once(
                &path,
                &format!("its id {} does not match its file name", alert.id),
            ),
            Err(e) => warn_once(&path, &format!("not a valid alert: {e}")),
        }
    }
    out.sort_by(|a, b| {
        (a.alert.time.as_str(), a.alert.id.as_str()).cmp(&(b.alert.time.as_str(), &b.alert.id))
    });
    Ok(out)
}

/// New (unacknowledged) alerts, oldest first.
pub fn list(state_dir: &Path) -> Result<Vec<Found>, RelayError> {
    read_dir_alerts(&alert::alerts_dir(state_dir))
}

/// Moves `alerts/<id>.json` into `alerts/seen/`; `Ok(false)` when someone else already did.
fn claim(state_dir: &Path, id: &str) -> Result<bool, RelayError> {
    let dir = alert::alerts_dir(state_dir);
    let seen = seen_dir(state_dir);
    fs::create_dir_all(&seen).map_err(io_err("creating", &seen))?;
    let from = dir.join(format!("{id}.json"));
    let to = seen.join(format!("{id}.json"));
    match fs::rename(&from, &to) {
        Ok(()) => {
            atomic::sync_dir(&seen).map_err(io_err("fsyncing", &seen))?;
            atomic::sync_dir(&dir).map_err(io_err("fsyncing", &dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("moving", &from)(e)),
    }
}

/// What `ack` did with one id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Acked {
    pub id: String,
    /// `false` when the alert was already in `seen/`.
    pub moved: bool,
}

/// Acknowledges alerts by id. An id that is neither new nor seen is an error, reported after
/// the others were acknowledged.
pub fn ack(state_dir: &Path, ids: &[String]) -> Result<Vec<Acked>, RelayError> {
    let mut out = Vec::new();
    let mut unknown = None;
    for id in ids {
        let id = id.strip_suffix(".json").unwrap_or(id);
        if !alert::valid_id(id) {
            return Err(RelayError::BadId(id.to_owned()));
        }
        if claim(state_dir, id)? {
            out.push(Acked {
                id: id.to_owned(),
                moved: true,
            });
        } else if seen_dir(state_dir).join(format!("{id}.json")).exists() {
            out.push(Acked {
                id: id.to_owned(),
                moved: false,
            });
        } else {
            unknown.get_or_insert_with(|| id.to_owned());
        }
    }
    match unknown {
        Some(id) => Err(RelayError::Unknown {
            id,
            dir: alert::alerts_dir(state_dir),
        }),
        None => Ok(out),
    }
}

/// Acknowledges every new alert; returns their ids.
pub fn ack_all(state_dir: &Path) -> Result<Vec<Acked>, RelayError> {
    let mut out = Vec::new();
    for found in list(state_dir)? {
        if claim(state_dir, &found.alert.id)? {
            out.push(Acked {
                id: found.alert.id,
                moved: true,
            });
        }
    }
    Ok(out)
}

/// The lock file that lets one poller at a time deliver; not an alert (no `.json`).
pub const POLL_LOCK: &str = ".poll.lock";

/// Opens the poll lock, never through a symlink and never blocking on a FIFO.
fn open_poll_lock(path: &Path) -> io::Result<File> {
    let flags = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK;
    match OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(flags)
        .open(path)
    {
        // Created by the other user of a host where ci-warm and the builder loop differ: a
        // read-only descriptor holds a flock just as well.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            OpenOptions::new().read(true).custom_flags(flags).open(path)
        }
        other => other,
    }
}

/// Takes the pollers' lock without waiting; `None` when another poller holds it. A hung
/// poller (stdout blocked, or waiting for its consumer's acknowledgement) must not hang every
/// other one, and the holder delivers the alerts anyway.
fn try_poll_lock(state_dir: &Path) -> Result<Option<Flock<File>>, RelayError> {
    let path = alert::alerts_dir(state_dir).join(POLL_LOCK);
    lock::flock_verified(&path, false, open_poll_lock).map_err(io_err("locking", &path))
}

/// A consumer's acknowledgement of one delivered alert: `Ok` once it confirmed it.
pub type AckFn<'a> = dyn FnMut(&Found) -> Result<(), RelayError> + 'a;

/// Delivers every new alert, oldest first, to `deliver`. With `ack`, each delivered alert is
/// archived (moved to `seen/`) only once `ack` returned `Ok` for it — the consumer confirmed it
/// — and only then is the next one delivered; without, nothing is archived (the consumer runs
/// `alerts ack` itself). While another poller is delivering this one delivers nothing (its
/// alerts are in hand). Should delivery or acknowledgement fail (stdout or stdin closed: the
/// consumer is gone), that alert stays new for the next poll and the error is returned.
/// Returns how many were delivered.
pub fn poll(
    state_dir: &Path,
    mut deliver: impl FnMut(&Found) -> io::Result<()>,
    mut ack: Option<&mut AckFn<'_>>,
) -> Result<usize, RelayError> {
    let dir = alert::alerts_dir(state_dir);
    if !dir.is_dir() {
        return Ok(0);
    }
    let Some(_lock) = try_poll_lock(state_dir)? else {
        tracing::debug!("another poller is delivering the alerts");
        return Ok(0);
    };
    let mut n = 0;
    for found in list(state_dir)? {
        let id = found.alert.id.clone();
        // Acknowledged by hand since it was listed: not new any more.
        if !found.path.exists() {
            continue;
        }
        deliver(&found).map_err(|source| RelayError::Deliver {
            id: id.clone(),
            source,
        })?;
        n += 1;
        if let Some(ack) = ack.as_mut() {
            ack(&found)?;
            // `false`: acknowledged by hand meanwhile; archived either way.
            claim(state_dir, &id)?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::alert::{Kind, NewAlert, publish};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Barrier, Mutex};

    /// A poll whose consumer acknowledges every alert it is handed.
    fn poll_acked(
        state_dir: &Path,
        deliver: impl FnMut(&Found) -> io::Result<()>,
    ) -> Result<usize, RelayError> {
        poll(state_dir, deliver, Some(&mut |_: &Found| Ok(())))
    }

    #[test]
    fn without_acknowledgements_nothing_is_archived() {
        let d = tempfile::tempdir().unwrap();
        publish(d.path(), Kind::RollbackFailed, new("a")).unwrap();
        publish(d.path(), Kind::RolledBack, new("b")).unwrap();
        assert_eq!(poll(d.path(), |_| Ok(()), None).unwrap(), 2);
        assert_eq!(list(d.path()).unwrap().len(), 2, "printed is not read");
        assert_eq!(
            poll(d.path(), |_| Ok(()), None).unwrap(),
            2,
            "delivered again"
        );
    }

    #[test]
    fn an_alert_its_consumer_did_not_acknowledge_stays_new() {
        let d = tempfile::tempdir().unwrap();
        let (a, _) = publish(d.path(), Kind::RollbackFailed, new("a")).unwrap();
        let (b, _) = publish(d.path(), Kind::RolledBack, new("b")).unwrap();
        let mut acks = 0;
        let mut ack = |f: &Found| {
            acks += 1;
            if acks == 1 {
                Ok(())
            } else {
                Err(RelayError::NotAcked {
                    id: f.alert.id.clone(),
                    why: "the consumer closed its end".into(),
                })
            }
        };
        let e = poll(d.path(), |_| Ok(()), Some(&mut ack)).unwrap_err();
        assert!(
            matches!(e, RelayError::NotAcked { ref id, .. } if *id == b.id),
            "{e}"
        );
        let left: Vec<String> = list(d.path())
            .unwrap()
            .into_iter()
            .map(|f| f.alert.id)
            .collect();
        assert_eq!(left, vec![b.id]);
        assert!(seen_dir(d.path()).join(format!("{}.json", a.id)).exists());
    }

    #[test]
    fn untrusted_entries_are_skipped_left_in_place_and_never_fatal() {
        let d = tempfile::tempdir().unwrap();
        let (good, _) = publish(d.path(), Kind::RolledBack, new("good")).unwrap();
        let dir = alert::alerts_dir(d.path());
        let fifo = dir.join("20260101T000000.000000001Z-fifo-rolled-back.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let subdir = dir.join("20260101T000000.000000002Z-dir-rolled-back.json");
        fs::create_dir(&subdir).unwrap();
        let link = dir.join("20260101T000000.000000003Z-link-rolled-back.json");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let huge = dir.join("20260101T000000.000000004Z-huge-rolled-back.json");
        File::create(&huge)
            .unwrap()
            .set_len(alert::MAX_ALERT_BYTES + 1)
            .unwrap();
        let bad = dir.join("20260101T000000.000000005Z-bad-rolled-back.json");
        fs::write(&bad, b"{\"schema\": 1").unwrap();
        let ids: Vec<String> = list(d.path())
            .unwrap()
            .into_iter()
            .map(|f| f.alert.id)
            .collect();
        assert_eq!(ids, vec![good.id.clone()]);
        assert_eq!(poll_acked(d.path(), |_| Ok(())).unwrap(), 1);
        for p in [&fifo, &subdir, &link, &huge, &bad] {
            assert!(
                fs::symlink_metadata(p).is_ok(),
                "{} left in place",
                p.display()
            );
        }
    }

    fn new(app: &str) -> NewAlert {
        NewAlert {
            app: app.into(),
            message: "m".into(),
            ..NewAlert::default()
        }
    }

    #[test]
    fn list_is_oldest_first_and_skips_temporaries_and_junk() {
        let d = tempfile::tempdir().unwrap();
        let (a, _) = publish(d.path(), Kind::HeldMajor, new("a")).unwrap();
        let (b, _) = publish(d.path(), Kind::RolledBack, new("b")).unwrap();
        let dir = alert::alerts_dir(d.path());
        fs::write(dir.join(".tmp-alert.99"), b"{").unwrap();
        fs::write(dir.join("junk.json"), b"{\"schema\": 1").unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        let ids: Vec<String> = list(d.path())
            .unwrap()
            .into_iter()
            .map(|f| f.alert.id)
            .collect();
        assert_eq!(ids, vec![a.id, b.id]);
    }

    #[test]
    fn ack_moves_once_and_rejects_unknown_and_traversal() {
        let d = tempfile::tempdir().unwrap();
        let (a, path) = publish(d.path(), Kind::HeldMajor, new("a")).unwrap();
        let r = ack(d.path(), std::slice::from_ref(&a.id)).unwrap();
        assert_eq!(
            r,
            vec![Acked {
                id: a.id.clone(),
                moved: true
            }]
        );
        assert!(!path.exists());
        assert!(seen_dir(d.path()).join(format!("{}.json", a.id)).exists());
        let again = ack(d.path(), std::slice::from_ref(&a.id)).unwrap();
        assert!(!again[0].moved);
        assert!(matches!(
            ack(d.path(), &["nope".into()]),
            Err(RelayError::Unknown { .. })
        ));
        assert!(matches!(
            ack(d.path(), &["../../etc/passwd".into()]),
            Err(RelayError::BadId(_))
        ));
        assert!(list(d.path()).unwrap().is_empty());
    }

    #[test]
    fn failed_delivery_puts_the_alert_back() {
        let d = tempfile::tempdir().unwrap();
        publish(d.path(), Kind::HeldMajor, new("a")).unwrap();
        let e = poll_acked(d.path(), |_| {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
        assert!(matches!(e, RelayError::Deliver { .. }), "{e}");
        assert_eq!(list(d.path()).unwrap().len(), 1);
        assert_eq!(poll_acked(d.path(), |_| Ok(())).unwrap(), 1);
        assert_eq!(poll_acked(d.path(), |_| Ok(())).unwrap(), 0);
    }

    #[test]
    fn a_poller_dying_before_archiving_loses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (a, _) = publish(d.path(), Kind::RollbackFailed, new("a")).unwrap();
        let (b, _) = publish(d.path(), Kind::RolledBack, new("b")).unwrap();
        // A panic right after the first alert was printed stands for a kill between the print
        // and the archiving rename.
        let printed = Mutex::new(Vec::new());
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll_acked(d.path(), |f| {
                printed.lock().unwrap().push(f.alert.id.clone());
                panic!("killed after printing");
            })
        }));
        assert!(died.is_err());
        assert_eq!(*printed.lock().unwrap(), vec![a.id.clone()]);
        // The next poll delivers both: the interrupted one again, none lost.
        let mut again = Vec::new();
        assert_eq!(
            poll_acked(d.path(), |f| {
                again.push(f.alert.id.clone());
                Ok(())
            })
            .unwrap(),
            2
        );
        assert_eq!(again, vec![a.id, b.id]);
        assert!(list(d.path()).unwrap().is_empty());
    }

    #[test]
    fn a_second_poller_delivers_nothing_while_one_is_delivering() {
        let d = tempfile::tempdir().unwrap();
        publish(d.path(), Kind::HeldMajor, new("a")).unwrap();
        let held = try_poll_lock(d.path()).unwrap().expect("free");
        assert!(try_poll_lock(d.path()).unwrap().is_none());
        assert_eq!(
            poll_acked(d.path(), |_| panic!("must not deliver")).unwrap(),
            0
        );
        drop(held);
        assert_eq!(poll_acked(d.path(), |_| Ok(())).unwrap(), 1);
        assert!(
            list(d.path()).unwrap().is_empty(),
            "the lock file is not an alert"
        );
    }

    #[test]
    fn polling_without_an_alerts_dir_is_a_no_op() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(poll_acked(d.path(), |_| Ok(())).unwrap(), 0);
        assert!(!alert::alerts_dir(d.path()).exists());
    }

    #[test]
    fn two_threads_polling_deliver_each_alert_once() {
        let d = tempfile::tempdir().unwrap();
        let mut all = BTreeSet::new();
        for i in 0..200 {
            let (a, _) = publish(d.path(), Kind::RolledBack, new(&format!("app{i}"))).unwrap();
            all.insert(a.id);
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (dir, got, barrier) = (d.path().to_owned(), got.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    poll_acked(&dir, |f| {
                        got.lock().unwrap().push(f.alert.id.clone());
                        Ok(())
                    })
                    .unwrap()
                })
            })
            .collect();
        let counts: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 200, "delivered {counts:?}");
        assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), all);
        assert_eq!(counts.iter().sum::<usize>(), 200);
    }
}
