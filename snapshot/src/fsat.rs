//! fd-relative file system access that never resolves a symlink it did not check.
//!
//! A tree (a restore target, an import's staging directory, a snapshot volume) is reached
//! from an fd of its root, opened `O_DIRECTORY|O_NOFOLLOW`; every directory below it is
//! opened one component at a time with `openat(.., O_DIRECTORY|O_NOFOLLOW)`, so a symlink (or
//! a directory swapped for one) anywhere on the way is an error, never followed. The last
//! component is then acted on with `*at` calls that do not follow it either (`fstatat`,
//! `unlinkat`, `mkdirat`, `openat(O_NOFOLLOW|O_EXCL)`, `fchownat`/`utimensat` with
//! `AT_SYMLINK_NOFOLLOW`, glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)`, which refuses symlinks).
//! Extended attributes have no `*at` calls before Linux 6.13: they go through
//! `/proc/self/fd/<dir fd>/<name>` with the `l*xattr` calls, which resolves the directory by
//! its fd (a magic link, not a path) and does not follow `<name>`.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::Mode;

use crate::error::{Error, Result, io};
use crate::manifest::Kind;

fn nix_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(Errno) -> Error + 'p {
    move |e| Error::Io {
        op,
        path: path.to_owned(),
        source: io::Error::from(e),
    }
}

fn cname(name: &[u8], label: &Path) -> Result<CString> {
    CString::new(name).map_err(|e| {
        io("naming", label)(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    })
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens the root of a tree; the root itself must be a directory, not a symlink. (The path
/// leading to it is ci-warm's own or the operator's, and is trusted.)
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    openat(nix::fcntl::AT_FDCWD, path, DIR_FLAGS, Mode::empty()).map_err(|e| {
        let why = if e == Errno::ELOOP {
            io::Error::new(
                io::ErrorKind::NotADirectory,
                "it is a symlink, which is never followed",
            )
        } else {
            io::Error::from(e)
        };
        io("opening the directory", path)(why)
    })
}

/// Opens the directory `name` in `dir` without following it.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| {
        let why = match e {
            Errno::ELOOP | Errno::ENOTDIR => io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory (a symlink is never followed)",
            ),
            e => io::Error::from(e),
        };
        io("opening the directory", label)(why)
    })
}

/// Walks a tree from its root fd, one `O_NOFOLLOW` component at a time, keeping the fds of
/// the directories on the current path so that entries in walk order cost one `openat`
/// per new directory.
pub struct Walker<'r> {
    root: BorrowedFd<'r>,
    label: PathBuf,
    /// (component, fd) from the root down.
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

impl<'r> Walker<'r> {
    /// `label` is the root's path, for error messages only.
    pub fn new(root: BorrowedFd<'r>, label: &Path) -> Walker<'r> {
        Walker {
            root,
            label: label.to_owned(),
            stack: Vec::new(),
        }
    }

    pub fn label(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.label.clone()
        } else {
            self.label.join(OsStr::from_bytes(rel))
        }
    }

    /// The directory `rel` (a path checked by `manifest::check_path`; empty for the root).
    pub fn dir(&mut self, rel: &[u8]) -> Result<BorrowedFd<'_>> {
        let comps: Vec<&[u8]> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split(|b| *b == b'/').collect()
        };
        let keep = self
            .stack
            .iter()
            .zip(&comps)
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.stack.truncate(keep);
        for i in keep..comps.len() {
            let label = self.label(&comps[..=i].join(&b'/'));
            let c = cname(comps[i], &label)?;
            let parent = self.stack.last().map_or(self.root, |(_, fd)| fd.as_fd());
            let fd = open_dir_at(parent, &c, &label)?;
            self.stack.push((comps[i].to_vec(), fd));
        }
        Ok(self.stack.last().map_or(self.root, |(_, fd)| fd.as_fd()))
    }

    /// The directory holding `rel` and `rel`'s last component; for the root itself, the
    /// root and `.`.
    pub fn parent(&mut self, rel: &[u8]) -> Result<(BorrowedFd<'_>, CString)> {
        let (dir, name): (&[u8], &[u8]) = match rel.iter().rposition(|b| *b == b'/') {
            _ if rel.is_empty() => (b"", b"."),
            Some(cut) => (&rel[..cut], &rel[cut + 1..]),
            None => (b"", rel),
        };
        let c = cname(name, &self.label(rel))?;
        Ok((self.dir(dir)?, c))
    }
}

/// The lstat of `name` in `dir`, as std metadata: `O_PATH|O_NOFOLLOW` then fstat, so the
/// result describes that very inode (a symlink included) and nothing it points to.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Metadata> {
    let fd = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).metadata()
}

/// [`lstat_at`], `None` when there is nothing there.
pub fn try_lstat_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<Option<Metadata>> {
    match lstat_at(dir, name) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("lstat", label)(e)),
    }
}

/// Opens a regular file for reading without following it or blocking on a fifo swapped in;
/// anything but a regular file is refused.
pub fn open_read_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_err("opening", label))?;
    let f = File::from(fd);
    let md = f.metadata().map_err(io("stat", label))?;
    if !md.is_file() {
        return Err(io("opening", label)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(f)
}

/// Creates a new regular file (mode 0600 until its metadata is applied); an existing name, a
/// symlink included, is an error.
pub fn create_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(nix_err("creating", label))?;
    Ok(File::from(fd))
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<()> {
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o700))
        .map_err(nix_err("creating", label))
}

pub fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<()> {
    nix::unistd::symlinkat(OsStr::from_bytes(target), dir, name)
        .map_err(nix_err("creating symlink", label))
}

pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<Vec<u8>> {
    nix::fcntl::readlinkat(dir, name)
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .map_err(nix_err("readlink", label))
}

pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    kind: Kind,
    rdev: u64,
    label: &Path,
) -> Result<()> {
    use nix::sys::stat::SFlag;
    let k = match kind {
        Kind::Fifo => SFlag::S_IFIFO,
        Kind::Chardev => SFlag::S_IFCHR,
        _ => SFlag::S_IFBLK,
    };
    nix::sys::stat::mknodat(
        dir,
        name,
        k,
        Mode::from_bits_truncate(0o600),
        rdev as libc::dev_t,
    )
    .map_err(nix_err("mknod", label))
}

/// A hardlink `new` to `old` (both fd-relative; `old` is not followed if it is a symlink).
pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    label: &Path,
) -> Result<()> {
    nix::unistd::linkat(old_dir, old, new_dir, new, AtFlags::empty())
        .map_err(nix_err("linking", label))
}

/// `/proc/self/fd/<dir>/<name>`: resolves `dir` by its fd; the l* calls do not follow `name`.
pub fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> PathBuf {
    Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(OsStr::from_bytes(name.to_bytes()))
}

/// Removes `name` from `dir`, whatever it is; a directory with everything below it (std's
/// `remove_dir_all`, which opens every level `O_NOFOLLOW` and unlinks relative to it). A
/// symlink is removed, never followed. Nothing there is fine.
pub fn remove_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Result<()> {
    let md = match lstat_at(dir, name) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("lstat", label)(e)),
    };
    if md.is_dir() {
        std::fs::remove_dir_all(proc_path(dir, name)).map_err(io("removing", label))
    } else {
        nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(nix_err("removing", label))
    }
}

/// The names in the directory `dir` (no `.`/`..`), with their kind when the directory entry
/// tells it (`None`: unknown, or a socket; ask `lstat_at`).
pub fn list(dir: BorrowedFd<'_>, label: &Path) -> Result<Vec<(CString, Option<Kind>)>> {
    use nix::dir::Type;
    let fd = openat(dir, c".", DIR_FLAGS, Mode::empty()).map_err(nix_err("listing", label))?;
    let d = nix::dir::Dir::from_fd(fd).map_err(nix_err("listing", label))?;
    let mut out = Vec::new();
    for ent in d {
        let ent = ent.map_err(nix_err("listing", label))?;
        let name = ent.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let kind = match ent.file_type() {
            Some(Type::File) => Some(Kind::File),
            Some(Type::Directory) => Some(Kind::Dir),
            Some(Type::Symlink) => Some(Kind::Symlink),
            Some(Type::Fifo) => Some(Kind::Fifo),
            Some(Type::CharacterDevice) => Some(Kind::Chardev),
            Some(Type::BlockDevice) => Some(Kind::Blockdev),
            _ => None,
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}
