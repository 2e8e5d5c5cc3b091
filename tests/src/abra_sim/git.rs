//! The recipe checkout as abra's go-git sees it: clean or dirty (untracked files count),
//! HEAD's short hash, tags (and whether they are annotated), checkout, fetch.

use std::cmp::Ordering;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "advice.detachedHead=false"])
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?} in {}", dir.display()))?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the tree has no modified, staged or untracked file (§4.2: untracked files count).
pub fn is_clean(dir: &Path) -> anyhow::Result<bool> {
    Ok(
        git(dir, &["status", "--porcelain", "--untracked-files=normal"])?
            .trim()
            .is_empty(),
    )
}

/// HEAD's hash cut to 8 characters (abra's `SmallSHA`).
pub fn head_sha8(dir: &Path) -> anyhow::Result<String> {
    let full = git(dir, &["rev-parse", "HEAD"])?;
    Ok(full.trim().chars().take(8).collect())
}

/// The chaos version: `SmallSHA(HEAD)`, `+U` when dirty (§4.1 step 4, CONFIRMED).
pub fn chaos_version(dir: &Path) -> anyhow::Result<String> {
    let sha = head_sha8(dir)?;
    Ok(if is_clean(dir)? {
        sha
    } else {
        format!("{sha}+U")
    })
}

/// `(tag, annotated)` for every tag.
pub fn tags(dir: &Path) -> anyhow::Result<Vec<(String, bool)>> {
    Ok(git(
        dir,
        &[
            "for-each-ref",
            "refs/tags",
            "--format=%(refname:short) %(objecttype)",
        ],
    )?
    .lines()
    .filter_map(|l| l.rsplit_once(' '))
    .map(|(t, kind)| (t.to_owned(), kind == "tag"))
    .collect())
}

fn numbers(s: &str) -> Vec<u64> {
    s.split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect::<Vec<_>>()
}

/// Orders recipe tags `<recipe semver>+<upstream>`: the recipe part numerically, then the
/// upstream part; tags that are not versions sort first.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ra, ua) = a.split_once('+').unwrap_or((a, ""));
    let (rb, ub) = b.split_once('+').unwrap_or((b, ""));
    numbers(ra)
        .cmp(&numbers(rb))
        .then_with(|| numbers(ua).cmp(&numbers(ub)))
        .then_with(|| a.cmp(b))
}

/// The newest tag, if any.
pub fn latest_tag(dir: &Path) -> anyhow::Result<Option<String>> {
    let mut t: Vec<String> = tags(dir)?.into_iter().map(|(t, _)| t).collect();
    t.sort_by(|a, b| compare_versions(a, b));
    Ok(t.pop())
}

pub fn has_tag(dir: &Path, tag: &str) -> anyhow::Result<bool> {
    Ok(tags(dir)?.iter().any(|(t, _)| t == tag))
}

/// Checks out `rev` (a tag or commit), moving the working tree (§2, §4.2).
pub fn checkout(dir: &Path, rev: &str) -> anyhow::Result<()> {
    git(dir, &["checkout", "--quiet", rev]).map(|_| ())
}

/// `git fetch --tags origin` when the checkout has an `origin`; returns false when it has none.
pub fn fetch(dir: &Path) -> anyhow::Result<bool> {
    let remotes = git(dir, &["remote"])?;
    if !remotes.lines().any(|r| r.trim() == "origin") {
        return Ok(false);
    }
    git(dir, &["fetch", "--quiet", "--tags", "origin"])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_recipe_then_upstream() {
        let mut v = vec!["1.10.0+1.0.0", "1.2.0+1.0.0", "2.0.0+2.0.0", "1.2.0+0.9.0"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            ["1.2.0+0.9.0", "1.2.0+1.0.0", "1.10.0+1.0.0", "2.0.0+2.0.0"]
        );
    }
}
