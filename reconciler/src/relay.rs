//! The alert relay: listing, acknowledging and polling the alert files of
//! `<state_dir>/alerts/` (written by [`crate::alert::publish`]).
//!
//! Acknowledging is one `rename(2)` into `alerts/seen/`. Polling claims an alert with that same
//! rename *before* delivering it: of two pollers racing over one file exactly one rename
//! succeeds, the other gets `ENOENT` and moves on, so every alert is delivered once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::alert::{self, Alert};
use crate::atomic;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot {op} {path}: {source}")]
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
    #[error("delivering alert {id} failed (it was put back for the next poll): {source}")]
    Deliver {
        id: String,
        #[source]
        source: io::Error,
    },
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

/// The alerts in `dir`, oldest first. A file that does not parse is logged and skipped (it
/// cannot be a published alert: those appear whole), never fatal for the others.
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
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Claimed by a concurrent poller or ack between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        match serde_json::from_slice::<Alert>(&bytes) {
            Ok(alert) if alert.id == id => out.push(Found { alert, path }),
            Ok(alert) => tracing::warn!(path = %path.display(), inner = %alert.id,
                "skipping an alert whose id does not match its file name"),
            Err(e) => {
                tracing::warn!(path = %path.display(), "skipping an unreadable alert file: {e}")
            }
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

/// Delivers every new alert once, oldest first: each is claimed (moved to `seen/`) and then
/// handed to `deliver`. Should delivery fail (stdout closed), the alert is moved back so the
/// next poll delivers it, and the error is returned. Returns how many were delivered.
pub fn poll(
    state_dir: &Path,
    mut deliver: impl FnMut(&Found) -> io::Result<()>,
) -> Result<usize, RelayError> {
    let mut n = 0;
    for found in list(state_dir)? {
        let id = found.alert.id.clone();
        if !claim(state_dir, &id)? {
            continue;
        }
        if let Err(source) = deliver(&found) {
            let back = fs::rename(
                seen_dir(state_dir).join(format!("{id}.json")),
                alert::alerts_dir(state_dir).join(format!("{id}.json")),
            );
            if let Err(e) = back {
                tracing::error!(alert = %id, "could not put an undelivered alert back: {e}");
            }
            return Err(RelayError::Deliver { id, source });
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Kind, NewAlert, publish};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Barrier, Mutex};

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
        let e = poll(d.path(), |_| {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
        assert!(matches!(e, RelayError::Deliver { .. }), "{e}");
        assert_eq!(list(d.path()).unwrap().len(), 1);
        assert_eq!(poll(d.path(), |_| Ok(())).unwrap(), 1);
        assert_eq!(poll(d.path(), |_| Ok(())).unwrap(), 0);
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
                    poll(&dir, |f| {
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
