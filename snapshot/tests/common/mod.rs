//! Helpers shared by the acceptance tests: tree comparison by lstat + xattrs + content +
//! hardlink grouping, an rsync dry-run check, a tiny PRNG and a tmpfs guard.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ci_warm_snapshot::{Reserve, TakeRequest};

pub fn req(parent: &Path, name: &str, src: &Path) -> TakeRequest {
    TakeRequest {
        parent: parent.to_owned(),
        sources: vec![(name.to_owned(), src.to_owned())],
        reserve: Reserve::default(),
    }
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = cpath(p);
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(n >= 0, "lgetxattr {}", p.display());
        v.truncate(n as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = cpath(p);
    let cn = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything observable about one entry (no ctime/atime/inode numbers, no dir sizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub rdev: u64,
    pub target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub nlink: u64,
    /// sha256 of the content (hex), for regular files.
    pub content: Option<String>,
}

pub struct Tree {
    pub entries: BTreeMap<PathBuf, Seen>,
    /// Hardlink groups (files with nlink > 1), as sets of relative paths.
    pub groups: BTreeSet<BTreeSet<PathBuf>>,
}

/// Every path under `dir` (itself included) with its lstat, walked without following anything.
pub fn lstat_all(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for d in std::fs::read_dir(&p).unwrap() {
                stack.push(d.unwrap().path());
            }
        }
        out.push((p, md));
    }
    out
}

/// Walks `root` without following anything; `skip` names (relative paths) are left out.
pub fn scan(root: &Path, skip: &[&str]) -> Tree {
    let mut entries = BTreeMap::new();
    let mut by_ino: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        if skip.iter().any(|s| Path::new(s) == rel) {
            continue;
        }
        let p = root.join(&rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chardev"
        } else if ft.is_block_device() {
            "blockdev"
        } else {
            "socket"
        };
        if ft.is_dir() {
            for d in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(d.unwrap().file_name()));
            }
        }
        if ft.is_file() && md.nlink() > 1 {
            by_ino
                .entry((md.dev(), md.ino()))
                .or_default()
                .insert(rel.clone());
        }
        let seen = Seen {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_file() { md.size() } else { 0 },
            mtime: (md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            target: ft.is_symlink().then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            xattrs: xattrs(&p),
            nlink: if ft.is_dir() { 0 } else { md.nlink() },
            content: ft.is_file().then(|| sha256_file(&p)),
        };
        entries.insert(rel, seen);
    }
    Tree {
        entries,
        groups: by_ino.into_values().filter(|g| g.len() > 1).collect(),
    }
}

/// Asserts the two trees are identical in everything `scan` records.
pub fn assert_same(a: &Path, b: &Path, skip: &[&str]) {
    compare(scan(a, skip), b, scan(b, skip));
}

/// [`assert_same`] against a snapshot's volume `b`, with link counts counted within each
/// tree: a snapshot shares its inodes with the spare tree the next take starts from
/// (`snapshot/.cache/spare`), so a file's names outside the volume are the store's own
/// business. Which names are hardlinked together is compared all the same (`groups`).
pub fn assert_same_snapshot(a: &Path, b: &Path, skip: &[&str]) {
    compare(
        in_tree_links(scan(a, skip)),
        b,
        in_tree_links(scan(b, skip)),
    );
}

fn in_tree_links(mut t: Tree) -> Tree {
    for (rel, seen) in t.entries.iter_mut() {
        if seen.kind == "file" {
            seen.nlink = t
                .groups
                .iter()
                .find(|g| g.contains(rel))
                .map_or(1, |g| g.len() as u64);
        }
    }
    t
}

fn compare(ta: Tree, b: &Path, tb: Tree) {
    let mut diffs = Vec::new();
    for (rel, sa) in &ta.entries {
        match tb.entries.get(rel) {
            None => diffs.push(format!("{}: missing in {}", rel.display(), b.display())),
            Some(sb) if sa != sb => {
                let mut sa2 = sa.clone();
                let mut sb2 = sb.clone();
                let content_differs = sa2.content != sb2.content;
                sa2.content = None;
                sb2.content = None;
                diffs.push(format!(
                    "{}: {:?} vs {:?}{}",
                    rel.display(),
                    sa2,
                    sb2,
                    if content_differs {
                        " (content differs)"
                    } else {
                        ""
                    }
                ))
            }
            _ => {}
        }
    }
    for rel in tb.entries.keys().filter(|r| !ta.entries.contains_key(*r)) {
        diffs.push(format!("{}: extra in {}", rel.display(), b.display()));
    }
    if ta.groups != tb.groups {
        diffs.push(format!(
            "hardlink groups: {:?} vs {:?}",
            ta.groups, tb.groups
        ));
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// `rsync -naHAXc --delete --numeric-ids --itemize-changes` prints nothing.
pub fn assert_rsync_clean(src: &Path, dst: &Path, excludes: &[&str]) {
    let mut cmd = Command::new("rsync");
    cmd.args(["-naHAXc", "--delete", "--numeric-ids", "--itemize-changes"]);
    for e in excludes {
        cmd.arg(format!("--exclude=/{e}"));
    }
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    let mut d = dst.as_os_str().to_owned();
    d.push("/");
    let out = cmd.arg(&s).arg(&d).output().unwrap();
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "rsync -naHAXc {} {} found differences:\n{}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A small tmpfs, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Names directly in `dir`.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A file or directory outside the tree under test (but inside the test's own tempdir) that a
/// hostile archive, snapshot or swap aims at: everything observable about it is recorded, so
/// a test can assert it is byte-, mode-, owner-, xattr- (and for a directory, listing-)
/// unchanged.
pub struct Victim {
    pub path: PathBuf,
    before: (Seen, Vec<String>),
}

impl Victim {
    fn record(path: &Path) -> (Seen, Vec<String>) {
        let md = std::fs::symlink_metadata(path).unwrap();
        let seen = Seen {
            kind: if md.is_dir() { "dir" } else { "file" },
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if md.is_dir() { 0 } else { md.size() },
            mtime: (md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            target: None,
            xattrs: xattrs(path),
            nlink: if md.is_dir() { 0 } else { md.nlink() },
            content: md.is_file().then(|| sha256_file(path)),
        };
        let listing = if md.is_dir() { names(path) } else { Vec::new() };
        (seen, listing)
    }

    fn dress(path: &Path, mode: u32) {
        chmod(path, mode);
        lchown(path, 1234, 5678);
        set_xattr(path, "user.victim", b"keep me");
        set_mtime(path, 1_600_000_000, 123);
    }

    /// A file with content, mode 0640, owner 1234:5678 and a user xattr.
    pub fn file(path: &Path) -> Victim {
        std::fs::write(path, b"precious data, not to be touched\n").unwrap();
        Self::dress(path, 0o640);
        Victim {
            path: path.to_owned(),
            before: Self::record(path),
        }
    }

    /// A directory holding `keep` (itself not recorded: use a second `Victim::file`).
    pub fn dir(path: &Path) -> Victim {
        std::fs::create_dir_all(path).unwrap();
        Self::dress(path, 0o750);
        Victim {
            path: path.to_owned(),
            before: Self::record(path),
        }
    }

    pub fn assert_unchanged(&self) {
        let now = Self::record(&self.path);
        assert_eq!(
            now,
            self.before,
            "the victim {} outside the tree was changed",
            self.path.display()
        );
    }
}
