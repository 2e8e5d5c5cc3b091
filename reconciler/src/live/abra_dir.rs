//! The abra deployer's per-app `ABRA_DIR` (abra-contract §1.1, pitfall 1; docs/operations.md).
//!
//! `<state_dir>/<app>/abra/` with `servers/` (and `catalogue/`, when there is one) symlinked to
//! abra's real directory, so app env files stay where operators and CI runs find them, and its
//! own `recipes/<recipe>`: a fresh clone of ci-warm's recipe cache, checked out (detached,
//! clean) at the revision being deployed, before every deploy. Only runs of this app, which
//! hold its lock, use it: a CI run moving the shared `~/.abra/recipes/<recipe>` cannot change
//! what ci-warm deploys, and ci-warm never moves the CI's checkout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::config::spec::AppPlan;
use crate::upgrade::recipe::{GitRecipe, RecipeSource, Rev};

#[derive(Debug, Clone)]
pub struct AbraDirs {
    /// abra's real directory (`servers/`, `catalogue/`).
    pub real: PathBuf,
    /// This app's `ABRA_DIR`.
    pub run: PathBuf,
    pub recipe: String,
    /// `<real>/servers/<server>/<domain>.env`.
    pub env_file: PathBuf,
}

impl AbraDirs {
    /// `configured`, else `$ABRA_DIR`, else `~/.abra`.
    pub fn new(
        configured: Option<&Path>,
        app_dir: &Path,
        server: &str,
        plan: &AppPlan,
    ) -> anyhow::Result<AbraDirs> {
        let real = match configured {
            Some(p) => p.to_owned(),
            None => match std::env::var_os("ABRA_DIR") {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ => PathBuf::from(
                    std::env::var_os("HOME")
                        .context("neither deployer.abra_dir, $ABRA_DIR nor $HOME is set")?,
                )
                .join(".abra"),
            },
        };
        Ok(AbraDirs {
            env_file: real
                .join("servers")
                .join(server)
                .join(format!("{}.env", plan.domain)),
            real,
            run: app_dir.join("abra"),
            recipe: plan.spec.recipe.clone(),
        })
    }

    pub fn recipe_tree(&self) -> PathBuf {
        self.run.join("recipes").join(&self.recipe)
    }

    /// Links `servers/` and `catalogue/`, and clones a fresh recipe tree at `rev`.
    pub fn prepare(&self, recipe: &GitRecipe, rev: &Rev) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.run.join("recipes"))
            .with_context(|| format!("creating {}", self.run.display()))?;
        for sub in ["servers", "catalogue"] {
            let target = self.real.join(sub);
            if sub == "catalogue" && !target.exists() {
                continue;
            }
            link(&target, &self.run.join(sub))?;
        }
        let commit = recipe.resolve(rev)?;
        let tree = self.recipe_tree();
        if std::fs::symlink_metadata(&tree).is_ok() {
            std::fs::remove_dir_all(&tree)
                .with_context(|| format!("removing the previous recipe tree {}", tree.display()))?;
        }
        git(
            None,
            &[
                "clone".as_ref(),
                "--quiet".as_ref(),
                "--no-checkout".as_ref(),
                recipe.cache_dir.as_os_str(),
                tree.as_os_str(),
            ],
        )?;
        git(
            Some(&tree),
            &["checkout", "--quiet", "--force", "--detach", &commit].map(AsRef::as_ref),
        )?;
        tracing::debug!(tree = %tree.display(), %rev, commit, "prepared abra's recipe tree");
        Ok(())
    }
}

/// `link` -> `target`, replacing a wrong link; a real directory there is refused.
fn link(target: &Path, link: &Path) -> anyhow::Result<()> {
    match std::fs::read_link(link) {
        Ok(t) if t == target => return Ok(()),
        Ok(_) => std::fs::remove_file(link)
            .with_context(|| format!("replacing the link {}", link.display()))?,
        Err(_) if std::fs::symlink_metadata(link).is_ok() => bail!(
            "{} exists and is not a symlink to {}; remove it",
            link.display(),
            target.display()
        ),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

fn git(dir: Option<&Path>, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .args(args)
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
