//! How a regular file's content is hashed into the manifest.
//!
//! Two schemes, told apart by the entry's `data` field:
//!
//! - no `data` (every format-1 entry, and a dense file of at most [`PIECE`] bytes): `sha256` is
//!   the SHA-256 of the whole content, holes read as zeros.
//! - `data` (format 2: a file with holes, or bigger than [`PIECE`]): `data` lists the file's
//!   data segments `[offset, length]`; everything outside them is a hole and reads as zeros.
//!   Each segment is cut into pieces at multiples of [`PIECE`] (absolute offsets), each piece
//!   is hashed on its own, and `sha256` is the SHA-256 of the size and every piece's offset,
//!   length and hash (see [`combine`]). Holes cost nothing to hash, and the pieces of one big
//!   file are hashed on every core.
//!
//! A file checked against a `data` entry must also hold nothing but zeros outside its
//! segments: any data the filesystem reports there is read and must be zero (see
//! [`Checker::hole_is_clean`]), so bytes written into a hole are caught as surely as bytes
//! changed inside a segment.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, io};
use crate::manifest::hex;

/// Pieces are hashed independently, so one file's hashing spreads over every core; small
/// enough that a 512 MiB file makes 32 jobs, big enough that the per-piece cost is nothing.
pub const PIECE: u64 = 16 << 20;
/// Beyond this many data segments a file is hashed whole (holes as zeros): a manifest entry
/// stays bounded for a pathologically fragmented file.
pub const MAX_SEGMENTS: usize = 4096;
/// Read size for hashing and copying.
pub const CHUNK: usize = 1 << 20;

const DOMAIN: &[u8] = b"ci-warm content pieces v2\0";

/// The data segments `[start, end)` of `f`, in order; the whole file when the filesystem
/// cannot tell (no SEEK_DATA).
pub fn segments(f: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        match next_segment(f, pos, size) {
            None => break,
            Some((data, hole)) => {
                if hole > data {
                    out.push((data, hole));
                }
                pos = hole.max(data + 1);
            }
        }
    }
    out
}

/// The next data segment `[data, hole)` at or after `pos`: `None` when only a hole remains;
/// the whole rest when the filesystem cannot tell.
pub fn next_segment(f: &File, pos: u64, size: u64) -> Option<(u64, u64)> {
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an open fd.
    let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: only a hole remains; anything else: no sparse support, all data.
        return if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            None
        } else {
            Some((pos, size))
        };
    }
    let data = (data as u64).min(size);
    if data >= size {
        return None;
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
    // A hole never starts at data (a filesystem that says so is read as all data).
    let hole = if hole <= data as i64 {
        size
    } else {
        (hole as u64).min(size)
    };
    Some((data, hole))
}

/// The manifest's `data` for a file of `size` bytes with data segments `segs`: `None` (hash
/// it whole) for a small dense file or a pathologically fragmented one.
pub fn layout(segs: &[(u64, u64)], size: u64) -> Option<Vec<[u64; 2]>> {
    let dense = segs == [(0, size)] || size == 0;
    if (dense && size <= PIECE) || segs.len() > MAX_SEGMENTS {
        return None;
    }
    Some(segs.iter().map(|&(a, b)| [a, b - a]).collect())
}

/// The pieces of a `data` layout, `(offset, length)`, in order.
pub fn pieces(data: &[[u64; 2]]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &[off, len] in data {
        let end = off.saturating_add(len);
        let mut a = off;
        while a < end {
            let b = ((a / PIECE + 1).saturating_mul(PIECE)).min(end);
            out.push((a, b - a));
            a = b;
        }
    }
    out
}

/// What is structurally wrong with a `data` layout for a file of `size` bytes: segments must
/// be non-empty, in order, not overlapping and inside the file.
pub fn check_layout(data: &[[u64; 2]], size: u64) -> std::result::Result<(), String> {
    let mut end = 0u64;
    for (i, &[off, len]) in data.iter().enumerate() {
        let Some(stop) = off.checked_add(len) else {
            return Err(format!("data segment {i} overflows"));
        };
        if len == 0 || off < end || stop > size {
            return Err(format!(
                "data segment {i} [{off}, +{len}) is empty, out of order or beyond the size {size}"
            ));
        }
        end = stop;
    }
    if data.len() > MAX_SEGMENTS {
        return Err(format!("more than {MAX_SEGMENTS} data segments"));
    }
    Ok(())
}

/// The entry hash of a `data` file from its pieces' hashes (in the order of [`pieces`]).
pub fn combine(size: u64, pieces: &[(u64, u64)], hashes: &[[u8; 32]]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(size.to_be_bytes());
    for (&(off, len), piece) in pieces.iter().zip(hashes) {
        h.update(off.to_be_bytes());
        h.update(len.to_be_bytes());
        h.update(piece);
    }
    hex(&h.finalize())
}

/// SHA-256 of `len` bytes of `f` from `off` (a piece).
pub fn hash_range(f: &File, off: u64, len: u64, path: &Path) -> Result<[u8; 32]> {
    hash_range_to(f, off, len, path, None)
}

/// [`hash_range`], also writing the bytes at the same offset of `to` (a copy hashes the very
/// bytes it writes).
pub fn hash_range_to(
    f: &File,
    off: u64,
    len: u64,
    path: &Path,
    to: Option<(&File, &Path)>,
) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK.min(len.max(1) as usize)];
    let (mut pos, end) = (off, off + len);
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = f
            .read_at(&mut buf[..want], pos)
            .map_err(io("reading", path))?;
        if n == 0 {
            return Err(io("reading", path)(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than expected (changed while read)",
            )));
        }
        if let Some((to, dst)) = to {
            to.write_all_at(&buf[..n], pos)
                .map_err(io("writing", dst))?;
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

/// Whether everything of `f` outside the segments of `data` is zeros. Holes cost one
/// `SEEK_DATA` each; data the filesystem reports inside a hole (written into it, or a
/// filesystem that does not keep holes) is read and must be zero.
pub fn holes_are_clean(f: &File, size: u64, data: &[[u64; 2]], path: &Path) -> Result<bool> {
    let mut gaps = Vec::new();
    let mut pos = 0u64;
    for &[off, len] in data {
        if off > pos {
            gaps.push((pos, off));
        }
        pos = off + len;
    }
    if size > pos {
        gaps.push((pos, size));
    }
    let mut buf = Vec::new();
    for (start, end) in gaps {
        let mut at = start;
        while at < end {
            let Some((d, h)) = next_segment(f, at, size) else {
                break;
            };
            if d >= end {
                break;
            }
            let stop = h.min(end);
            if buf.is_empty() {
                buf = vec![0u8; CHUNK];
            }
            let mut p = d;
            while p < stop {
                let want = ((stop - p) as usize).min(buf.len());
                let n = f
                    .read_at(&mut buf[..want], p)
                    .map_err(io("reading", path))?;
                if n == 0 {
                    break;
                }
                if buf[..n].iter().any(|b| *b != 0) {
                    return Ok(false);
                }
                p += n as u64;
            }
            at = stop.max(d + 1);
        }
    }
    Ok(true)
}

/// Hashes a whole file the way its entry says (`data`: pieces, one after the other; else
/// whole) and checks its holes: [`HOLE_NOT_EMPTY`] when something sits in one.
pub fn hash_as(f: &File, size: u64, data: Option<&[[u64; 2]]>, path: &Path) -> Result<String> {
    match data {
        None => hash_whole(f, size, path),
        Some(data) => {
            let ps = pieces(data);
            let mut hashes = Vec::with_capacity(ps.len());
            for &(off, len) in &ps {
                hashes.push(hash_range(f, off, len, path)?);
            }
            if !holes_are_clean(f, size, data, path)? {
                return Ok(HOLE_NOT_EMPTY.to_owned());
            }
            Ok(combine(size, &ps, &hashes))
        }
    }
}

/// What [`hash_as`] returns for a file with data in one of its holes: never a hex hash, so
/// it never matches one.
pub const HOLE_NOT_EMPTY: &str = "data where the manifest has a hole";

/// SHA-256 of the whole content, holes read as zeros (only their data segments are read).
pub fn hash_whole(f: &File, size: u64, path: &Path) -> Result<String> {
    hash_whole_to(f, size, path, None)
}

/// [`hash_whole`], also writing every data segment at the same offset of `to` (holes are
/// left alone there, so they stay holes).
pub fn hash_whole_to(
    f: &File,
    size: u64,
    path: &Path,
    to: Option<(&File, &Path)>,
) -> Result<String> {
    let mut h = Sha256::new();
    // Sized to the file: a zeroed 1 MiB buffer per small file cost more than hashing it.
    let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
    let mut pos = 0u64;
    while pos < size {
        let Some((data, hole)) = next_segment(f, pos, size) else {
            hash_zeros(&mut h, size - pos);
            break;
        };
        hash_zeros(&mut h, data - pos);
        let mut off = data;
        while off < hole {
            let want = ((hole - off) as usize).min(buf.len());
            let n = f
                .read_at(&mut buf[..want], off)
                .map_err(io("reading", path))?;
            if n == 0 {
                // The file is shorter than it said (shrunk while read): what is missing
                // hashes as nothing, so the hash cannot match.
                return Ok(hex(&h.finalize()));
            }
            if let Some((to, dst)) = to {
                to.write_all_at(&buf[..n], off)
                    .map_err(io("writing", dst))?;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        pos = hole;
    }
    Ok(hex(&h.finalize()))
}

pub fn hash_zeros(h: &mut Sha256, mut n: u64) {
    let zeros = [0u8; 64 * 1024];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        h.update(&zeros[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cut_at_absolute_multiples() {
        let p = pieces(&[[0, 10], [PIECE - 5, 10], [3 * PIECE, 2 * PIECE + 1]]);
        assert_eq!(
            p,
            vec![
                (0, 10),
                (PIECE - 5, 5),
                (PIECE, 5),
                (3 * PIECE, PIECE),
                (4 * PIECE, PIECE),
                (5 * PIECE, 1)
            ]
        );
    }

    #[test]
    fn layouts() {
        assert_eq!(layout(&[(0, 100)], 100), None);
        assert_eq!(layout(&[], 0), None);
        assert_eq!(layout(&[], 4096), Some(vec![]));
        assert_eq!(layout(&[(0, 4096)], 8192), Some(vec![[0, 4096]]));
        assert_eq!(
            layout(&[(0, PIECE + 1)], PIECE + 1),
            Some(vec![[0, PIECE + 1]])
        );
        assert!(check_layout(&[[0, 10], [5, 10]], 100).is_err());
        assert!(check_layout(&[[0, 10], [20, 0]], 100).is_err());
        assert!(check_layout(&[[90, 20]], 100).is_err());
        assert!(check_layout(&[[u64::MAX, 2]], 100).is_err());
        assert!(check_layout(&[[0, 10], [20, 80]], 100).is_ok());
    }
}
