//! Where recipe versions, release notes and compose files come from: the recipe's git
//! repository, through the `git` CLI.
//!
//! The reconciler sees only [`RecipeSource`], so unit tests fake it; [`GitRecipe`] is the real
//! one. Its cache (`<state_dir>/<app>/recipe`) is a bare repository: it has no work tree for a
//! killed run to leave half-checked-out, and every checkout goes to a fresh directory instead.
//!
//! Callers hold the app's lock (`<app>/lock`) around every call, so no two git processes ever
//! share a cache; that is what makes sweeping stale `*.lock` files after a kill safe.
//!
//! Fetching follows tags that moved on the origin (`--force`) and prunes deleted branches, but
//! keeps tags deleted on the origin: a withdrawn tag may be the app's last good version, and a
//! rollback must still be able to check it out.
//!
//! A failed fetch is always an error: treating it as "no new version" would silently freeze an
//! app on an old release.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::platform::text::redact_userinfo;
use crate::upgrade::gate::Release;
use crate::upgrade::version::{Version, parse_tags};

/// Where [`GitRecipe::fetch`] records the commit of the origin's default branch (its `HEAD`),
/// outside `refs/remotes/` so that `--prune` never touches it.
const ORIGIN_HEAD: &str = "refs/ci-warm/origin-head";

/// The release-note locations of a version, in the order their texts are joined.
fn note_paths(v: &Version) -> [String; 2] {
    [format!("release/{v}"), format!("releaseNotes/{v}.md")]
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot run git ({args}): {source}; is git installed and on PATH?")]
    Spawn {
        args: String,
        #[source]
        source: io::Error,
    },
    #[error("git {op} failed for recipe cache {cache} ({status}): {stderr}")]
    Git {
        op: String,
        cache: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("fetching recipe {url} into {cache} failed ({status}): {stderr}")]
    Fetch {
        url: String,
        cache: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("recipe repository URL {url:?} is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid git revision {rev:?}: {reason}")]
    InvalidRev { rev: String, reason: String },
    #[error("{rev} does not exist in recipe {url} (cache {cache}); was it pushed and fetched?")]
    UnknownRev {
        rev: String,
        url: String,
        cache: PathBuf,
    },
}

/// Something to check out or look up: a published version (its tag), a commit id, or a branch
/// or tag name. Every form is validated, so none can be mistaken for a git option or reach
/// outside the refs namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rev {
    Version(Version),
    /// 7 to 64 lowercase hex digits.
    Commit(String),
    /// A branch of the origin (`main`, `feature/x`) or another tag.
    Ref(String),
}

impl Rev {
    /// Reads a revision as an operator or CI would write it: a version tag if it is one, a
    /// commit id if it is hex, otherwise a branch/tag name.
    pub fn parse(s: &str) -> Result<Rev, RecipeError> {
        if let Ok(v) = s.parse::<Version>() {
            return Ok(Rev::Version(v));
        }
        let err = |reason: &str| RecipeError::InvalidRev {
            rev: s.to_owned(),
            reason: reason.to_owned(),
        };
        if (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Rev::Commit(s.to_ascii_lowercase()));
        }
        if s.is_empty() || s.len() > 200 {
            return Err(err("must be 1 to 200 characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+')))
        {
            return Err(err(&format!("contains {c:?}")));
        }
        if s.starts_with(['-', '/', '.']) || s.ends_with(['/', '.']) {
            return Err(err(
                "must not start with '-', '/' or '.', nor end with '/' or '.'",
            ));
        }
        if s.contains("..") || s.contains("//") || s.contains("/.") || s.ends_with(".lock") {
            return Err(err("must not contain '..', '//', '/.' or end in '.lock'"));
        }
        Ok(Rev::Ref(s.to_owned()))
    }

    /// The git revisions to try, most specific first.
    fn candidates(&self) -> Vec<String> {
        match self {
            Rev::Version(v) => vec![format!("refs/tags/{v}")],
            // A hex-looking name may still be a branch or tag (`cafe123`); commits win.
            Rev::Commit(c) => vec![
                c.clone(),
                format!("refs/remotes/origin/{c}"),
                format!("refs/tags/{c}"),
            ],
            Rev::Ref(r) if r.starts_with("refs/") => vec![r.clone()],
            Rev::Ref(r) => vec![format!("refs/remotes/origin/{r}"), format!("refs/tags/{r}")],
        }
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rev::Version(v) => write!(f, "version {v}"),
            Rev::Commit(c) => write!(f, "commit {c}"),
            Rev::Ref(r) => write!(f, "ref {r}"),
        }
    }
}

impl From<Version> for Rev {
    fn from(v: Version) -> Rev {
        Rev::Version(v)
    }
}

/// A recipe's published versions and files. Implementations must make a failed fetch an error.
pub trait RecipeSource {
    /// Brings the local copy up to date with the origin (cloning it the first time).
    fn fetch(&mut self) -> Result<(), RecipeError>;
    /// Published versions, ascending; tags that are not versions are ignored.
    fn versions(&self) -> Result<Vec<Version>, RecipeError>;
    /// The release note of `version` (`release/<v>`, then `releaseNotes/<v>.md`, joined by a
    /// blank line when both exist); `None` when it has none.
    fn notes(&self, version: &Version) -> Result<Option<String>, RecipeError>;
    /// The commit id `rev` points to.
    fn resolve(&self, rev: &Rev) -> Result<String, RecipeError>;
    /// Writes the files of `rev` to `dest`, replacing whatever `dest` held; returns the commit.
    fn checkout(&self, rev: &Rev, dest: &Path) -> Result<String, RecipeError>;
    /// The commit of the origin's default branch as of the last fetch.
    fn main_tip(&self) -> Result<String, RecipeError>;
    /// The newest version whose tag is reachable from `rev` (`None` if no version tag is).
    fn head_version_of(&self, rev: &Rev) -> Result<Option<Version>, RecipeError>;

    /// Every version with its note, what the safety gate takes.
    fn releases(&self) -> Result<Vec<Release>, RecipeError> {
        self.versions()?
            .into_iter()
            .map(|version| {
                let notes = self.notes(&version)?;
                Ok(Release { version, notes })
            })
            .collect()
    }
}

/// A recipe repository cached as a bare clone.
#[derive(Debug, Clone)]
pub struct GitRecipe {
    pub repo_url: String,
    pub cache_dir: PathBuf,
}

impl GitRecipe {
    pub fn new(
        repo_url: impl Into<String>,
        cache_dir: impl Into<PathBuf>,
    ) -> Result<GitRecipe, RecipeError> {
        let repo_url = repo_url.into();
        check_repo_url(&repo_url).map_err(|reason| RecipeError::InvalidUrl {
            url: redact_userinfo(&repo_url),
            reason,
        })?;
        Ok(GitRecipe {
            repo_url,
            cache_dir: cache_dir.into(),
        })
    }

    /// The cache location DESIGN.md gives an app's recipe: `<state_dir>/<app>/recipe`.
    pub fn cache_dir_for(state_dir: &Path, app: &str) -> PathBuf {
        state_dir.join(app).join("recipe")
    }

    fn command(&self, git_dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-c")
            .arg(concat_os("safe.directory=", git_dir.as_os_str()));
        for opt in [
            "protocol.ext.allow=never",
            "core.hooksPath=/dev/null",
            // Abort a transfer stalled below 1 KB/s for a minute instead of hanging the timer.
            "http.lowSpeedLimit=1000",
            "http.lowSpeedTime=60",
            // Background gc would outlive the app lock and race the next run.
            "gc.autoDetach=false",
            "init.defaultBranch=main",
            "advice.detachedHead=false",
        ] {
            cmd.arg("-c").arg(opt);
        }
        cmd.arg("--git-dir").arg(git_dir);
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_NAMESPACE")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs git against `git_dir`; a non-zero exit becomes [`RecipeError::Git`].
    fn run_in(&self, git_dir: &Path, op: &str, cmd: &mut Command) -> Result<Vec<u8>, RecipeError> {
        let out = self.output(cmd)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(RecipeError::Git {
            op: op.to_owned(),
            cache: git_dir.to_owned(),
            status: out.status.to_string(),
            stderr: stderr_text(&out.stderr),
        })
    }

    fn output(&self, cmd: &mut Command) -> Result<std::process::Output, RecipeError> {
        tracing::trace!(?cmd, "git");
        cmd.output().map_err(|source| RecipeError::Spawn {
            args: format!("{cmd:?}"),
            source,
        })
    }

    fn git<I, S>(&self, op: &str, args: I) -> Result<Vec<u8>, RecipeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(&self.cache_dir);
        cmd.args(args);
        self.run_in(&self.cache_dir, op, &mut cmd)
    }

    fn fetch_into(&self, git_dir: &Path) -> Result<(), RecipeError> {
        let mut cmd = self.command(git_dir);
        cmd.args(["fetch", "--quiet", "--tags", "--force", "--prune", "origin"])
            .arg("+refs/heads/*:refs/remotes/origin/*")
            .arg(format!("+HEAD:{ORIGIN_HEAD}"));
        let out = self.output(&mut cmd)?;
        if out.status.success() {
            return Ok(());
        }
        Err(RecipeError::Fetch {
            url: self.repo_url.clone(),
            cache: self.cache_dir.clone(),
            status: out.status.to_string(),
            stderr: stderr_text(&out.stderr),
        })
    }

    fn clone_fresh(&self) -> Result<(), RecipeError> {
        let parent = parent_of(&self.cache_dir)?;
        let name = file_name_of(&self.cache_dir)?;
        std::fs::create_dir_all(&parent).map_err(|source| RecipeError::Io {
            what: "cannot create the recipe cache's parent",
            path: parent.clone(),
            source,
        })?;
        let prefix = format!(".{name}.tmp-");
        sweep_staging(&parent, &prefix)?;
        // Clone beside the cache and rename into place, so a kill never leaves a half clone
        // where the next run would take it for a usable cache.
        let tmp = parent.join(format!("{prefix}{}", std::process::id()));
        let result = (|| {
            let mut init = Command::new("git");
            init.args(["-c", "init.defaultBranch=main", "init", "--quiet", "--bare"])
                .arg(&tmp)
                .env("LC_ALL", "C")
                .env_remove("GIT_DIR")
                .stdin(Stdio::null());
            self.run_in(&tmp, "init", &mut init)?;
            let mut cfg = self.command(&tmp);
            cfg.args(["config", "remote.origin.url", &self.repo_url]);
            self.run_in(&tmp, "config remote.origin.url", &mut cfg)?;
            self.fetch_into(&tmp)?;
            self.publish_clone(&tmp)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Puts the fresh clone at `tmp` in the cache's place: with an atomic exchange when a cache
    /// is there already (so the cache path never lacks a repository), then removes the old one.
    fn publish_clone(&self, tmp: &Path) -> Result<(), RecipeError> {
        let io = |what, source| RecipeError::Io {
            what,
            path: self.cache_dir.clone(),
            source,
        };
        if std::fs::symlink_metadata(&self.cache_dir).is_err() {
            return std::fs::rename(tmp, &self.cache_dir)
                .map_err(|e| io("cannot move the fresh clone into place at", e));
        }
        let exchanged = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            tmp,
            nix::fcntl::AT_FDCWD,
            &self.cache_dir,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        );
        if let Err(errno) = exchanged {
            // A filesystem without RENAME_EXCHANGE: move the old cache aside, then the new one
            // in; a kill in between leaves no cache, and the next run clones again.
            tracing::debug!(%errno, "no atomic exchange; replacing the recipe cache in two renames");
            let aside = tmp.with_extension("old");
            std::fs::rename(&self.cache_dir, &aside)
                .map_err(|e| io("cannot move the old recipe cache aside from", e))?;
            std::fs::rename(tmp, &self.cache_dir)
                .map_err(|e| io("cannot move the fresh clone into place at", e))?;
            std::fs::rename(&aside, tmp).map_err(|e| {
                io(
                    "cannot move the old recipe cache back to be removed from",
                    e,
                )
            })?;
        }
        // `tmp` now holds the old cache (swept by the next clone if this fails).
        if let Err(e) = std::fs::remove_dir_all(tmp) {
            tracing::warn!(path = %tmp.display(), "cannot remove the replaced recipe cache: {e}");
        }
        Ok(())
    }

    /// Why the cache cannot be fetched into as it is, if it cannot: git cannot open it, it is
    /// not a bare repository, or its origin is not the configured repository.
    fn cache_problem(&self) -> Result<Option<String>, RecipeError> {
        let out = self.output(
            self.command(&self.cache_dir)
                .args(["rev-parse", "--is-bare-repository"]),
        )?;
        if !out.status.success() {
            return Ok(Some(format!(
                "git cannot open it: {}",
                stderr_text(&out.stderr)
            )));
        }
        if String::from_utf8_lossy(&out.stdout).trim() != "true" {
            return Ok(Some("it is not a bare repository".into()));
        }
        let current = self.output(self.command(&self.cache_dir).args([
            "config",
            "--get",
            "remote.origin.url",
        ]))?;
        let current = String::from_utf8_lossy(&current.stdout).trim().to_owned();
        if current != self.repo_url {
            // Tags of another repository must not pass for this recipe's versions.
            return Ok(Some(format!(
                "its origin is {}, not the configured {}",
                crate::platform::text::quoted(&redact_userinfo(&current)),
                crate::platform::text::quoted(&redact_userinfo(&self.repo_url))
            )));
        }
        Ok(None)
    }

    /// Removes lock files a killed git left behind; they would fail every later fetch with
    /// "File exists". Safe because the caller holds the app lock.
    fn sweep_stale_locks(&self) -> Result<(), RecipeError> {
        // Top-level files (packed-refs.lock, config.lock, shallow.lock, ...) and all of refs/.
        remove_locks(&self.cache_dir, false)?;
        remove_locks(&self.cache_dir.join("refs"), true)
    }

    /// The commit `candidate` names, or `None` if it does not exist.
    fn try_resolve(&self, candidate: &str) -> Result<Option<String>, RecipeError> {
        let out = self.output(self.command(&self.cache_dir).args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{candidate}^{{commit}}"),
        ]))?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()));
        }
        // --quiet: a missing revision exits 1 and says nothing; anything else is a real error.
        if out.status.code() == Some(1) && out.stderr.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Err(RecipeError::Git {
            op: format!("rev-parse {candidate}"),
            cache: self.cache_dir.clone(),
            status: out.status.to_string(),
            stderr: stderr_text(&out.stderr),
        })
    }

    fn read_blob(&self, oid: &str) -> Result<String, RecipeError> {
        let bytes = self.git(&format!("cat-file blob {oid}"), ["cat-file", "blob", oid])?;
        // Notes are read by people and matched against phrases; a stray non-UTF-8 byte must
        // not make a whole note (and the hold it may trigger) disappear.
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Whether `url` may be handed to git as a recipe's origin; `Err` says why not. The one check
/// behind both `config check` (`apps.*.repo`, `canonicals.*.repo`) and every run that opens a
/// recipe, so the two never disagree.
///
/// Accepted: `https://`, `http://`, `ssh://`, `git://`, `file://` URLs, scp-like `user@host:path`
/// and local paths (the demo and the tests publish recipes from a local repository). Refused:
/// anything git would read as an option (a leading `-`), whitespace and control characters,
/// git's `<transport>::<address>` remote-helper syntax (`ext::` runs any command, `fd::` talks
/// to file descriptors, and any other name runs a `git-remote-<name>` program), and inline
/// credentials (a password, or any user in an `http(s)://` URL, where it is a token): they would
/// show in logs, state and alerts.
pub fn check_repo_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("it is empty".into());
    }
    if url.starts_with('-') {
        return Err("it starts with '-', which git would read as an option".into());
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it contains whitespace or control characters".into());
    }
    if let Some((transport, _)) = url.split_once("::")
        && !transport.contains('/')
    {
        return Err(format!(
            "git's `{transport}::` remote-helper syntax runs a helper program (ext:: runs any \
             command); use an https://, ssh:// or git:// URL, or a path"
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && (userinfo.contains(':') || matches!(scheme, "http" | "https"))
        {
            return Err(
                "inline credentials in the URL are refused (they would show in logs, state \
                 and alerts); give git its credentials through a credential helper or an ssh key"
                    .into(),
            );
        }
    }
    Ok(())
}

impl RecipeSource for GitRecipe {
    fn fetch(&mut self) -> Result<(), RecipeError> {
        match std::fs::symlink_metadata(&self.cache_dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(url = %self.repo_url, cache = %self.cache_dir.display(), "cloning recipe");
                return self.clone_fresh();
            }
            Err(source) => {
                return Err(RecipeError::Io {
                    what: "cannot inspect recipe cache",
                    path: self.cache_dir.clone(),
                    source,
                });
            }
            Ok(_) => {}
        }
        // The cache is only a cache: one git cannot use is cloned again (into a fresh
        // directory that replaces it atomically), never left to fail every run.
        if let Some(why) = self.cache_problem()? {
            tracing::warn!(cache = %self.cache_dir.display(), url = %redact_userinfo(&self.repo_url),
                "the recipe cache is not usable ({why}); cloning it again");
            return self.clone_fresh();
        }
        self.sweep_stale_locks()?;
        tracing::debug!(url = %redact_userinfo(&self.repo_url), cache = %self.cache_dir.display(), "fetching recipe");
        let fetched = self.fetch_into(&self.cache_dir);
        if let Err(e) = &fetched {
            // A broken cache (corrupt objects or refs) fails the fetch while a fresh clone
            // works; an unreachable origin fails both, and then the old cache stays as it was.
            tracing::warn!(cache = %self.cache_dir.display(), "fetching into the recipe cache failed ({e}); trying a fresh clone");
            match self.clone_fresh() {
                Ok(()) => {
                    tracing::warn!(cache = %self.cache_dir.display(), "the recipe cache was broken; replaced it with a fresh clone");
                    return Ok(());
                }
                Err(again) => {
                    tracing::debug!("the fresh clone failed too ({again}); keeping the cache");
                }
            }
        }
        fetched
    }

    fn versions(&self) -> Result<Vec<Version>, RecipeError> {
        let out = self.git(
            "for-each-ref refs/tags",
            ["for-each-ref", "--format=%(refname:strip=2)", "refs/tags/"],
        )?;
        let text = String::from_utf8_lossy(&out);
        Ok(parse_tags(text.lines()))
    }

    fn notes(&self, version: &Version) -> Result<Option<String>, RecipeError> {
        let rev = Rev::Version(version.clone());
        let commit = self.resolve(&rev)?;
        let paths = note_paths(version);
        let mut cmd = self.command(&self.cache_dir);
        cmd.args(["--literal-pathspecs", "ls-tree", "-z", &commit, "--"])
            .args(&paths);
        let listing = self.run_in(&self.cache_dir, &format!("ls-tree {version}"), &mut cmd)?;
        let entries = parse_ls_tree(&listing);
        let mut texts = Vec::new();
        for path in &paths {
            let Some(entry) = entries.iter().find(|e| &e.path == path) else {
                continue;
            };
            if entry.kind != "blob" || !entry.mode.starts_with("100") {
                tracing::debug!(%version, path, mode = entry.mode, "ignoring a release note that is not a regular file");
                continue;
            }
            texts.push(self.read_blob(&entry.oid)?);
        }
        Ok(match texts.len() {
            0 => None,
            _ => Some(texts.join("\n\n")),
        })
    }

    fn resolve(&self, rev: &Rev) -> Result<String, RecipeError> {
        for candidate in rev.candidates() {
            if let Some(commit) = self.try_resolve(&candidate)? {
                return Ok(commit);
            }
        }
        Err(RecipeError::UnknownRev {
            rev: rev.to_string(),
            url: self.repo_url.clone(),
            cache: self.cache_dir.clone(),
        })
    }

    fn checkout(&self, rev: &Rev, dest: &Path) -> Result<String, RecipeError> {
        let commit = self.resolve(rev)?;
        let parent = parent_of(dest)?;
        let name = file_name_of(dest)?;
        std::fs::create_dir_all(&parent).map_err(|source| RecipeError::Io {
            what: "cannot create the checkout's parent",
            path: parent.clone(),
            source,
        })?;
        let prefix = format!(".{name}.tmp-");
        sweep_staging(&parent, &prefix)?;
        // Build the tree in a private staging dir with a private index, then swap it in: a
        // killed run leaves only a staging dir (swept above next time), never a mixed tree.
        let staging = parent.join(format!("{prefix}{}", std::process::id()));
        let tree = staging.join("tree");
        let index = staging.join("index");
        let result = (|| {
            std::fs::create_dir_all(&tree).map_err(|source| RecipeError::Io {
                what: "cannot create checkout staging dir",
                path: tree.clone(),
                source,
            })?;
            let mut read = self.command(&self.cache_dir);
            read.env("GIT_INDEX_FILE", &index)
                .args(["read-tree", &commit]);
            self.run_in(&self.cache_dir, &format!("read-tree {commit}"), &mut read)?;
            let mut co = self.command(&self.cache_dir);
            co.env("GIT_INDEX_FILE", &index)
                .arg("--work-tree")
                .arg(&tree)
                .args(["checkout-index", "--all", "--force"]);
            self.run_in(
                &self.cache_dir,
                &format!("checkout-index {commit}"),
                &mut co,
            )?;
            if std::fs::symlink_metadata(dest).is_ok() {
                let old = staging.join("old");
                std::fs::rename(dest, &old).map_err(|source| RecipeError::Io {
                    what: "cannot move the previous checkout aside",
                    path: dest.to_owned(),
                    source,
                })?;
            }
            std::fs::rename(&tree, dest).map_err(|source| RecipeError::Io {
                what: "cannot move the checkout into place at",
                path: dest.to_owned(),
                source,
            })
        })();
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::warn!(path = %staging.display(), "cannot remove checkout staging dir: {e}");
        }
        result?;
        tracing::debug!(%rev, commit, dest = %dest.display(), "checked out recipe");
        Ok(commit)
    }

    fn main_tip(&self) -> Result<String, RecipeError> {
        self.try_resolve(ORIGIN_HEAD)?
            .ok_or_else(|| RecipeError::UnknownRev {
                rev: "the origin's default branch (fetch first)".into(),
                url: self.repo_url.clone(),
                cache: self.cache_dir.clone(),
            })
    }

    fn head_version_of(&self, rev: &Rev) -> Result<Option<Version>, RecipeError> {
        let commit = self.resolve(rev)?;
        let out = self.git(
            &format!("tag --merged {commit}"),
            ["tag", "--list", "--merged", &commit],
        )?;
        Ok(parse_tags(String::from_utf8_lossy(&out).lines()).pop())
    }
}

#[derive(Debug, PartialEq, Eq)]
struct TreeEntry {
    mode: String,
    kind: String,
    oid: String,
    path: String,
}

/// Parses `git ls-tree -z` output: `<mode> SP <type> SP <oid> TAB <path> NUL`.
fn parse_ls_tree(out: &[u8]) -> Vec<TreeEntry> {
    out.split(|b| *b == 0)
        .filter(|rec| !rec.is_empty())
        .filter_map(|rec| {
            let rec = String::from_utf8_lossy(rec);
            let (meta, path) = rec.split_once('\t')?;
            let mut it = meta.split(' ');
            Some(TreeEntry {
                mode: it.next()?.to_owned(),
                kind: it.next()?.to_owned(),
                oid: it.next()?.to_owned(),
                path: path.to_owned(),
            })
        })
        .collect()
}

fn stderr_text(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    if s.is_empty() {
        "no error output".to_owned()
    } else {
        s.to_owned()
    }
}

fn concat_os(a: &str, b: &OsStr) -> OsString {
    let mut s = OsString::from(a);
    s.push(b);
    s
}

fn parent_of(path: &Path) -> Result<PathBuf, RecipeError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.to_owned()),
        Some(_) => Ok(PathBuf::from(".")),
        None => Err(RecipeError::Io {
            what: "has no parent directory:",
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        }),
    }
}

fn file_name_of(path: &Path) -> Result<String, RecipeError> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| RecipeError::Io {
            what: "has no file name:",
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })
}

/// Removes `*.lock` files in `dir` (and below it when `recursive`).
fn remove_locks(dir: &Path, recursive: bool) -> Result<(), RecipeError> {
    let list_err = |source| RecipeError::Io {
        what: "cannot list",
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(list_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(list_err)?;
        if file_type.is_dir() {
            if recursive {
                remove_locks(&path, true)?;
            }
        } else if path.extension() == Some(OsStr::new("lock")) {
            tracing::warn!(path = %path.display(), "removing a stale git lock file left by an interrupted run");
            std::fs::remove_file(&path).map_err(|source| RecipeError::Io {
                what: "cannot remove stale lock file",
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Removes staging dirs (`<prefix>*`) that a killed run left in `dir`.
fn sweep_staging(dir: &Path, prefix: &str) -> Result<(), RecipeError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RecipeError::Io {
        what: "cannot list",
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing leftovers of an interrupted run");
            std::fs::remove_dir_all(&path).map_err(|source| RecipeError::Io {
                what: "cannot remove leftovers of an interrupted run at",
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Runs git in a fixture repository (tests only), with an identity; returns trimmed stdout.
#[cfg(test)]
pub fn test_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_parsing() {
        assert_eq!(
            Rev::parse("1.2.3+4.5").unwrap(),
            Rev::Version("1.2.3+4.5".parse().unwrap())
        );
        assert_eq!(
            Rev::parse("ABCDEF1").unwrap(),
            Rev::Commit("abcdef1".into())
        );
        assert_eq!(Rev::parse("main").unwrap(), Rev::Ref("main".into()));
        assert_eq!(
            Rev::parse("feature/x-1.2").unwrap(),
            Rev::Ref("feature/x-1.2".into())
        );
        assert_eq!(
            Rev::parse("refs/pull/12/head").unwrap(),
            Rev::Ref("refs/pull/12/head".into())
        );
        for bad in [
            "",
            "-b",
            "--upload-pack=x",
            "../x",
            "a/../b",
            "a..b",
            "/abs",
            "a//b",
            "a/",
            "a b",
            "a:b",
            "a^",
            "a~1",
            "@{1}",
            "x.lock",
            "a/.hidden",
            ".x",
        ] {
            let e = Rev::parse(bad).expect_err(bad);
            assert!(matches!(e, RecipeError::InvalidRev { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn rev_candidates() {
        assert_eq!(
            Rev::parse("1.0.0+1").unwrap().candidates(),
            ["refs/tags/1.0.0+1"]
        );
        assert_eq!(
            Rev::parse("main").unwrap().candidates(),
            ["refs/remotes/origin/main", "refs/tags/main"]
        );
        assert_eq!(
            Rev::parse("refs/heads/x").unwrap().candidates(),
            ["refs/heads/x"]
        );
    }

    #[test]
    fn ls_tree_parsing() {
        let out =
            b"100644 blob abc\trelease/1.0.0+1\x00120000 blob def\treleaseNotes/1.0.0+1.md\x00";
        let e = parse_ls_tree(out);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, "release/1.0.0+1");
        assert_eq!(e[0].oid, "abc");
        assert_eq!(e[1].mode, "120000");
        assert!(parse_ls_tree(b"").is_empty());
    }

    #[test]
    fn url_validation() {
        let d = Path::new("/tmp/x");
        for bad in [
            "",
            "-uhttps://x",
            "https://x y",
            "ext::sh -c x",
            "ext::sh",
            "fd::3",
            "foo::bar",
            "a\nb",
            "https://user:pw@git.example.org/r.git",
            "https://token@git.example.org/r.git",
            "ssh://git:pw@git.example.org/r.git",
        ] {
            assert!(GitRecipe::new(bad, d).is_err(), "{bad:?}");
        }
        assert!(GitRecipe::new("https://git.coopcloud.tech/coop-cloud/traefik.git", d).is_ok());
        assert!(GitRecipe::new("/srv/recipes/demo", d).is_ok());
        assert!(GitRecipe::new("file:///srv/recipes/demo", d).is_ok());
        assert!(GitRecipe::new("ssh://git@git.example.org/r.git", d).is_ok());
        assert!(GitRecipe::new("git@git.example.org:coop-cloud/r.git", d).is_ok());
        assert_eq!(
            GitRecipe::cache_dir_for(Path::new("/var/lib/ci-warm"), "traefik"),
            Path::new("/var/lib/ci-warm/traefik/recipe")
        );
    }

    #[test]
    fn note_locations() {
        let v: Version = "1.0.0+2.0-alpine".parse().unwrap();
        assert_eq!(
            note_paths(&v),
            [
                "release/1.0.0+2.0-alpine",
                "releaseNotes/1.0.0+2.0-alpine.md"
            ]
        );
    }
}
