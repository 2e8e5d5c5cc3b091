//! `GitRecipe` against real git repositories built in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use ci_warm::upgrade::recipe::{GitRecipe, RecipeError, RecipeSource, Rev};
use ci_warm::upgrade::version::Version;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// A recipe "upstream" repository with a working tree, like a maintainer's.
struct Origin {
    dir: PathBuf,
}

impl Origin {
    fn new(root: &Path) -> Origin {
        let dir = root.join("origin");
        std::fs::create_dir_all(&dir).unwrap();
        let o = Origin { dir };
        o.git(&["init", "-q", "-b", "main"]);
        o
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
            .args(["-c", "tag.gpgSign=false", "-c", "commit.gpgSign=false"])
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Releases `version` like a recipe maintainer: compose file, optional note, tag.
    fn release(&self, version: &str, note: Option<(&str, &str)>, annotated: bool) -> String {
        self.write(
            "compose.yml",
            &format!("# version {version}\nservices: {{}}\n"),
        );
        if let Some((path, text)) = note {
            self.write(path, text);
        }
        let commit = self.commit(&format!("release {version}"));
        if annotated {
            self.git(&["tag", "-a", "-m", version, version]);
        } else {
            self.git(&["tag", version]);
        }
        commit
    }
}

struct World {
    _tmp: tempfile::TempDir,
    origin: Origin,
    recipe: GitRecipe,
    root: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let origin = Origin::new(&root);
    origin.release("1.0.0+1.0", None, false);
    origin.release(
        "1.1.0+1.0",
        Some((
            "release/1.1.0+1.0",
            "Manual migration required: run migrate.\n",
        )),
        true,
    );
    origin.git(&["tag", "latest"]);
    origin.git(&["tag", "v9.9.9"]);
    origin.release(
        "1.2.0+1.1",
        Some((
            "releaseNotes/1.2.0+1.1.md",
            "# 1.2.0\nBreaking change in config.\n",
        )),
        false,
    );
    let cache = GitRecipe::cache_dir_for(&root.join("state"), "demo");
    let recipe = GitRecipe::new(origin.dir.to_string_lossy(), cache).unwrap();
    World {
        _tmp: tmp,
        origin,
        recipe,
        root,
    }
}

#[test]
fn fetch_clones_then_sees_new_tags() {
    let mut w = world();
    assert!(!w.recipe.cache_dir.exists());
    w.recipe.fetch().unwrap();
    assert!(
        w.recipe.cache_dir.join("HEAD").is_file(),
        "a bare clone in place"
    );
    assert_eq!(
        w.recipe.versions().unwrap(),
        [v("1.0.0+1.0"), v("1.1.0+1.0"), v("1.2.0+1.1")],
        "non-version tags ignored"
    );
    // No staging leftovers beside the cache.
    let parent = w.recipe.cache_dir.parent().unwrap();
    let names: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["recipe"]);

    w.origin.release("1.3.0+1.1", None, true);
    assert_eq!(
        w.recipe.versions().unwrap().len(),
        3,
        "nothing new before a fetch"
    );
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.versions().unwrap().last(), Some(&v("1.3.0+1.1")));
}

#[test]
fn fetch_keeps_deleted_and_follows_moved_tags() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    let old = w.recipe.resolve(&Rev::Version(v("1.2.0+1.1"))).unwrap();
    w.origin.git(&["tag", "-d", "1.0.0+1.0"]);
    let moved = w.origin.commit("retagged");
    w.origin.git(&["tag", "-f", "1.2.0+1.1"]);
    w.recipe.fetch().unwrap();
    // Kept on purpose: it may be the last good version a rollback has to check out.
    assert_eq!(
        w.recipe.versions().unwrap(),
        [v("1.0.0+1.0"), v("1.1.0+1.0"), v("1.2.0+1.1")]
    );
    let new = w.recipe.resolve(&Rev::Version(v("1.2.0+1.1"))).unwrap();
    assert_ne!(old, new);
    assert_eq!(new, moved);
}

#[test]
fn fetch_error_when_origin_vanishes() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    std::fs::rename(&w.origin.dir, w.root.join("gone")).unwrap();
    let e = w.recipe.fetch().unwrap_err();
    assert!(matches!(e, RecipeError::Fetch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("fetching recipe") && msg.contains("origin"),
        "{msg}"
    );
    // What was fetched before is still readable.
    assert_eq!(w.recipe.versions().unwrap().len(), 3);
}

#[test]
fn first_clone_failure_is_an_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("state/demo/recipe");
    let mut r = GitRecipe::new(tmp.path().join("nope").to_string_lossy(), &cache).unwrap();
    let e = r.fetch().unwrap_err();
    assert!(matches!(e, RecipeError::Fetch { .. }), "{e:?}");
    assert!(!cache.exists());
    assert_eq!(
        std::fs::read_dir(cache.parent().unwrap()).unwrap().count(),
        0
    );
}

#[test]
fn fetch_survives_leftovers_of_a_killed_run() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    let cache = w.recipe.cache_dir.clone();
    std::fs::write(cache.join("packed-refs.lock"), "").unwrap();
    std::fs::create_dir_all(cache.join("refs/tags")).unwrap();
    std::fs::write(cache.join("refs/tags/1.3.0+1.1.lock"), "").unwrap();
    // A half-made clone from a killed first run.
    std::fs::create_dir_all(cache.parent().unwrap().join(".recipe.tmp-999999/objects")).unwrap();
    w.origin.release("1.3.0+1.1", None, false);
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.versions().unwrap().last(), Some(&v("1.3.0+1.1")));
    assert!(!cache.join("packed-refs.lock").exists());
}

/// Nothing but the cache's parent holds: the cache itself, no staging or replaced copies.
fn only_the_cache_is_left(w: &World) {
    let names: Vec<_> = std::fs::read_dir(w.recipe.cache_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["recipe"]);
}

#[test]
fn a_cache_that_is_not_a_repository_is_cloned_again() {
    let mut w = world();
    std::fs::create_dir_all(&w.recipe.cache_dir).unwrap();
    std::fs::write(w.recipe.cache_dir.join("junk"), "x").unwrap();
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.versions().unwrap().len(), 3);
    assert!(!w.recipe.cache_dir.join("junk").exists());
    only_the_cache_is_left(&w);
}

#[test]
fn a_corrupt_cache_is_cloned_again() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    // git cannot open a repository without HEAD.
    std::fs::remove_file(w.recipe.cache_dir.join("HEAD")).unwrap();
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.versions().unwrap().len(), 3);
    only_the_cache_is_left(&w);

    // Opens, but every object is gone: the fetch fails, a fresh clone works.
    w.origin.release("1.3.0+1.1", None, false);
    let objects = w.recipe.cache_dir.join("objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::create_dir_all(objects.join("pack")).unwrap();
    std::fs::create_dir_all(objects.join("info")).unwrap();
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.versions().unwrap().last(), Some(&v("1.3.0+1.1")));
    w.recipe
        .checkout(&Rev::Version(v("1.3.0+1.1")), &w.root.join("co"))
        .unwrap();
    only_the_cache_is_left(&w);
}

#[test]
fn a_cache_of_another_repository_is_cloned_again() {
    let mut w = world();
    let other = Origin::new(&w.root.join("other"));
    other.release("9.0.0+9.0", None, false);
    let mut wrong = GitRecipe::new(other.dir.to_string_lossy(), &w.recipe.cache_dir).unwrap();
    wrong.fetch().unwrap();
    w.recipe.fetch().unwrap();
    assert_eq!(
        w.recipe.versions().unwrap(),
        [v("1.0.0+1.0"), v("1.1.0+1.0"), v("1.2.0+1.1")],
        "no tag of the other repository passes for a version"
    );
    only_the_cache_is_left(&w);
}

#[test]
fn changed_url_is_followed() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    let moved = w.root.join("moved");
    std::fs::rename(&w.origin.dir, &moved).unwrap();
    w.recipe.repo_url = moved.to_string_lossy().into_owned();
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.versions().unwrap().len(), 3);
}

#[test]
fn notes_from_both_locations() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.notes(&v("1.0.0+1.0")).unwrap(), None);
    assert_eq!(
        w.recipe.notes(&v("1.1.0+1.0")).unwrap().as_deref(),
        Some("Manual migration required: run migrate.\n")
    );
    assert_eq!(
        w.recipe.notes(&v("1.2.0+1.1")).unwrap().as_deref(),
        Some("# 1.2.0\nBreaking change in config.\n")
    );
    // A note file added after the tag is not part of that release.
    w.origin.write("release/1.0.0+1.0", "late note");
    w.origin.commit("late");
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.notes(&v("1.0.0+1.0")).unwrap(), None);

    let e = w.recipe.notes(&v("7.0.0+1")).unwrap_err();
    assert!(matches!(e, RecipeError::UnknownRev { .. }), "{e:?}");

    let releases = w.recipe.releases().unwrap();
    assert_eq!(releases.len(), 3);
    assert!(
        releases[1]
            .notes
            .as_deref()
            .unwrap()
            .contains("Manual migration")
    );
}

#[test]
fn both_note_files_are_joined() {
    let mut w = world();
    w.origin
        .release("1.3.0+2.0", Some(("release/1.3.0+2.0", "short")), false);
    w.origin.write("releaseNotes/1.3.0+2.0.md", "long");
    w.origin.commit("add long notes");
    w.origin.git(&["tag", "-f", "1.3.0+2.0"]);
    w.recipe.fetch().unwrap();
    assert_eq!(
        w.recipe.notes(&v("1.3.0+2.0")).unwrap().as_deref(),
        Some("short\n\nlong")
    );
}

#[test]
fn checkout_versions_and_refs_into_a_fresh_tree() {
    let mut w = world();
    w.recipe.fetch().unwrap();
    let dest = w.root.join("work/demo");
    let c1 = w
        .recipe
        .checkout(&Rev::Version(v("1.1.0+1.0")), &dest)
        .unwrap();
    let compose = std::fs::read_to_string(dest.join("compose.yml")).unwrap();
    assert!(compose.contains("1.1.0+1.0"), "{compose}");
    assert!(dest.join("release/1.1.0+1.0").is_file());
    assert!(
        !dest.join("releaseNotes").exists(),
        "later files are not in an older checkout"
    );
    assert!(!dest.join(".git").exists());

    // Replacing an existing checkout; a stray file from before must not survive.
    std::fs::write(dest.join("stray"), "x").unwrap();
    let main = Rev::parse("main").unwrap();
    let c2 = w.recipe.checkout(&main, &dest).unwrap();
    assert_ne!(c1, c2);
    assert!(dest.join("releaseNotes/1.2.0+1.1.md").is_file());
    assert!(!dest.join("stray").exists());

    // A commit id works too, and leftovers of a killed checkout are swept.
    std::fs::create_dir_all(w.root.join("work/.demo.tmp-1/tree")).unwrap();
    let short = &c1[..10];
    assert_eq!(
        w.recipe
            .checkout(&Rev::parse(short).unwrap(), &dest)
            .unwrap(),
        c1
    );
    let names: Vec<_> = std::fs::read_dir(w.root.join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["demo"]);

    let e = w
        .recipe
        .checkout(&Rev::parse("no-such-branch").unwrap(), &dest)
        .unwrap_err();
    assert!(matches!(e, RecipeError::UnknownRev { .. }), "{e:?}");
    assert!(
        dest.join("compose.yml").is_file(),
        "a failed checkout keeps the old tree"
    );
}

#[test]
fn main_tip_and_head_version() {
    let mut w = world();
    assert!(w.recipe.main_tip().is_err(), "nothing fetched yet");
    w.recipe.fetch().unwrap();
    let tip = w.origin.git(&["rev-parse", "main"]);
    assert_eq!(w.recipe.main_tip().unwrap(), tip);

    let main = Rev::parse("main").unwrap();
    assert_eq!(
        w.recipe.head_version_of(&main).unwrap(),
        Some(v("1.2.0+1.1"))
    );

    w.origin
        .git(&["checkout", "-q", "-b", "feature", "1.0.0+1.0"]);
    w.origin.commit("work on a branch");
    w.origin.git(&["checkout", "-q", "main"]);
    let next = w.origin.commit("unreleased work on main");
    w.recipe.fetch().unwrap();
    assert_eq!(w.recipe.main_tip().unwrap(), next);
    let feature = Rev::parse("feature").unwrap();
    assert_eq!(
        w.recipe.head_version_of(&feature).unwrap(),
        Some(v("1.0.0+1.0"))
    );

    // Deleting the branch on the origin prunes it here.
    w.origin.git(&["branch", "-D", "feature"]);
    w.recipe.fetch().unwrap();
    assert!(matches!(
        w.recipe.resolve(&feature),
        Err(RecipeError::UnknownRev { .. })
    ));
    assert_eq!(
        w.recipe.main_tip().unwrap(),
        next,
        "origin head survives --prune"
    );
}

#[test]
fn hex_looking_branch_names_still_resolve() {
    let mut w = world();
    w.origin.git(&["branch", "cafe123", "1.0.0+1.0"]);
    w.recipe.fetch().unwrap();
    let rev = Rev::parse("cafe123").unwrap();
    assert!(matches!(rev, Rev::Commit(_)));
    let want = w.origin.git(&["rev-parse", "1.0.0+1.0^{commit}"]);
    assert_eq!(w.recipe.resolve(&rev).unwrap(), want);
}
