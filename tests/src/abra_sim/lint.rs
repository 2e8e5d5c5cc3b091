//! The part of `abra recipe lint` a CI host meets: rule R014 (only annotated tags), which a
//! non-chaos deploy runs too (§4.2 CONFIRMED), and the TTY `recipe lint` needs (§4.8).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::bail;

use super::Ctx;
use super::git;
use super::layout;

/// R014: every tag is annotated. Lightweight ones fail the lint.
pub fn r014(recipe: &str, dir: &Path) -> anyhow::Result<()> {
    let light: Vec<String> = git::tags(dir)?
        .into_iter()
        .filter(|(_, annotated)| !annotated)
        .map(|(t, _)| t)
        .collect();
    if !light.is_empty() {
        bail!(
            "linting {recipe} failed: R014 (only annotated tags used for recipe version): lightweight tag(s) {}",
            light.join(", ")
        );
    }
    Ok(())
}

/// `abra recipe lint <recipe>`: without a terminal it fails as the real CLI does.
pub fn cmd_lint(ctx: &Ctx, recipe: &str) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("inappropriate ioctl for device");
    }
    let dir = layout::recipe_dir(&ctx.root, recipe);
    if !dir.join(".env.sample").is_file() {
        bail!(
            "unable to validate recipe: {} has no .env.sample",
            dir.display()
        );
    }
    let verdict = match r014(recipe, &dir) {
        Ok(()) => "ok",
        Err(_) => "failed",
    };
    ctx.out.print(&format!(
        "R014\terror\t{verdict}\tonly annotated tags used for recipe version"
    ));
    if verdict == "failed" {
        bail!("linting {recipe} failed");
    }
    Ok(())
}
