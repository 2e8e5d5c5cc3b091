//! Free-space pre-flight: a snapshot is refused before it starts when it would leave less than
//! the reserve free, so it never fills the disk the apps live on.

use std::path::Path;

use nix::sys::statvfs::statvfs;

use crate::error::{Error, Result, nix_io};

/// What must stay free after a snapshot: the larger of the two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reserve {
    pub bytes: u64,
    pub percent: u8,
}

/// (free bytes for unprivileged users, total bytes) of the filesystem holding `path`.
pub fn free_and_total(path: &Path) -> Result<(u64, u64)> {
    let s = statvfs(path).map_err(nix_io("statvfs", path))?;
    let frsize = s.fragment_size() as u64;
    Ok((
        s.blocks_available() as u64 * frsize,
        s.blocks() as u64 * frsize,
    ))
}

/// Refuses when writing `needed` bytes and creating `entries` inodes in `path`'s filesystem
/// would cross the reserve or run out of inodes.
pub fn check(path: &Path, needed: u64, entries: u64, reserve: Reserve) -> Result<()> {
    let s = statvfs(path).map_err(nix_io("statvfs", path))?;
    // Filesystems without an inode table (btrfs) report zero inodes: nothing to check there.
    if s.files() > 0 {
        let free_inodes = s.files_available() as u64;
        // Hardlinked names and reused files need no inode, so this overestimates a little.
        let inodes = entries + entries / 100 + 16;
        if free_inodes < inodes {
            return Err(Error::NoInodes {
                fs: path.to_owned(),
                needed: inodes,
                free: free_inodes,
            });
        }
    }
    let (free, total) = free_and_total(path)?;
    let keep = reserve.bytes.max(total / 100 * reserve.percent as u64);
    if free < needed.saturating_add(keep) {
        return Err(Error::NoSpace {
            fs: path.to_owned(),
            needed,
            free,
            reserve: keep,
        });
    }
    Ok(())
}
