//! `ci-warm base resolve|previous`: the upgrade base of a CI run and the `previous/` overlay
//! guard. The decisions live in `crate::ci::base` and `crate::ci::previous`; this file gathers their
//! inputs (config, registry, the head checkout, the recipe's tags) and prints the answer.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Global;
use crate::canonical::registry::Registry;
use crate::ci::base::{self, Inputs, Kind, Override};
use crate::ci::previous::{self, Status};
use crate::config::Config;
use crate::config::names;
use crate::config::spec::CATALOGUE;
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::compose_version;
use crate::upgrade::recipe::{GitRecipe, RecipeSource, Rev};
use crate::upgrade::version::Version;

#[derive(Debug, Subcommand)]
pub enum BaseCmd {
    /// The version or ref a CI run upgrades from: override -> canonical (if it differs from the
    /// head) -> newest published version older than the head -> main tip -> skip.
    Resolve(ResolveArgs),
    /// Whether the recipe's `previous/` overlay applies to the base deploy, and the
    /// COMPOSE_FILE lists of the base and head deploys.
    Previous(PreviousArgs),
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The recipe, as named in the canonical registry.
    pub recipe: String,
    /// The commit under test.
    #[arg(long, value_name = "COMMIT")]
    pub head_ref: String,
    /// The head's version; default: the `coop-cloud.*.version` label of `<head-dir>/compose.yml`.
    #[arg(long, value_name = "VERSION")]
    pub head_version: Option<String>,
    /// The head checkout.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub head_dir: PathBuf,
    /// The branch the change is proposed against: without a canonical, its tip is the base
    /// (default: the repository's default branch).
    #[arg(long, value_name = "BRANCH")]
    pub target_branch: Option<String>,
    /// Use this base (a version tag, or a commit/branch) instead of resolving one.
    #[arg(long = "override", value_name = "VERSION|REF")]
    pub override_base: Option<String>,
    /// The recipe's git repository, for its tags and main tip (default: the repo configured for
    /// the recipe, else the Co-op Cloud catalogue).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Where recipe clones are cached (default: `$XDG_CACHE_HOME/ci-warm`, else
    /// `~/.cache/ci-warm`).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PreviousArgs {
    /// The resolved base version (`value` of `base resolve` when its kind is `version`).
    #[arg(
        long,
        value_name = "VERSION",
        required_unless_present = "base_dir",
        conflicts_with = "base_dir"
    )]
    pub base: Option<String>,
    /// A checkout of the base, whose compose.yml label gives its version (for a ref base).
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,
    /// The recipe checkout the COMPOSE_FILE entries are relative to.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub recipe_dir: PathBuf,
    /// The recipe's test folder, which may hold `previous/` (default: `<recipe-dir>/tests`).
    #[arg(long, value_name = "DIR")]
    pub tests: Option<PathBuf>,
    /// The COMPOSE_FILE both deploys share, `:`-separated.
    #[arg(
        long,
        value_name = "LIST",
        env = "COMPOSE_FILE",
        default_value = "compose.yml"
    )]
    pub compose_file: String,
}

pub fn run(global: &Global, cmd: BaseCmd) -> anyhow::Result<u8> {
    match cmd {
        BaseCmd::Resolve(a) => resolve(global, a),
        BaseCmd::Previous(a) => previous(global, a),
    }
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Exit::new(exit::USAGE, msg).into()
}

fn resolve(global: &Global, args: ResolveArgs) -> anyhow::Result<u8> {
    names::check("recipe", &args.recipe).map_err(|e| usage(e.to_string()))?;
    let head_ref = match Rev::parse(&args.head_ref) {
        Ok(Rev::Commit(c)) => c,
        _ => {
            return Err(usage(format!(
                "--head-ref {:?} must be a commit id (7 to 64 hex digits)",
                args.head_ref
            )));
        }
    };
    let override_base = match &args.override_base {
        None => None,
        Some(s) => Some(match s.parse::<Version>() {
            Ok(v) => Override::Version(v),
            Err(_) => {
                Rev::parse(s).map_err(|e| usage(format!("--override: {e}")))?;
                Override::Ref(s.clone())
            }
        }),
    };
    let (head_version, why) = match &args.head_version {
        Some(s) => (
            Some(
                s.parse::<Version>()
                    .map_err(|e| usage(format!("--head-version: {e}")))?,
            ),
            String::new(),
        ),
        None => match compose_version::read_checkout(&args.head_dir) {
            Ok(v) => (Some(v), String::new()),
            Err(e) => (None, e.to_string()),
        },
    };
    let target_branch = match &args.target_branch {
        None => None,
        Some(b) => match Rev::parse(b) {
            Ok(Rev::Ref(r)) if !r.starts_with("refs/") => Some(r),
            _ => {
                return Err(usage(format!(
                    "--target-branch {b:?} must be a branch name (not a version, commit or refs/ path)"
                )));
            }
        },
    };
    let config = Config::load(&global.config)?;
    let registry = Registry::load(&config.state_dir)?;
    let canonical = match registry.get(&args.recipe) {
        None => None,
        Some(entry) => Some(entry.version.parse::<Version>().with_context(|| {
            format!(
                "the canonical registry's version of recipe {} is not a recipe version",
                args.recipe
            )
        })?),
    };
    // When the canonical's own gate holds the registry's version, the canonical (and its
    // known-good data) stays on its last good: that is what a run really upgrades from.
    let hold = match &canonical {
        Some(_) if args.override_base.is_none() => {
            crate::canonical::hold(&config, &args.recipe, &registry)?
        }
        _ => None,
    };
    let (canonical, held) = match (&hold, canonical) {
        (Some(h), Some(registry_version)) => (
            Some(h.holds.parse::<Version>().with_context(|| {
                format!(
                    "the last good version {:?} of the canonical of recipe {} is not a version",
                    h.holds, args.recipe
                )
            })?),
            Some(base::Held {
                registry: registry_version,
                reason: h.reason.clone(),
            }),
        ),
        (_, canonical) => (canonical, None),
    };
    let inputs = Inputs {
        override_base,
        head_ref,
        head_version,
        canonical,
        held,
        target_branch: target_branch.clone(),
        allow_prerelease: config
            .canonicals
            .get(&args.recipe)
            .is_some_and(|c| c.allow_prerelease),
    };
    let repo = args
        .repo
        .clone()
        .or_else(|| {
            config
                .canonicals
                .get(&args.recipe)
                .and_then(|c| c.repo.clone())
        })
        .or_else(|| {
            config
                .apps
                .values()
                .find(|a| a.recipe == args.recipe)
                .and_then(|a| a.repo.clone())
        })
        .unwrap_or_else(|| format!("{CATALOGUE}/{}.git", args.recipe));
    // Fetched at most once, and only when the chain needs the tags or the main tip.
    let fetched = std::cell::OnceCell::new();
    let source = || -> anyhow::Result<&(GitRecipe, lock::AppLock)> {
        if let Some(s) = fetched.get() {
            return Ok(s);
        }
        let s = fetch_recipe(&args.recipe, &repo, args.cache.as_deref())?;
        Ok(fetched.get_or_init(|| s))
    };
    let decided = base::resolve(
        &inputs,
        &why,
        || {
            let (recipe, _) = source()?;
            Ok(recipe.versions()?.iter().map(ToString::to_string).collect())
        },
        || {
            let (recipe, _) = source()?;
            Ok(match &target_branch {
                None => recipe.main_tip()?,
                Some(b) => recipe.resolve(&Rev::Ref(format!("refs/remotes/origin/{b}")))?,
            })
        },
    )
    .with_context(|| format!("resolving the upgrade base of recipe {}", args.recipe))?;
    // A base that is the canonical's version is checked out by its tag: the tag must still be
    // the commit the registry recorded when the version was promoted. An explicit override is
    // the operator's word and needs no fetch (its repo may not even be reachable).
    if let (Kind::Version, Some(value), Some(entry), None) = (
        &decided.kind,
        &decided.value,
        registry.get(&args.recipe),
        &args.override_base,
    ) && *value == entry.version
    {
        let (recipe, _) = source()?;
        check_tag(recipe, &args.recipe, value, &entry.commit)?;
    }
    // The version a held canonical stays on was promoted before the registry moved on, and the
    // registry keeps no commit for it: its tag must at least still exist.
    if let (Kind::Version, Some(value), Some(h)) = (&decided.kind, &decided.value, &hold)
        && *value == h.holds
    {
        let (recipe, _) = source()?;
        let v: Version = value.parse().with_context(|| {
            format!(
                "the canonical's version {value:?} of recipe {}",
                args.recipe
            )
        })?;
        recipe.resolve(&Rev::Version(v)).with_context(|| {
            format!(
                "the version {value} the canonical of recipe {} holds is not a published tag",
                args.recipe
            )
        })?;
    }
    if global.json {
        super::print_json(&decided)?;
    } else {
        match (&decided.kind, &decided.value) {
            (Kind::Skip, _) | (_, None) => println!("skip: {}", decided.reason),
            (Kind::Version, Some(v)) => println!("version {v}: {}", decided.reason),
            (Kind::Ref, Some(r)) => println!("ref {r}: {}", decided.reason),
        }
    }
    Ok(exit::OK)
}

/// Errors unless tag `version` of the recipe is the commit the registry recorded (full or
/// abbreviated), naming both.
fn check_tag(
    recipe: &dyn RecipeSource,
    name: &str,
    version: &str,
    recorded: &str,
) -> anyhow::Result<()> {
    let v: Version = version
        .parse()
        .with_context(|| format!("the registry's version {version:?} of recipe {name}"))?;
    let tagged = recipe.resolve(&Rev::Version(v)).with_context(|| {
        format!("the canonical's version {version} of recipe {name} is not a published tag")
    })?;
    if !base::same_commit(&tagged, recorded) {
        anyhow::bail!(
            "the canonical registry records commit {recorded} for {name} {version}, but tag \
             {version} is now commit {tagged}; re-promote the version or fix the tag"
        );
    }
    Ok(())
}

/// Clones or fetches the recipe into the cache, holding the cache's lock (two CI runs of one
/// recipe may resolve at once) for as long as the clone is used.
fn fetch_recipe(
    recipe: &str,
    repo: &str,
    cache: Option<&Path>,
) -> anyhow::Result<(GitRecipe, lock::AppLock)> {
    let root = match cache {
        Some(c) => c.to_owned(),
        None => default_cache().context(
            "no cache directory for recipe clones: set XDG_CACHE_HOME or HOME, or pass --cache",
        )?,
    };
    let dir = root.join("recipes").join(recipe);
    let guard = lock::acquire(&dir, recipe, true)?;
    let mut source = GitRecipe::new(repo, dir.join("repo"))?;
    source.fetch()?;
    Ok((source, guard))
}

fn default_cache() -> Option<PathBuf> {
    let abs = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(abs)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(abs)
                .map(|h| h.join(".cache"))
        })
        .map(|c| c.join("ci-warm"))
}

fn previous(global: &Global, args: PreviousArgs) -> anyhow::Result<u8> {
    let base: Version = match (&args.base, &args.base_dir) {
        (Some(b), _) => b.parse().map_err(|e| usage(format!("--base: {e}")))?,
        (None, Some(dir)) => compose_version::read_checkout(dir)
            .with_context(|| format!("reading the base checkout's version in {}", dir.display()))?,
        (None, None) => return Err(usage("give --base VERSION or --base-dir DIR")),
    };
    let tests = args
        .tests
        .clone()
        .unwrap_or_else(|| args.recipe_dir.join("tests"));
    let compose: Vec<String> = args
        .compose_file
        .split(':')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let overlay = previous::guard(&tests, &args.recipe_dir, &base, &compose)
        .with_context(|| format!("checking {}", tests.join(previous::DIR).display()))?;
    if global.json {
        super::print_json(&overlay)?;
    } else {
        match overlay.status {
            Status::Apply => println!("apply: {}", overlay.reason),
            Status::Stale => println!("stale: {}", overlay.reason),
            Status::None => println!("none: {}", overlay.reason),
        }
        println!("base COMPOSE_FILE={}", overlay.base_compose_file);
        println!("head COMPOSE_FILE={}", overlay.head_compose_file);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::upgrade::recipe::test_git as git;

    #[test]
    fn a_canonical_base_whose_tag_moved_is_an_error_naming_both_commits() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "--quiet", "-b", "main"]);
        std::fs::write(src.join("compose.yml"), "a").unwrap();
        git(&src, &["add", "."]);
        git(&src, &["commit", "--quiet", "-m", "a"]);
        git(&src, &["tag", "1.0.0+1.0.0"]);
        let first = git(&src, &["rev-parse", "HEAD"]);
        let mut r = GitRecipe::new(src.to_str().unwrap(), d.path().join("cache")).unwrap();
        r.fetch().unwrap();
        check_tag(&r, "demo", "1.0.0+1.0.0", &first[..9]).unwrap();
        // The tag is moved to another commit after the promotion.
        std::fs::write(src.join("compose.yml"), "b").unwrap();
        git(&src, &["commit", "--quiet", "-am", "b"]);
        git(&src, &["tag", "-f", "1.0.0+1.0.0"]);
        let moved = git(&src, &["rev-parse", "HEAD"]);
        r.fetch().unwrap();
        let e = format!(
            "{:#}",
            check_tag(&r, "demo", "1.0.0+1.0.0", &first).unwrap_err()
        );
        assert!(e.contains(&first) && e.contains(&moved), "{e}");
        let e = format!(
            "{:#}",
            check_tag(&r, "demo", "1.1.0+1.0.0", &first).unwrap_err()
        );
        assert!(e.contains("not a published tag"), "{e}");
    }
}
