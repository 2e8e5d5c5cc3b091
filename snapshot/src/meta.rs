//! File metadata the snapshot must reproduce: owner, full mode, xattrs (incl. POSIX ACLs, which
//! are the `system.posix_acl_*` xattrs), and nanosecond mtimes. Never follows symlinks.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{Result, io, nix_io};
use crate::fsat;
use crate::manifest::{Bytes, Entry, Kind, SourceId, xattr_key};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// What xattr calls address: a path (the link itself for a symlink, `l*xattr`) or an open
/// file (`f*xattr`, no path walk).
#[derive(Clone, Copy)]
enum Xa<'a> {
    Path(&'a CStr),
    Fd(std::os::fd::RawFd),
}

impl Xa<'_> {
    fn list(self, buf: *mut libc::c_char, len: usize) -> isize {
        // SAFETY: `buf` is null with `len` 0 (a size query) or a buffer of `len` bytes.
        unsafe {
            match self {
                Xa::Path(p) => libc::llistxattr(p.as_ptr(), buf, len),
                Xa::Fd(fd) => libc::flistxattr(fd, buf, len),
            }
        }
    }

    fn get(self, name: &CStr, buf: *mut libc::c_void, len: usize) -> isize {
        // SAFETY: as in `list`.
        unsafe {
            match self {
                Xa::Path(p) => libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf, len),
                Xa::Fd(fd) => libc::fgetxattr(fd, name.as_ptr(), buf, len),
            }
        }
    }

    fn set(self, name: &CStr, value: &[u8]) -> libc::c_int {
        // SAFETY: valid C strings and a buffer of the given length.
        unsafe {
            match self {
                Xa::Path(p) => libc::lsetxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                ),
                Xa::Fd(fd) => {
                    libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
                }
            }
        }
    }

    fn remove(self, name: &CStr) -> libc::c_int {
        // SAFETY: valid C strings.
        unsafe {
            match self {
                Xa::Path(p) => libc::lremovexattr(p.as_ptr(), name.as_ptr()),
                Xa::Fd(fd) => libc::fremovexattr(fd, name.as_ptr()),
            }
        }
    }
}

/// Every xattr of `path` (the link itself for a symlink).
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let c = cpath(path)?;
    xattrs_of(Xa::Path(&c))
}

fn xattrs_of(at: Xa) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let len = at.list(std::ptr::null_mut(), 0);
    if len < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(out)
        } else {
            Err(e)
        };
    }
    if len == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; len as usize];
    let len = at.list(names.as_mut_ptr().cast(), names.len());
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname =
            CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let vlen = at.get(&cname, std::ptr::null_mut(), 0);
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; vlen as usize];
        let vlen = at.get(&cname, value.as_mut_ptr().cast(), value.len());
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(vlen as usize);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// Makes `path`'s xattrs exactly `want`; returns whether it had to change any.
pub fn write_xattrs(path: &Path, want: &BTreeMap<Vec<u8>, Vec<u8>>) -> io::Result<bool> {
    let c = cpath(path)?;
    set_xattrs(Xa::Path(&c), want)
}

fn set_xattrs(at: Xa, want: &BTreeMap<Vec<u8>, Vec<u8>>) -> io::Result<bool> {
    let have = xattrs_of(at)?;
    if &have == want {
        return Ok(false);
    }
    for name in have.keys().filter(|k| !want.contains_key(*k)) {
        let cname = CString::new(name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if at.remove(&cname) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (name, value) in want {
        if have.get(name) == Some(value) {
            continue;
        }
        let cname = CString::new(name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if at.set(&cname, value) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(true)
}

pub fn kind_of(md: &std::fs::Metadata) -> Option<Kind> {
    kind_of_type(md.file_type())
}

/// The kind from a directory entry's type (no stat needed on most filesystems).
pub fn kind_of_type(ft: std::fs::FileType) -> Option<Kind> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        Some(Kind::File)
    } else if ft.is_dir() {
        Some(Kind::Dir)
    } else if ft.is_symlink() {
        Some(Kind::Symlink)
    } else if ft.is_fifo() {
        Some(Kind::Fifo)
    } else if ft.is_char_device() {
        Some(Kind::Chardev)
    } else if ft.is_block_device() {
        Some(Kind::Blockdev)
    } else {
        None
    }
}

/// The manifest entry of `path` (no hash yet) and its lstat, or `None` for a socket.
pub fn entry_of(path: &Path, rel: &Path) -> Result<Option<(Entry, std::fs::Metadata)>> {
    let md = std::fs::symlink_metadata(path).map_err(io("lstat", path))?;
    let Some(kind) = kind_of(&md) else {
        return Ok(None);
    };
    let xattrs = read_xattrs(path)
        .map_err(io("reading xattrs of", path))?
        .into_iter()
        .map(|(k, v)| (xattr_key(&k), Bytes::from_bytes(&v)))
        .collect();
    let target = if kind == Kind::Symlink {
        let t = std::fs::read_link(path).map_err(io("readlink", path))?;
        Some(Bytes::from_bytes(t.as_os_str().as_bytes()))
    } else {
        None
    };
    let mut e = Entry {
        path: None,
        path_hex: None,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == Kind::File { md.size() } else { 0 },
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
        xattrs,
        target,
        rdev: matches!(kind, Kind::Chardev | Kind::Blockdev).then(|| md.rdev()),
        link_of: None,
        sha256: None,
        data: None,
        src: (kind == Kind::File).then(|| source_id(&md)),
    };
    e.set_rel(rel);
    Ok(Some((e, md)))
}

pub fn source_id(md: &std::fs::Metadata) -> SourceId {
    SourceId {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
    }
}

/// Applies owner, mode, xattrs and mtime of `e` to `path` (order matters: chown clears
/// setuid/setgid, so chmod comes after it; the mtime comes last).
pub fn apply(path: &Path, e: &Entry) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(e.uid)),
        Some(nix::unistd::Gid::from_raw(e.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nix_io("chown", path))?;
    if e.kind != Kind::Symlink {
        chmod_at(nix::fcntl::AT_FDCWD, path, e.mode).map_err(nix_io("chmod", path))?;
    }
    write_xattrs(path, &e.xattr_map()).map_err(io("writing xattrs of", path))?;
    set_mtime(path, e)
}

/// [`apply`] for a regular file this process created and still holds open: every call goes
/// through the fd (no path walk, and chmod needs no `O_PATH` detour), same order.
pub fn apply_file(f: &std::fs::File, path: &Path, e: &Entry) -> Result<()> {
    use std::os::fd::AsFd;
    nix::unistd::fchown(
        f.as_fd(),
        Some(nix::unistd::Uid::from_raw(e.uid)),
        Some(nix::unistd::Gid::from_raw(e.gid)),
    )
    .map_err(nix_io("chown", path))?;
    nix::sys::stat::fchmod(
        f.as_fd(),
        nix::sys::stat::Mode::from_bits_truncate(e.mode as libc::mode_t),
    )
    .map_err(nix_io("chmod", path))?;
    set_xattrs(Xa::Fd(std::os::fd::AsRawFd::as_raw_fd(f)), &e.xattr_map())
        .map_err(io("writing xattrs of", path))?;
    let t = TimeSpec::new(e.mtime_sec, e.mtime_nsec);
    nix::sys::stat::futimens(f.as_fd(), &t, &t).map_err(nix_io("setting the mtime of", path))
}

/// chmod that never follows a symlink (glibc and musl refuse a symlink rather than follow
/// it, through `fchmodat2` or `O_PATH` + `/proc/self/fd`).
fn chmod_at<Fd: std::os::fd::AsFd, P: ?Sized + nix::NixPath>(
    dir: Fd,
    name: &P,
    mode: u32,
) -> nix::Result<()> {
    nix::sys::stat::fchmodat(
        dir,
        name,
        nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
}

pub fn set_mtime(path: &Path, e: &Entry) -> Result<()> {
    let t = TimeSpec::new(e.mtime_sec, e.mtime_nsec);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_io("setting the mtime of", path))
}

/// An entry addressed relative to a directory fd (see `fsat`): `name` is one component,
/// never followed; `label` is its path, for messages.
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a CStr,
    pub label: &'a Path,
}

impl At<'_> {
    fn xattr_path(&self) -> PathBuf {
        fsat::proc_path(self.dir, self.name)
    }

    pub fn lstat(&self) -> Result<std::fs::Metadata> {
        fsat::lstat_at(self.dir, self.name).map_err(io("lstat", self.label))
    }

    pub fn xattrs(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        read_xattrs(&self.xattr_path()).map_err(io("reading xattrs of", self.label))
    }

    fn chown(&self, e: &Entry) -> Result<()> {
        nix::unistd::fchownat(
            self.dir,
            self.name,
            Some(nix::unistd::Uid::from_raw(e.uid)),
            Some(nix::unistd::Gid::from_raw(e.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(nix_io("chown", self.label))
    }

    fn chmod(&self, e: &Entry) -> Result<()> {
        chmod_at(self.dir, self.name, e.mode).map_err(nix_io("chmod", self.label))
    }

    pub fn set_mtime(&self, e: &Entry) -> Result<()> {
        let t = TimeSpec::new(e.mtime_sec, e.mtime_nsec);
        utimensat(self.dir, self.name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(nix_io("setting the mtime of", self.label))
    }

    /// Owner, mode, xattrs and mtime of `e`, in that order (chown clears setuid/setgid).
    pub fn apply(&self, e: &Entry) -> Result<()> {
        self.chown(e)?;
        if e.kind != Kind::Symlink {
            self.chmod(e)?;
        }
        write_xattrs(&self.xattr_path(), &e.xattr_map())
            .map_err(io("writing xattrs of", self.label))?;
        self.set_mtime(e)
    }

    /// How the metadata differs from the entry's (content not compared), and the lstat.
    pub fn differences(&self, e: &Entry) -> Result<(Vec<String>, std::fs::Metadata)> {
        let md = self.lstat()?;
        let mut out = Vec::new();
        if kind_of(&md) != Some(e.kind) {
            out.push(format!("type is {:?}, expected {:?}", kind_of(&md), e.kind));
            return Ok((out, md));
        }
        if e.kind != Kind::Symlink && md.mode() & 0o7777 != e.mode {
            out.push(format!(
                "mode is {:o}, expected {:o}",
                md.mode() & 0o7777,
                e.mode
            ));
        }
        if (md.uid(), md.gid()) != (e.uid, e.gid) {
            out.push(format!(
                "owner is {}:{}, expected {}:{}",
                md.uid(),
                md.gid(),
                e.uid,
                e.gid
            ));
        }
        if e.kind == Kind::File && md.size() != e.size {
            out.push(format!("size is {}, expected {}", md.size(), e.size));
        }
        if (md.mtime(), md.mtime_nsec()) != (e.mtime_sec, e.mtime_nsec) {
            out.push("mtime differs".to_owned());
        }
        if let Some(rdev) = e.rdev
            && md.rdev() != rdev
        {
            out.push(format!("device is {}, expected {rdev}", md.rdev()));
        }
        if let Some(t) = &e.target {
            let have = fsat::readlink_at(self.dir, self.name, self.label)?;
            if have != t.to_bytes() {
                out.push("symlink target differs".to_owned());
            }
        }
        if self.xattrs()? != e.xattr_map() {
            out.push("xattrs differ".to_owned());
        }
        Ok((out, md))
    }

    /// Like [`At::apply`], but touches only what differs from `md` (the current lstat), so
    /// an unchanged entry costs one xattr listing and no writes. Returns whether it wrote.
    pub fn apply_if_needed(&self, e: &Entry, md: &std::fs::Metadata) -> Result<bool> {
        let chown = (md.uid(), md.gid()) != (e.uid, e.gid);
        if chown {
            self.chown(e)?;
        }
        // chown clears setuid/setgid, so the mode is rewritten after any chown.
        if e.kind != Kind::Symlink && (chown || md.mode() & 0o7777 != e.mode) {
            self.chmod(e)?;
        }
        let xattrs = write_xattrs(&self.xattr_path(), &e.xattr_map())
            .map_err(io("writing xattrs of", self.label))?;
        let mtime = (md.mtime(), md.mtime_nsec()) != (e.mtime_sec, e.mtime_nsec);
        if mtime || chown || xattrs || md.mode() & 0o7777 != e.mode {
            // Anything written above may have moved the mtime, so it is always set last.
            self.set_mtime(e)?;
            return Ok(true);
        }
        Ok(false)
    }
}
