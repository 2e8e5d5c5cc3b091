//! File content: copied once, hashed on the way, holes kept as holes.
//!
//! Order of attempts: FICLONE (a reflink shares the extents, instant on btrfs/xfs), then a
//! user-space copy of the data segments only (SEEK_DATA/SEEK_HOLE), hashing the very bytes it
//! writes. `copy_file_range` is not used: the hash needs the bytes in user space anyway, and
//! one read that both hashes and writes costs less than an in-kernel copy plus a second read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, io};
use crate::manifest::hex;

const CHUNK: usize = 1 << 20;

/// How the content got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Reflink,
    Copy,
}

/// Copies `src` to a new file `dst` (which must not exist) and returns its sha256.
pub fn copy_and_hash(src: &Path, dst: &Path) -> Result<(String, Method)> {
    let mut from = File::open(src).map_err(io("opening", src))?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io("creating", dst))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
    if cloned {
        return Ok((hash_file(&mut from, src)?, Method::Reflink));
    }
    Ok((copy_user(&from, &to, src, dst)?, Method::Copy))
}

/// Copies the data segments of `from` into `to` (empty, or to be overwritten) in user space,
/// holes left as holes, and returns the sha256 of the content.
fn copy_user(from: &File, to: &File, src: &Path, dst: &Path) -> Result<String> {
    let size = from.metadata().map_err(io("stat", src))?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let (data, hole) = next_segment(from, pos, size);
        // Holes hash as zeros, so a sparse file's hash equals its dense twin's.
        if data > pos {
            hash_zeros(&mut hasher, data - pos);
        }
        let mut off = data;
        while off < hole {
            let want = ((hole - off) as usize).min(CHUNK);
            let n = from
                .read_at(&mut buf[..want], off)
                .map_err(io("reading", src))?;
            if n == 0 {
                break;
            }
            to.write_all_at(&buf[..n], off)
                .map_err(io("writing", dst))?;
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        pos = hole.max(off);
    }
    to.set_len(size).map_err(io("sizing", dst))?;
    Ok(hex(&hasher.finalize()))
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

/// The next data segment `[data, hole)` at or after `pos`; the whole rest when the filesystem
/// cannot tell.
fn next_segment(f: &File, pos: u64, size: u64) -> (u64, u64) {
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an open fd.
    let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: only a hole remains; anything else: no sparse support, copy densely.
        return if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            (size, size)
        } else {
            (pos, size)
        };
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
    let hole = if hole < 0 { size as i64 } else { hole };
    (data as u64, (hole as u64).min(size))
}

fn hash_zeros(h: &mut Sha256, mut n: u64) {
    let zeros = [0u8; 64 * 1024];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        h.update(&zeros[..k]);
        n -= k as u64;
    }
}

/// sha256 of a whole file, reading data segments only.
pub fn hash_file(f: &mut File, path: &Path) -> Result<String> {
    let size = f.metadata().map_err(io("stat", path))?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let (data, hole) = next_segment(f, pos, size);
        if data > pos {
            hash_zeros(&mut hasher, data - pos);
        }
        f.seek(SeekFrom::Start(data)).map_err(io("seeking", path))?;
        let mut left = hole - data;
        while left > 0 {
            let want = (left as usize).min(CHUNK);
            let n = f.read(&mut buf[..want]).map_err(io("reading", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        pos = hole.max(data + (hole - data - left));
    }
    Ok(hex(&hasher.finalize()))
}

/// Copies content only (restore: the snapshot was verified just before, so nothing is
/// hashed) from `from` into the new, empty file `to`: a reflink, else `copy_file_range` of
/// the data segments, holes left as holes. `src`/`dst` name them in errors.
pub fn copy_content(from: &File, to: &File, src: &Path, dst: &Path) -> Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let size = from.metadata().map_err(io("stat", src))?.len();
    let mut pos = 0u64;
    while pos < size {
        let (data, hole) = next_segment(from, pos, size);
        let mut off = data;
        while off < hole {
            let mut off_in = off as libc::loff_t;
            let mut off_out = off as libc::loff_t;
            // SAFETY: valid fds and offsets; the kernel copies at most `hole - off` bytes.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut off_in,
                    to.as_raw_fd(),
                    &mut off_out,
                    (hole - off) as usize,
                    0,
                )
            };
            if n < 0 {
                // EXDEV, ENOSYS, EINVAL on odd filesystems: the user-space path always works
                // (it rewrites every data segment, so what was copied so far does not matter).
                return copy_user(from, to, src, dst).map(|_| ());
            }
            if n == 0 {
                break;
            }
            off += n as u64;
        }
        pos = hole.max(off);
    }
    to.set_len(size).map_err(io("sizing", dst))
}
