//! `canonical promote`: the only writer of the canonical registry.
//!
//! A run promotes only when the recipe is enrolled, the result is pass, the mode is cold and no
//! PR ref is given (a PR's code must never become the base every later run upgrades from), and
//! the version is not older than the registry's. Every attempt, promoted or not, is appended
//! to `<state_dir>/promotions.jsonl` with the reason, so "why did my green run not promote?" is
//! answered on disk. The first promotion of a recipe seeds its canonical.
//!
//! A promotion that would move the registry first checks what it records: `V` must be a
//! published tag of the recipe and `C` that tag's commit (full or abbreviated); otherwise it is a
//! recorded no-op with the reason. The registry entry carries the tag's full commit.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::canonical::registry::{self, Entry, Registry};
use crate::canonical::results::{Mode, Verdict};
use crate::config::names;
use crate::config::{self, Config, spec};
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::recipe::{GitRecipe, RecipeSource, Rev};
use crate::upgrade::version::Version;

/// What a CI run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub recipe: String,
    pub version: String,
    pub commit: String,
    pub mode: Mode,
    pub result: Verdict,
    /// A PR ref (branch or commit) the run tested; any ref blocks promotion.
    pub r#ref: Option<String>,
    pub run: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The recipe's first registry entry.
    Seeded,
    Promoted,
    NoOp,
}

/// One line of `promotions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub at: String,
    pub recipe: String,
    pub version: String,
    pub commit: String,
    pub mode: Mode,
    pub result: Verdict,
    pub r#ref: Option<String>,
    pub run: Option<String>,
    pub action: Action,
    /// Why not, for a no-op (every reason that applies); what happened otherwise.
    pub reason: String,
    /// The registry's version before this attempt.
    pub previous: Option<String>,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            Action::Seeded => "seeded",
            Action::Promoted => "promoted",
            Action::NoOp => "not promoted",
        };
        write!(
            f,
            "{} {}: {action} ({})",
            self.recipe, self.version, self.reason
        )
    }
}

pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("promotions.jsonl")
}

/// The promotion matrix: `Ok` with what happens, `Err` with every reason it does not.
pub fn decide(
    enrolled: bool,
    req: &Request,
    version: &Version,
    current: Option<&Version>,
) -> Result<Action, String> {
    let mut why = Vec::new();
    if !enrolled {
        why.push(format!(
            "recipe {} is not enrolled (no `canonicals.{}` in the config)",
            req.recipe, req.recipe
        ));
    }
    if req.result != Verdict::Pass {
        why.push("the run did not pass".to_owned());
    }
    if req.mode != Mode::Cold {
        why.push(format!(
            "a {} run never promotes; only cold runs do",
            req.mode.as_str()
        ));
    }
    if let Some(r) = &req.r#ref {
        why.push(format!("the run tested ref {r}; a PR ref never promotes"));
    }
    if let Some(c) = current
        && version < c
    {
        why.push(format!(
            "{version} is older than the registry's {c}; the canonical never moves back"
        ));
    }
    if why.is_empty() {
        Ok(if current.is_some() {
            Action::Promoted
        } else {
            Action::Seeded
        })
    } else {
        Err(why.join("; "))
    }
}

fn usage(msg: String) -> anyhow::Error {
    Exit::new(exit::USAGE, msg).into()
}

/// Checks what a CI run passed on the command line.
pub fn validate(req: &Request) -> anyhow::Result<Version> {
    names::check("recipe", &req.recipe).map_err(|e| usage(e.to_string()))?;
    let version = req
        .version
        .parse::<Version>()
        .map_err(|e| usage(format!("--version {:?}: {e}", req.version)))?;
    if !(7..=64).contains(&req.commit.len()) || !req.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(format!(
            "--commit {:?} must be a commit id (7 to 64 hex digits)",
            req.commit
        )));
    }
    for (what, v) in [("--ref", &req.r#ref), ("--run", &req.run)] {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 200 || v.chars().any(char::is_control))
        {
            return Err(usage(format!(
                "{what} {v:?} must be 1 to 200 printable characters"
            )));
        }
    }
    Ok(version)
}

/// Decides, updates the registry when it promotes, and records the attempt. Holds the
/// canonical's app lock (waiting for it with `wait`) so a promotion never lands in the middle of
/// a reconcile, quick run or rewarm of the same recipe.
pub fn promote(config: &Config, req: &Request, wait: bool) -> anyhow::Result<Record> {
    let version = validate(req)?;
    let state_dir = &config.state_dir;
    let enrolled = config.canonicals.contains_key(&req.recipe);
    let _app_lock = if enrolled {
        let app = config::canonical_app_name(&req.recipe);
        Some(lock::acquire(&state_dir.join(&app), &app, wait)?)
    } else {
        None
    };
    let _registry_lock = registry::lock(state_dir)?;
    let mut registry = Registry::load(state_dir)?;
    let previous = registry.get(&req.recipe).map(|e| e.version.clone());
    let current: Option<Version> = match &previous {
        Some(v) => Some(v.parse().with_context(|| {
            format!(
                "the registry's version {v:?} of recipe {} is not a version",
                req.recipe
            )
        })?),
        None => None,
    };
    let at = crate::canonical::now();
    let decided = match decide(enrolled, req, &version, current.as_ref()) {
        Ok(action) => tag_commit(config, req, &version)?.map(|commit| (action, commit)),
        Err(why) => Err(why),
    };
    let (action, reason) = match decided {
        Ok((action, commit)) => {
            registry.canonicals.insert(
                req.recipe.clone(),
                Entry {
                    version: version.to_string(),
                    commit,
                    promoted_at: at.clone(),
                    run: req.run.clone(),
                    mode: Mode::Cold.as_str().to_owned(),
                },
            );
            registry.save(state_dir)?;
            let reason = match (&previous, action) {
                (None, _) => "first green cold run: seeds the canonical".to_owned(),
                (Some(p), _) if *p == version.to_string() => {
                    format!("re-confirms {p} (commit and run updated)")
                }
                (Some(p), _) => format!("{p} -> {version}"),
            };
            (action, reason)
        }
        Err(why) => (Action::NoOp, why),
    };
    let record = Record {
        at,
        recipe: req.recipe.clone(),
        version: version.to_string(),
        commit: req.commit.clone(),
        mode: req.mode,
        result: req.result,
        r#ref: req.r#ref.clone(),
        run: req.run.clone(),
        action,
        reason,
        previous,
    };
    append(state_dir, &record)?;
    tracing::info!(recipe = %record.recipe, version = %record.version, action = ?record.action, "{}", record.reason);
    Ok(record)
}

/// The full commit of `version`'s tag in the recipe, fetched now: `Ok(Err(why))` when the tag is
/// not published or `req.commit` is not its commit (a recorded no-op); `Err` when the recipe
/// cannot be fetched (an error: nothing is recorded). The caller holds the canonical's lock, so
/// the canonical's recipe cache is this process's.
fn tag_commit(
    config: &Config,
    req: &Request,
    version: &Version,
) -> anyhow::Result<Result<String, String>> {
    let app = config::canonical_app_name(&req.recipe);
    let plan = spec::plan(config, &app)
        .with_context(|| format!("finding the recipe repository of canonical {app}"))?;
    let mut recipe = GitRecipe::new(
        plan.repo.clone(),
        GitRecipe::cache_dir_for(&config.state_dir, &app),
    )?;
    recipe
        .fetch()
        .with_context(|| format!("fetching recipe {} to check the promoted tag", req.recipe))?;
    if !recipe.versions()?.contains(version) {
        return Ok(Err(format!(
            "{version} is not a published tag of recipe {}",
            req.recipe
        )));
    }
    let commit = recipe.resolve(&Rev::Version(version.clone()))?;
    if !same_commit(&commit, &req.commit) {
        return Ok(Err(format!(
            "commit {} is not the commit of tag {version} ({commit})",
            req.commit
        )));
    }
    Ok(Ok(commit))
}

/// Whether `given` (full or abbreviated, any case) names the full commit id `full`.
fn same_commit(full: &str, given: &str) -> bool {
    given.len() >= 7 && full.len() >= given.len() && full[..given.len()].eq_ignore_ascii_case(given)
}

/// Appends one JSON line (the caller holds the registry lock, so lines never interleave).
fn append(state_dir: &Path, record: &Record) -> anyhow::Result<()> {
    let path = log_path(state_dir);
    let mut line = serde_json::to_vec(record).context("serializing a promotion record")?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(&line)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("appending to {}", path.display()))
}

/// Every recorded attempt, oldest first.
pub fn history(state_dir: &Path) -> anyhow::Result<Vec<Record>> {
    let path = log_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "{} line {} is not a promotion record",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V100: &str = "1.0.0+1.0.0";
    const V110: &str = "1.1.0+1.0.0";

    thread_local! {
        /// The tag commits of the fixture the current test made (abbreviated to 10 digits).
        static COMMITS: std::cell::RefCell<std::collections::BTreeMap<String, String>> =
            Default::default();
    }

    fn tempdir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        COMMITS.with(|c| {
            let mut c = c.borrow_mut();
            for v in [V100, V110] {
                c.insert(v.to_owned(), commit_of(d.path(), v)[..10].to_owned());
            }
        });
        d
    }

    use crate::upgrade::recipe::test_git as git;

    /// `<state_dir>/../src`: a recipe repository with tags V100 and V110, one commit each.
    fn source(state_dir: &Path) -> std::path::PathBuf {
        let src = state_dir.join("src");
        if !src.exists() {
            std::fs::create_dir_all(&src).unwrap();
            git(&src, &["init", "--quiet", "-b", "main"]);
            for v in [V100, V110] {
                std::fs::write(src.join("compose.yml"), v).unwrap();
                git(&src, &["add", "."]);
                git(&src, &["commit", "--quiet", "-m", v]);
                git(&src, &["tag", v]);
            }
        }
        src
    }

    fn commit_of(state_dir: &Path, v: &str) -> String {
        git(
            &source(state_dir),
            &["rev-parse", &format!("{v}^{{commit}}")],
        )
    }

    fn config(state_dir: &Path) -> Config {
        let json = serde_json::json!({
            "state_dir": state_dir,
            "ci_domain": "ci.example.org",
            "canonicals": {"demo": {"repo": source(state_dir)}},
        });
        Config::parse(Path::new("test.json"), &json.to_string()).unwrap()
    }

    /// A request whose commit is the tag's, abbreviated (what a CI usually passes).
    fn req(recipe: &str, version: &str, mode: Mode, result: Verdict, r: Option<&str>) -> Request {
        Request {
            recipe: recipe.into(),
            version: version.into(),
            commit: COMMITS
                .with(|c| c.borrow().get(version).cloned())
                .unwrap_or_default(),
            mode,
            result,
            r#ref: r.map(str::to_owned),
            run: Some("run-1".into()),
        }
    }

    /// Every combination of the four conditions: only (enrolled, pass, cold, no ref) promotes,
    /// and every other one names each condition that failed.
    #[test]
    fn promote_matrix() {
        for enrolled in [true, false] {
            for result in [Verdict::Pass, Verdict::Fail] {
                for mode in [Mode::Cold, Mode::Quick] {
                    for r in [None, Some("feature/x")] {
                        let d = tempdir();
                        let c = config(d.path());
                        let recipe = if enrolled { "demo" } else { "stranger" };
                        let rec = promote(&c, &req(recipe, V100, mode, result, r), false).unwrap();
                        let reg = Registry::load(d.path()).unwrap();
                        let want = enrolled
                            && result == Verdict::Pass
                            && mode == Mode::Cold
                            && r.is_none();
                        let case = format!("{enrolled} {result:?} {mode:?} {r:?}: {rec}");
                        if want {
                            assert_eq!(rec.action, Action::Seeded, "{case}");
                            assert_eq!(reg.get("demo").unwrap().version, V100, "{case}");
                            assert_eq!(reg.get("demo").unwrap().run.as_deref(), Some("run-1"));
                        } else {
                            assert_eq!(rec.action, Action::NoOp, "{case}");
                            assert!(reg.canonicals.is_empty(), "{case}");
                            assert!(!d.path().join("registry.json").exists(), "{case}");
                        }
                        assert_eq!(rec.reason.contains("not enrolled"), !enrolled, "{case}");
                        assert_eq!(
                            rec.reason.contains("did not pass"),
                            result == Verdict::Fail,
                            "{case}"
                        );
                        assert_eq!(
                            rec.reason.contains("quick run never promotes"),
                            mode == Mode::Quick,
                            "{case}"
                        );
                        assert_eq!(
                            rec.reason.contains("PR ref never promotes"),
                            r.is_some(),
                            "{case}"
                        );
                        assert_eq!(history(d.path()).unwrap(), vec![rec], "{case}: recorded");
                    }
                }
            }
        }
    }

    #[test]
    fn first_green_seeds_then_promotes_forward_never_back() {
        let d = tempdir();
        let c = config(d.path());
        let green = |v: &str| req("demo", v, Mode::Cold, Verdict::Pass, None);
        assert_eq!(
            promote(&c, &green(V100), false).unwrap().action,
            Action::Seeded
        );
        let r = promote(&c, &green(V110), false).unwrap();
        assert_eq!(
            (r.action, r.previous.as_deref()),
            (Action::Promoted, Some(V100))
        );
        let back = promote(&c, &green(V100), false).unwrap();
        assert_eq!(back.action, Action::NoOp);
        assert!(
            back.reason.contains("older than the registry's"),
            "{}",
            back.reason
        );
        assert_eq!(
            Registry::load(d.path())
                .unwrap()
                .get("demo")
                .unwrap()
                .version,
            V110
        );
        let again = promote(&c, &green(V110), false).unwrap();
        assert_eq!(again.action, Action::Promoted);
        assert!(again.reason.contains("re-confirms"), "{}", again.reason);
        assert_eq!(history(d.path()).unwrap().len(), 4);
    }

    #[test]
    fn bad_input_is_a_usage_error_and_records_nothing() {
        let d = tempdir();
        let c = config(d.path());
        let mut r = req("demo", "not-a-version", Mode::Cold, Verdict::Pass, None);
        let e = promote(&c, &r, false).unwrap_err();
        assert_eq!(exit::code_for(&e), exit::USAGE, "{e:#}");
        r.version = V100.into();
        r.commit = "zzz".into();
        assert_eq!(
            exit::code_for(&promote(&c, &r, false).unwrap_err()),
            exit::USAGE
        );
        r.commit = "abcdef0".into();
        r.recipe = "../etc".into();
        assert_eq!(
            exit::code_for(&promote(&c, &r, false).unwrap_err()),
            exit::USAGE
        );
        assert!(history(d.path()).unwrap().is_empty());
    }

    #[test]
    fn without_waiting_a_locked_canonical_is_busy_and_nothing_moves() {
        let d = tempdir();
        let c = config(d.path());
        let held = lock::acquire(&d.path().join("warm-demo"), "warm-demo", false).unwrap();
        let e = promote(
            &c,
            &req("demo", V100, Mode::Cold, Verdict::Pass, None),
            false,
        )
        .unwrap_err();
        assert_eq!(exit::code_for(&e), exit::BUSY, "{e:#}");
        drop(held);
        assert!(Registry::load(d.path()).unwrap().canonicals.is_empty());
    }

    #[test]
    fn promotion_checks_the_tag_and_its_commit() {
        let d = tempdir();
        let c = config(d.path());
        let green = |v: &str| req("demo", v, Mode::Cold, Verdict::Pass, None);
        // Not a published tag: a recorded no-op.
        let mut untagged = green("1.2.0+1.0.0");
        untagged.commit = commit_of(d.path(), V110);
        let r = promote(&c, &untagged, false).unwrap();
        assert_eq!(r.action, Action::NoOp);
        assert!(r.reason.contains("not a published tag"), "{}", r.reason);
        // Another tag's commit: a recorded no-op naming both.
        let mut wrong = green(V110);
        wrong.commit = commit_of(d.path(), V100);
        let r = promote(&c, &wrong, false).unwrap();
        assert_eq!(r.action, Action::NoOp);
        let tag = commit_of(d.path(), V110);
        assert!(
            r.reason.contains(&wrong.commit) && r.reason.contains(&tag),
            "{}",
            r.reason
        );
        assert!(!d.path().join("registry.json").exists());
        assert_eq!(history(d.path()).unwrap().len(), 2);
        // The right commit, abbreviated and upper-case: promoted with the tag's full commit.
        let mut right = green(V110);
        right.commit = tag[..8].to_ascii_uppercase();
        assert_eq!(promote(&c, &right, false).unwrap().action, Action::Seeded);
        let reg = Registry::load(d.path()).unwrap();
        assert_eq!(reg.get("demo").unwrap().commit, tag);
    }
}
