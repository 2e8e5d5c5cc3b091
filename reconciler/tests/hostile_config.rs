//! The binary against configs an adversary (or a tired operator) writes: `config check` refuses
//! exactly what a run would refuse, with the path and the app, and a run refuses before it
//! changes anything.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

fn ci_warm(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ci-warm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CI_WARM_CONFIG")
        // No Docker needed: a run refused before it starts never connects.
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_missing_env_file_is_refused_by_config_check_and_before_a_run_touches_anything() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let env_file = d.path().join("demo.env");
    let config = d.path().join("config.json");
    let text = json!({
        "state_dir": state,
        "apps": {"demo": {"recipe": "demo", "domain": "demo.example.org",
            "repo": d.path().join("origin"), "env_file": env_file}},
    });
    std::fs::write(&config, text.to_string()).unwrap();

    let out = ci_warm(&config, &["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("apps.demo.env_file") && e.contains("app demo"),
        "{e}"
    );
    assert!(
        e.contains(&env_file.display().to_string()) && e.contains("does not exist"),
        "{e}"
    );
    // A build sandbox cannot see the host's files.
    let out = ci_warm(&config, &["config", "check", "--static"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = ci_warm(&config, &["reconcile", "demo"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("cannot be deployed on this host") && e.contains("does not exist"),
        "{e}"
    );
    for left in ["state.json", "recipe", "checkout"] {
        assert!(
            !state.join("demo").join(left).exists(),
            "a refused run must not have fetched, journaled or deployed anything: {left}"
        );
    }

    std::fs::write(&env_file, "DOMAIN=demo.example.org\n").unwrap();
    let out = ci_warm(&config, &["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn config_check_refuses_a_top_level_that_is_not_an_object() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("config.json");
    std::fs::write(&config, "[]").unwrap();
    let out = ci_warm(&config, &["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("top level must be a JSON object"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_example_config_passes_config_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config.json");
    let out = ci_warm(&example, &["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
