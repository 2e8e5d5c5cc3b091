//! `ci-warm base resolve|previous` end to end: the binary against a real git recipe repository,
//! a real registry.json and a head checkout's compose.yml. The branch logic itself is covered
//! table-driven in `ci_warm::ci::base`; this checks the thin I/O around it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    origin: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
        .args(["-c", "tag.gpgSign=false", "-c", "commit.gpgSign=false"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn compose(version: &str) -> String {
    format!(
        "services:\n  app:\n    deploy:\n      labels:\n        - \"coop-cloud.${{STACK_NAME}}.version={version}\"\n"
    )
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let origin = root.join("origin");
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "-q", "-b", "main"]);
        for v in ["1.0.0+1.0", "1.1.0+1.0", "1.2.0+1.1"] {
            std::fs::write(origin.join("compose.yml"), compose(v)).unwrap();
            git(&origin, &["add", "-A"]);
            git(&origin, &["commit", "-q", "-m", v]);
            git(&origin, &["tag", v]);
        }
        // Tags that are not versions, as real recipes have.
        git(&origin, &["tag", "latest"]);
        git(&origin, &["tag", "v1.3.0"]);
        let state = root.join("state");
        let config = root.join("config.json");
        std::fs::write(
            &config,
            json!({"state_dir": state, "canonicals": {"demo": {"repo": origin, "domain": "warm-demo.ci.example.org"}}})
                .to_string(),
        )
        .unwrap();
        World {
            _tmp: tmp,
            root,
            origin,
            config,
            state,
        }
    }

    fn main_tip(&self) -> String {
        git(&self.origin, &["rev-parse", "main"])
    }

    /// A head checkout declaring `version`.
    fn head(&self, version: &str) -> PathBuf {
        let dir = self.root.join(format!("head-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yml"), compose(version)).unwrap();
        dir
    }

    /// Records `version` in the registry the way `canonical promote` does: with its tag's commit
    /// (base resolve checks that the tag still points there).
    fn promote(&self, version: &str) {
        std::fs::create_dir_all(&self.state).unwrap();
        let commit = git(
            &self.origin,
            &["rev-parse", &format!("{version}^{{commit}}")],
        );
        std::fs::write(
            self.state.join("registry.json"),
            json!({"schema": 1, "canonicals": {"demo": {
                "version": version, "commit": commit.trim(), "promoted_at": "2026-11-23T00:00:00Z",
                "run": "1", "mode": "cold"}}})
            .to_string(),
        )
        .unwrap();
    }

    fn ci_warm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ci-warm"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .arg("--cache")
            .arg(self.root.join("cache"))
            .env_remove("COMPOSE_FILE")
            .output()
            .unwrap()
    }

    /// Any command, without base resolve's `--cache`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ci-warm"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn resolve(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json", "base", "resolve", "demo"];
        all.extend_from_slice(args);
        let out = self.ci_warm(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

const HEAD: &str = "fedcba9876543210fedcba9876543210fedcba98";

#[test]
fn resolve_against_a_real_recipe() {
    let w = World::new();
    let head_dir = w.head("1.3.0+1.1");
    let hd = head_dir.to_str().unwrap();

    // No canonical yet: the main tip, or skip when the head is the main tip.
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-dir", hd]),
        json!({"kind": "ref", "value": w.main_tip(), "reason": "no canonical; main branch tip"})
    );
    let tip = w.main_tip();
    assert_eq!(
        w.resolve(&["--head-ref", &tip[..10], "--head-dir", hd]),
        json!({"kind": "skip", "value": null, "reason": "head == main tip"})
    );

    // A canonical whose version differs from the head's compose label.
    w.promote("1.1.0+1.0");
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-dir", hd]),
        json!({"kind": "version", "value": "1.1.0+1.0",
               "reason": "canonical version 1.1.0+1.0 differs from head version 1.3.0+1.1"})
    );

    // Canonical == head: the newest published tag below it, never the head's own.
    w.promote("1.2.0+1.1");
    let v = w.resolve(&["--head-ref", HEAD, "--head-version", "1.2.0+1.1"]);
    assert_eq!(
        (&v["kind"], &v["value"]),
        (&json!("version"), &json!("1.1.0+1.0"))
    );
    // `value` is the tag verbatim: the CI checks out `refs/tags/<value>` and gets that version.
    let tag = v["value"].as_str().unwrap();
    let at_tag = git(
        &w.origin,
        &["show", &format!("refs/tags/{tag}:compose.yml")],
    );
    assert!(at_tag.contains(&format!("version={tag}\"")), "{at_tag}");
    w.promote("1.0.0+1.0");
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-version", "1.0.0+1.0"]),
        json!({"kind": "skip", "value": null,
               "reason": "base == head and no older published predecessor"})
    );

    // An override wins and needs no fetch: a broken repo URL is never touched.
    assert_eq!(
        w.resolve(&[
            "--head-ref",
            HEAD,
            "--override",
            "1.0.0+1.0",
            "--repo",
            "/nonexistent/repo"
        ]),
        json!({"kind": "version", "value": "1.0.0+1.0", "reason": "explicit override"})
    );
}

#[test]
fn a_respelled_head_tag_is_never_the_base() {
    let w = World::new();
    // The head's release published again under another spelling. `1.2.0+1.1` sorts below
    // `1.2.0+v1.1` in the reconciler's order, yet upgrading from it would be a no-op.
    std::fs::write(w.origin.join("compose.yml"), compose("1.2.0+v1.1")).unwrap();
    git(&w.origin, &["commit", "-q", "-am", "respelled"]);
    git(&w.origin, &["tag", "1.2.0+v1.1"]);
    for (canonical, head) in [("1.2.0+v1.1", "1.2.0+v1.1"), ("1.2.0+1.1", "1.2.0+v1.1")] {
        w.promote(canonical);
        let v = w.resolve(&["--head-ref", HEAD, "--head-version", head]);
        assert_eq!(
            v,
            json!({"kind": "version", "value": "1.1.0+1.0",
                   "reason": format!("canonical version equals head version {head}; newest published version older than it")}),
            "canonical {canonical}, head {head}"
        );
    }
}

#[test]
fn resolve_errors_are_clear() {
    let w = World::new();
    w.promote("1.1.0+1.0");
    let empty = w.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = w.ci_warm(&[
        "base",
        "resolve",
        "demo",
        "--head-ref",
        HEAD,
        "--head-dir",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--head-version") && err.contains("compose.yml"),
        "{err}"
    );

    let out = w.ci_warm(&["base", "resolve", "demo", "--head-ref", "main"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a commit id"));

    let out = w.ci_warm(&["base", "resolve", "../demo", "--head-ref", HEAD]);
    assert_eq!(out.status.code(), Some(2));

    // A fetch that fails is an error, never a silent skip.
    std::fs::write(w.state.join("registry.json"), "{\"schema\": 1}").unwrap();
    let out = w.ci_warm(&[
        "base",
        "resolve",
        "demo",
        "--head-ref",
        HEAD,
        "--repo",
        "/nonexistent/repo",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/repo"));
}

#[test]
fn previous_overlay_from_the_cli() {
    let w = World::new();
    let recipe = w.root.join("recipe");
    std::fs::create_dir_all(recipe.join("tests/previous")).unwrap();
    std::fs::write(
        recipe.join("tests/previous/compose.previous.yml"),
        compose("1.1.0+1.0"),
    )
    .unwrap();
    let run = |base: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ci-warm"))
            .arg("--config")
            .arg(&w.config)
            .args(["--json", "base", "previous", "--base", base, "--recipe-dir"])
            .arg(&recipe)
            .env("COMPOSE_FILE", "compose.yml:compose.smtp.yml")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let apply = run("1.1.0+1.0");
    assert_eq!(apply["status"], "apply");
    assert_eq!(
        apply["files"],
        json!(["tests/previous/compose.previous.yml"])
    );
    assert_eq!(
        apply["base_compose_file"],
        "compose.yml:compose.smtp.yml:tests/previous/compose.previous.yml"
    );
    assert_eq!(apply["head_compose_file"], "compose.yml:compose.smtp.yml");
    let stale = run("1.2.0+1.1");
    assert_eq!(stale["status"], "stale");
    assert_eq!(stale["targets"], "1.1.0+1.0");
    assert_eq!(stale["base_compose_file"], "compose.yml:compose.smtp.yml");
    std::fs::remove_dir_all(recipe.join("tests/previous")).unwrap();
    let none = run("1.1.0+1.0");
    assert_eq!(none["status"], "none");
    assert_eq!(none["head_compose_file"], "compose.yml:compose.smtp.yml");
}

#[test]
fn target_branch_newer_canonical_and_pre_releases() {
    let w = World::new();
    // A maintenance branch forked at 1.1.0, and a published pre-release above it.
    let stable_tip = git(&w.origin, &["rev-parse", "refs/tags/1.1.0+1.0"]);
    git(&w.origin, &["branch", "stable", &stable_tip]);
    git(&w.origin, &["tag", "1.1.5+1.1-rc1", "refs/tags/1.2.0+1.1"]);

    // A PR against `stable` is compared with stable's tip, not main's.
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--target-branch", "stable"]),
        json!({"kind": "ref", "value": stable_tip, "reason": "no canonical; tip of target branch stable"})
    );
    assert_eq!(
        w.resolve(&["--head-ref", &stable_tip, "--target-branch", "stable"]),
        json!({"kind": "skip", "value": null, "reason": "head == tip of target branch stable"})
    );
    let bad = w.ci_warm(&[
        "base",
        "resolve",
        "demo",
        "--head-ref",
        HEAD,
        "--target-branch",
        "-x",
    ]);
    assert_eq!(bad.status.code(), Some(2));

    // A canonical newer than the head: never a downgrade tested as an upgrade; the newest
    // published version strictly older than the head, skipping the pre-release.
    w.promote("1.2.0+1.1");
    let got = w.resolve(&["--head-ref", HEAD, "--head-version", "1.1.9+1.1"]);
    assert_eq!(
        got,
        json!({"kind": "version", "value": "1.1.0+1.0",
               "reason": "canonical version 1.2.0+1.1 is newer than head version 1.1.9+1.1; newest published version older than the head"})
    );
    w.promote("1.1.0+1.0");
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-version", "1.0.0+1.0"]),
        json!({"kind": "skip", "value": null,
               "reason": "canonical newer than head and no older published predecessor"})
    );
}

/// When the canonical's own gate holds the registry's version (here a major bump from what it
/// is on), the canonical stays on its last good: `base resolve` answers that version and says
/// why, and `canonical list` and `status` show the hold; once approved, the registry's version
/// is the answer again.
#[test]
fn a_registry_version_the_canonical_gate_holds_is_not_the_base() {
    let w = World::new();
    std::fs::write(w.origin.join("compose.yml"), compose("2.0.0+2.0")).unwrap();
    git(&w.origin, &["commit", "-q", "-am", "2.0.0+2.0"]);
    git(&w.origin, &["tag", "2.0.0+2.0"]);
    w.promote("2.0.0+2.0");
    // What the canonical's reconcile leaves after its gate held 2.0.0 (the state it writes).
    let app_dir = w.state.join("warm-demo");
    std::fs::create_dir_all(&app_dir).unwrap();
    let state = json!({
        "schema": 1, "last_good": "1.1.0+1.0", "deployed": null,
        "alerted_holds": ["held-major:2.0.0+2.0"],
        "intent": null,
        "last_run": {"at": "2026-11-23T01:00:00Z", "outcome": "held", "detail": "held; stays on 1.1.0+1.0"},
    });
    std::fs::write(app_dir.join("state.json"), state.to_string()).unwrap();
    let reason = "the canonical's gate holds registry version 2.0.0+2.0 (2.0.0+2.0 is a major \
                  bump from 1.1.0+1.0), so it stays on 1.1.0+1.0";

    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-version", "2.1.0+2.0"]),
        json!({"kind": "version", "value": "1.1.0+1.0",
               "reason": format!("{reason}; canonical version 1.1.0+1.0 differs from head version 2.1.0+2.0")})
    );
    // The base is still strictly older than the head: a head equal to what the canonical holds
    // steps back to the newest published version below it.
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-version", "1.1.0+1.0"]),
        json!({"kind": "version", "value": "1.0.0+1.0",
               "reason": format!("{reason}; canonical version equals head version 1.1.0+1.0; newest published version older than it")})
    );
    let text = w.ci_warm(&[
        "base",
        "resolve",
        "demo",
        "--head-ref",
        HEAD,
        "--head-version",
        "2.1.0+2.0",
    ]);
    assert!(
        String::from_utf8_lossy(&text.stdout).starts_with(&format!("version 1.1.0+1.0: {reason}")),
        "{text:?}"
    );

    let hold = json!({"target": "2.0.0+2.0", "holds": "1.1.0+1.0", "kind": "held-major",
                      "reason": "2.0.0+2.0 is a major bump from 1.1.0+1.0"});
    let list = w.run(&["--json", "canonical", "list"]);
    assert!(list.status.success(), "{list:?}");
    let rows: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["hold"], hold, "{rows}");
    let list = w.run(&["canonical", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("HELD: its gate holds 2.0.0+2.0") && text.contains("stays on 1.1.0+1.0"),
        "{text}"
    );
    let status = w.run(&["--json", "status", "--no-health"]);
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let app = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "warm-demo")
        .unwrap();
    assert_eq!(app["canonical_hold"], hold, "{app}");
    let text = w.run(&["status", "--no-health"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("warm-demo: HELD: its gate holds 2.0.0+2.0"),
        "{text:?}"
    );

    // Approved: the hold is over, and the registry's version is the answer again.
    let approve = w.run(&["approve", "warm-demo", "2.0.0+2.0"]);
    assert!(approve.status.success(), "{approve:?}");
    assert_eq!(
        w.resolve(&["--head-ref", HEAD, "--head-version", "2.1.0+2.0"]),
        json!({"kind": "version", "value": "2.0.0+2.0",
               "reason": "canonical version 2.0.0+2.0 differs from head version 2.1.0+2.0"})
    );
    let rows: Value =
        serde_json::from_slice(&w.run(&["--json", "canonical", "list"]).stdout).unwrap();
    assert_eq!(rows[0]["hold"], Value::Null, "{rows}");
}
