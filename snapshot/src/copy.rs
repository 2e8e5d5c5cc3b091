//! File content: copied once, hashed on the way, holes kept as holes.
//!
//! Order of attempts: FICLONE (a reflink shares the extents, instant on btrfs/xfs) where the
//! filesystem pair may support it (see [`Probes`]), then a user-space copy of the data
//! segments only (SEEK_DATA/SEEK_HOLE), hashing the very bytes it writes. `copy_file_range` is
//! not used by a take: the hash needs the bytes in user space anyway, and one read that both
//! hashes and writes costs less than an in-kernel copy plus a second read. How the content is
//! hashed (whole, or by pieces of its data segments) is `content`'s business.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

use crate::content::{self, CHUNK};
use crate::error::{Result, io};
use crate::manifest::hex;

/// How the content got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Reflink,
    Copy,
}

/// What each filesystem pair (source device, destination device) was found to support.
///
/// A filesystem without reflinks (ext4) answers FICLONE with EOPNOTSUPP for every file, and
/// one across mounts with EXDEV; asking again for each of 20,000 files only costs. The first
/// attempt on a pair is made while holding the lock, so concurrent copies wait for its answer
/// instead of all probing at once; a definite "not supported" is remembered for the life of
/// the process, anything else (success, or an error about this one file) is asked again.
#[derive(Default)]
pub struct Probes {
    reflink: Mutex<HashMap<(u64, u64), bool>>,
    copy_range: Mutex<HashMap<(u64, u64), bool>>,
    /// FICLONE and copy_file_range calls made, for tests.
    pub attempts: AtomicU64,
}

/// The process-wide probe results.
pub static PROBES: LazyLock<Probes> = LazyLock::new(Probes::default);

/// The errnos that mean "this filesystem pair never does this", as opposed to a failure of
/// one file. (EINVAL is per file for FICLONE, e.g. on btrfs nodatacow files.)
fn unsupported(e: &io::Error, einval: bool) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS | libc::EXDEV)
    ) || (einval && e.raw_os_error() == Some(libc::EINVAL))
}

impl Probes {
    fn ask(
        &self,
        table: &Mutex<HashMap<(u64, u64), bool>>,
        pair: (u64, u64),
        einval: bool,
        attempt: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let no = || io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let Ok(mut known) = table.lock() else {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            return attempt();
        };
        match known.get(&pair) {
            Some(false) => Err(no()),
            Some(true) => {
                drop(known);
                self.attempts.fetch_add(1, Ordering::Relaxed);
                attempt()
            }
            None => {
                self.attempts.fetch_add(1, Ordering::Relaxed);
                let r = attempt();
                match &r {
                    Ok(()) => {
                        known.insert(pair, true);
                    }
                    Err(e) if unsupported(e, einval) => {
                        tracing::debug!(?pair, error = %e, "not supported on this filesystem pair");
                        known.insert(pair, false);
                    }
                    Err(_) => {}
                }
                r
            }
        }
    }

    /// FICLONE `from` into `to`, unless their filesystem pair is known not to have reflinks.
    pub fn reflink(&self, from: &File, to: &File) -> bool {
        let Some(pair) = pair(from, to) else {
            return false;
        };
        self.ask(&self.reflink, pair, false, || {
            // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
            if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .is_ok()
    }

    /// `copy_file_range` of `len` bytes at `off` (same offset in both), unless the pair is
    /// known not to support it; `Ok(0)` at the end of `from`.
    fn copy_range(&self, from: &File, to: &File, off: u64, len: u64) -> io::Result<usize> {
        let pair = pair(from, to).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let mut n = 0usize;
        self.ask(&self.copy_range, pair, true, || {
            let mut off_in = off as libc::loff_t;
            let mut off_out = off as libc::loff_t;
            // SAFETY: valid fds and offsets; the kernel copies at most `len` bytes.
            let r = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut off_in,
                    to.as_raw_fd(),
                    &mut off_out,
                    len as usize,
                    0,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            n = r as usize;
            Ok(())
        })?;
        Ok(n)
    }

    #[cfg(test)]
    fn knows_reflink(&self, from: &File, to: &File) -> Option<bool> {
        let pair = pair(from, to)?;
        self.reflink.lock().ok()?.get(&pair).copied()
    }
}

fn pair(from: &File, to: &File) -> Option<(u64, u64)> {
    Some((from.metadata().ok()?.dev(), to.metadata().ok()?.dev()))
}

/// A new, empty file `dst` (which must not exist), mode 0600 until its metadata is applied.
pub fn create(dst: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io("creating", dst))
}

/// A copied file: its manifest hash and `data` (see `content`), and how it was copied.
pub struct Copied {
    pub sha256: String,
    pub data: Option<Vec<[u64; 2]>>,
    pub method: Method,
    /// The new file's identity once its metadata was applied (read from the open file, so
    /// the verify cache needs no lstat of it); `None` when no metadata was applied.
    pub id: Option<crate::manifest::SourceId>,
}

/// Copies `src` to a new file `dst` (which must not exist) and hashes it (one thread: see
/// [`Split`] for a big file spread over several); then gives it `meta`'s metadata, if any,
/// through the still open file (after the content, so the mtime sticks).
pub fn copy_and_hash(
    src: &Path,
    dst: &Path,
    probes: &Probes,
    meta: Option<&crate::manifest::Entry>,
) -> Result<Copied> {
    let from = File::open(src).map_err(io("opening", src))?;
    let size = from.metadata().map_err(io("stat", src))?.len();
    let to = create(dst)?;
    let data = content::layout(&content::segments(&from, size), size);
    let method = if probes.reflink(&from, &to) {
        Method::Reflink
    } else {
        Method::Copy
    };
    let sha256 = match &data {
        None if method == Method::Reflink => content::hash_whole(&from, size, src)?,
        None => copy_user(&from, &to, src, dst)?,
        Some(data) => {
            let ps = content::pieces(data);
            let mut hashes = Vec::with_capacity(ps.len());
            for &(off, len) in &ps {
                hashes.push(piece(&from, &to, off, len, method, src, dst)?);
            }
            if method == Method::Copy {
                to.set_len(size).map_err(io("sizing", dst))?;
            }
            content::combine(size, &ps, &hashes)
        }
    };
    let id = match meta {
        Some(e) => {
            crate::meta::apply_file(&to, dst, e)?;
            let md = to.metadata().map_err(io("stat", dst))?;
            Some(crate::meta::source_id(&md))
        }
        None => None,
    };
    Ok(Copied {
        sha256,
        data,
        method,
        id,
    })
}

/// A big file whose pieces are copied and hashed as separate jobs, on every core.
pub struct Split {
    pub size: u64,
    pub data: Vec<[u64; 2]>,
    pub pieces: Vec<(u64, u64)>,
    pub method: Method,
}

/// Prepares a split copy of `src` to the new file `dst`: `None` when the file makes one
/// piece or fewer (copy it with [`copy_and_hash`]). The destination is created, reflinked or
/// sized, so its pieces can be written in any order.
pub fn split(src: &Path, dst: &Path, probes: &Probes) -> Result<Option<Split>> {
    let from = File::open(src).map_err(io("opening", src))?;
    let size = from.metadata().map_err(io("stat", src))?.len();
    let Some(data) = content::layout(&content::segments(&from, size), size) else {
        return Ok(None);
    };
    let pieces = content::pieces(&data);
    if pieces.len() < 2 {
        return Ok(None);
    }
    let to = create(dst)?;
    let method = if probes.reflink(&from, &to) {
        Method::Reflink
    } else {
        to.set_len(size).map_err(io("sizing", dst))?;
        Method::Copy
    };
    Ok(Some(Split {
        size,
        data,
        pieces,
        method,
    }))
}

/// One piece of a [`Split`] copy: copied (unless reflinked) and hashed.
pub fn split_piece(src: &Path, dst: &Path, off: u64, len: u64, method: Method) -> Result<[u8; 32]> {
    let from = File::open(src).map_err(io("opening", src))?;
    if method == Method::Reflink {
        return content::hash_range(&from, off, len, src);
    }
    let to = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(io("opening", dst))?;
    piece(&from, &to, off, len, method, src, dst)
}

/// Hashes `len` bytes at `off` of `from`, writing them at the same offset of `to` unless the
/// content is already there by reflink.
fn piece(
    from: &File,
    to: &File,
    off: u64,
    len: u64,
    method: Method,
    src: &Path,
    dst: &Path,
) -> Result<[u8; 32]> {
    let to = (method == Method::Copy).then_some((to, dst));
    content::hash_range_to(from, off, len, src, to)
}

/// Copies the data segments of `from` into `to` (empty, or to be overwritten) in user space,
/// holes left as holes, and returns the sha256 of the whole content (holes as zeros).
fn copy_user(from: &File, to: &File, src: &Path, dst: &Path) -> Result<String> {
    let size = from.metadata().map_err(io("stat", src))?.len();
    let sha = content::hash_whole_to(from, size, src, Some((to, dst)))?;
    to.set_len(size).map_err(io("sizing", dst))?;
    Ok(sha)
}

/// Writes everything `input` yields to `to` and returns its sha256 and length.
pub fn write_and_hash(mut input: impl Read, to: &mut File, dst: &Path) -> Result<(String, u64)> {
    use std::io::Write;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(io("reading the content of", dst))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).map_err(io("writing", dst))?;
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Like [`write_and_hash`] for an entry hashed by pieces (`data`, see `content`): only the
/// bytes inside its data segments are written (the rest stays a hole) and hashed; any other
/// byte must be zero, or the hash returned is [`content::HOLE_NOT_EMPTY`].
pub fn write_and_hash_as(
    mut input: impl Read,
    to: &File,
    dst: &Path,
    data: &[[u64; 2]],
) -> Result<(String, u64)> {
    let ps = content::pieces(data);
    let mut hashes = Vec::with_capacity(ps.len());
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let (mut pos, mut clean) = (0u64, true);
    loop {
        let n = input
            .read(&mut buf)
            .map_err(io("reading the content of", dst))?;
        if n == 0 {
            break;
        }
        let mut i = 0usize;
        while i < n {
            let at = pos + i as u64;
            let piece = ps.get(hashes.len()).copied();
            let room = (n - i) as u64;
            match piece {
                Some((off, len)) if at >= off => {
                    let take = room.min(off + len - at) as usize;
                    let bytes = &buf[i..i + take];
                    to.write_all_at(bytes, at).map_err(io("writing", dst))?;
                    h.update(bytes);
                    if at + take as u64 == off + len {
                        hashes.push(h.finalize_reset().into());
                    }
                    i += take;
                }
                _ => {
                    let gap_end = piece.map_or(u64::MAX, |(off, _)| off);
                    let take = room.min(gap_end - at) as usize;
                    clean &= buf[i..i + take].iter().all(|b| *b == 0);
                    i += take;
                }
            }
        }
        pos += n as u64;
    }
    to.set_len(pos).map_err(io("sizing", dst))?;
    if !clean {
        return Ok((content::HOLE_NOT_EMPTY.to_owned(), pos));
    }
    // A stream shorter than the layout hashes fewer pieces, which never matches.
    Ok((content::combine(pos, &ps[..hashes.len()], &hashes), pos))
}

/// Copies content only (restore: the snapshot was verified just before, so nothing is
/// hashed) from `from` into the new, empty file `to`: a reflink, else `copy_file_range` of
/// the data segments, holes left as holes. `src`/`dst` name them in errors.
pub fn copy_content(from: &File, to: &File, src: &Path, dst: &Path) -> Result<()> {
    let probes = &*PROBES;
    if probes.reflink(from, to) {
        return Ok(());
    }
    let size = from.metadata().map_err(io("stat", src))?.len();
    let mut pos = 0u64;
    while pos < size {
        let Some((data, hole)) = content::next_segment(from, pos, size) else {
            break;
        };
        let mut off = data;
        while off < hole {
            match probes.copy_range(from, to, off, hole - off) {
                Ok(0) => break,
                Ok(n) => off += n as u64,
                // EXDEV, ENOSYS, EINVAL on odd filesystems: the user-space path always works
                // (it rewrites every data segment, so what was copied so far does not matter).
                Err(_) => return copy_user(from, to, src, dst).map(|_| ()),
            }
        }
        pos = hole.max(off);
    }
    to.set_len(size).map_err(io("sizing", dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a filesystem without reflinks (the test's temporary directory, when it is ext4 or
    /// tmpfs), FICLONE is attempted for the first file only; the answer is remembered.
    #[test]
    fn an_unsupported_reflink_is_probed_once_per_filesystem_pair() {
        let d = tempfile::tempdir().unwrap();
        let probes = Probes::default();
        let mut copies = 0;
        for i in 0..5 {
            let src = d.path().join(format!("s{i}"));
            std::fs::write(&src, format!("content {i}").repeat(1000)).unwrap();
            let c = copy_and_hash(&src, &d.path().join(format!("d{i}")), &probes, None).unwrap();
            if c.method == Method::Copy {
                copies += 1;
            }
            assert_eq!(c.sha256, hex(&Sha256::digest(std::fs::read(&src).unwrap())));
        }
        let (a, b) = (
            File::open(d.path().join("s0")).unwrap(),
            File::open(d.path().join("d0")).unwrap(),
        );
        match probes.knows_reflink(&a, &b) {
            // No reflinks here: one probe, then never again.
            Some(false) => {
                assert_eq!(copies, 5);
                assert_eq!(probes.attempts.load(Ordering::Relaxed), 1);
            }
            // A reflinking filesystem (xfs, btrfs): every file is cloned.
            Some(true) => {
                assert_eq!(copies, 0);
                assert_eq!(probes.attempts.load(Ordering::Relaxed), 5);
            }
            None => panic!("the pair was never probed"),
        }
    }
}
