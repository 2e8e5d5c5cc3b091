//! abra's `Recipe.Ensure` + `getDeployVersion` (contract §4.1 steps 2 and 4): chaos takes the
//! tree as it is; otherwise fetch (unless offline), refuse a dirty tree, pick the version,
//! check it out (moving the shared tree) and lint.

use std::path::Path;

use anyhow::bail;

use super::Ctx;
use super::git;
use super::lint;

pub struct Ensure<'a> {
    pub recipe: &'a str,
    pub dir: &'a Path,
    pub chaos: bool,
    pub offline: bool,
    /// The `[version]` argument.
    pub explicit: Option<&'a str>,
    /// `TYPE=<recipe>:<version>` (already dropped for `-i`).
    pub pinned: Option<&'a str>,
    /// Run the lint (deploy does, app new does not).
    pub lint: bool,
}

/// Returns the version to deploy.
pub fn ensure(ctx: &Ctx, e: &Ensure<'_>) -> anyhow::Result<String> {
    if !e.dir.join(".git").exists() {
        bail!(
            "unable to find recipe {} in {} (abra-sim never clones a recipe)",
            e.recipe,
            e.dir.display()
        );
    }
    if e.chaos {
        let v = git::chaos_version(e.dir)?;
        ctx.out
            .debug(&format!("version: taking chaos version: {v}"));
        return Ok(v);
    }
    if e.offline {
        ctx.out.debug("offline: not fetching the recipe");
    } else if !git::fetch(e.dir)? {
        ctx.out
            .debug(&format!("{} has no origin to fetch", e.recipe));
    }
    if !git::is_clean(e.dir)? {
        bail!("{} has locally unstaged changes", e.recipe);
    }
    let version = if let Some(v) = e.explicit {
        ctx.out
            .debug(&format!("version: taking deploy version from command: {v}"));
        v.to_owned()
    } else if let Some(v) = e.pinned {
        ctx.out
            .debug(&format!("version: taking version from .env file: {v}"));
        v.to_owned()
    } else if let Some(v) = git::latest_tag(e.dir)? {
        let n = git::tags(e.dir)?.len();
        ctx.out.debug(&format!(
            "selected latest recipe version {v} (from {n} available versions)"
        ));
        v
    } else {
        let v = git::head_sha8(e.dir)?;
        ctx.out
            .debug(&format!("version: no tags, taking the commit: {v}"));
        return Ok(v);
    };
    if let Err(err) = git::checkout(e.dir, &version) {
        ctx.out.debug(&format!("{err:#}"));
        bail!(
            "unable to checkout {version} of {}: not a tag or commit",
            e.recipe
        );
    }
    ctx.out
        .debug(&format!("{} checked out at {version}", e.recipe));
    if e.lint && ctx.sw.lint_r014 {
        lint::r014(e.recipe, e.dir)?;
    }
    Ok(version)
}
