use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.json"), text)
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("config must be refused, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

const MINIMAL_APP: &str = r#""recipe": "traefik", "domain": "traefik.ci.example.org""#;

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config.json");
    let c = Config::load(&path).expect("examples/config.json must be valid");
    assert_eq!(c.apps["traefik"].preset, Preset::Traefik);
    assert_eq!(c.apps["keycloak"].preset, Preset::Keycloak);
    assert!(!c.canonicals.is_empty());
}

#[test]
fn empty_object_gets_defaults() {
    let c = parse("{}").unwrap();
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.deployer, Deployer::Stack);
    assert_eq!(c.health.timeout_secs, 300);
    assert!(c.apps.is_empty());
}

#[test]
fn normalized_output_reparses_to_the_same_config() {
    let text = format!(
        r#"{{"apps": {{"traefik": {{{MINIMAL_APP}, "preset": "traefik", "track": {{"pinned": "3.1.0+v3.6.1"}}}}}}}}"#
    );
    let c = parse(&text).unwrap();
    let again = parse(&serde_json::to_string_pretty(&c).unwrap()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn typo_at_top_level_names_key_and_nearest() {
    let e = err(r#"{"stat_dir": "/x"}"#);
    assert!(e.contains("unknown key `stat_dir`"), "{e}");
    assert!(e.contains("did you mean `state_dir`?"), "{e}");
    assert!(e.contains("at `.`"), "{e}");
}

#[test]
fn typo_in_nested_app_names_the_path() {
    let e = err(&format!(
        r#"{{"apps": {{"traefik": {{{MINIMAL_APP}, "probs": []}}}}}}"#
    ));
    assert!(e.contains("unknown key `probs`"), "{e}");
    assert!(e.contains("apps.traefik"), "{e}");
    assert!(e.contains("did you mean `probes`?"), "{e}");
}

#[test]
fn typo_in_probe_names_the_path() {
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [{{"url": "http://x/", "stauts": 200}}]}}}}}}"#
    ));
    assert!(e.contains("unknown key `stauts`"), "{e}");
    assert!(e.contains("apps.t.probes[0]"), "{e}");
    assert!(e.contains("`status`"), "{e}");
}

#[test]
fn unknown_preset_value_suggests_nearest() {
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "preset": "trafik"}}}}}}"#
    ));
    assert!(e.contains("unknown value `trafik`"), "{e}");
    assert!(e.contains("did you mean `traefik`?"), "{e}");
}

#[test]
fn wrong_type_names_path_and_location() {
    let e = err(r#"{"health": {"timeout_secs": "soon"}}"#);
    assert!(e.contains("health.timeout_secs"), "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn missing_required_field() {
    let e = err(r#"{"apps": {"t": {"recipe": "traefik"}}}"#);
    assert!(e.contains("missing field `domain`"), "{e}");
    assert!(e.contains("apps.t"), "{e}");
}

#[test]
fn not_json_at_all() {
    let e = err("apps: [traefik]");
    assert!(e.contains("expected value"), "{e}");
    assert!(e.contains("test.json"), "{e}");
}

#[test]
fn trailing_garbage_is_refused() {
    let e = err("{} {}");
    assert!(e.contains("trailing"), "{e}");
}

#[test]
fn traversal_in_app_name_is_refused() {
    let e = err(&format!(r#"{{"apps": {{"../etc": {{{MINIMAL_APP}}}}}}}"#));
    assert!(e.contains("apps.../etc"), "{e}");
    assert!(e.contains("invalid app name"), "{e}");
}

#[test]
fn bad_recipe_name_is_refused() {
    let e = err(r#"{"apps": {"t": {"recipe": "Trae/fik", "domain": "t.example.org"}}}"#);
    assert!(e.contains("apps.t.recipe"), "{e}");
    assert!(e.contains("invalid recipe name"), "{e}");
}

#[test]
fn odd_version_tags_are_refused() {
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "initial_version": "latest", "approved": ["1.0.0+1", "2.0"]}}}}}}"#
    ));
    assert!(e.contains("apps.t.initial_version"), "{e}");
    assert!(e.contains("apps.t.approved[1]"), "{e}");
    assert!(!e.contains("approved[0]"), "{e}");
}

#[test]
fn two_apps_on_one_stack_are_refused() {
    let e = err(r#"{"apps": {
            "a": {"recipe": "x", "domain": "a.example.org", "stack": "shared"},
            "b": {"recipe": "y", "domain": "b.example.org", "stack": "shared"}}}"#);
    assert!(
        e.contains("stack `shared` is already used by `apps.a`"),
        "{e}"
    );
}

#[test]
fn canonical_needs_a_domain() {
    let e = err(r#"{"canonicals": {"demo": {}}}"#);
    assert!(e.contains("canonicals.demo.domain"), "{e}");
    let c = parse(r#"{"ci_domain": "ci.example.org", "canonicals": {"demo": {}}}"#).unwrap();
    assert_eq!(
        c.canonical_domain("demo", &c.canonicals["demo"]).as_deref(),
        Some("warm-demo.ci.example.org")
    );
}

#[test]
fn probes_are_checked() {
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [{{"url": "ftp://x"}}, {{"url": "https://x/", "ca_file": "/nonexistent/ca.pem"}}]}}}}}}"#
    ));
    assert!(e.contains("apps.t.probes[0].url"), "{e}");
    assert!(
        e.contains("apps.t.probes[1].ca_file") && e.contains("/nonexistent/ca.pem: cannot read it"),
        "{e}"
    );
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [{{"url": "http://x/", "status": 42}}]}}}}}}"#
    ));
    assert!(
        e.contains("apps.t.probes[0].status") && e.contains("42 is not an HTTP status"),
        "{e}"
    );
}

/// The probe today's example used to show: it could never pass (SNI and the certificate check
/// use 127.0.0.1), so every upgrade would roll back. Refused, with what to write instead.
#[test]
fn an_https_probe_with_a_host_header_is_refused_with_the_fix() {
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [{{"url": "https://127.0.0.1/realms/master", "host": "sso.ci.example.org"}}]}}}}}}"#
    ));
    assert!(e.contains("apps.t.probes[0].host"), "{e}");
    assert!(
        e.contains(
            r#""url": "https://sso.ci.example.org/realms/master", "connect_to": "127.0.0.1""#
        ),
        "{e}"
    );
}

#[test]
fn probe_statuses_may_be_a_list_or_a_range_and_probes_may_be_turned_off() {
    let c = Config::parse(
        Path::new("test.json"),
        &format!(
            r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [{{"url": "https://t.example.org/", "connect_to": "127.0.0.1:8443", "status": [200, 302]}}, {{"url": "https://t.example.org/x", "connect_to": "127.0.0.1", "status": "200-499", "insecure": true}}]}}, "u": {{"recipe": "demo", "domain": "u.ci.example.org", "probes": []}}}}}}"#
        ),
    )
    .unwrap();
    let probes = c.apps["t"].probes.as_deref().unwrap();
    assert!(probes[0].status.contains(302) && !probes[0].status.contains(301));
    assert_eq!(probes[0].connect_to.unwrap().port, Some(8443));
    assert!(probes[1].status.contains(404) && probes[1].insecure);
    assert_eq!(c.apps["u"].probes.as_deref(), Some(&[][..]));
}

#[test]
fn abra_deployer_needs_server() {
    let e = err(r#"{"deployer": {"kind": "abra", "server": " "}}"#);
    assert!(e.contains("deployer.server"), "{e}");
    let e = err(r#"{"deployer": {"kind": "abra"}}"#);
    assert!(e.contains("missing field `server`"), "{e}");
    let e = err(r#"{"deployer": {"kind": "helm"}}"#);
    assert!(e.contains("`helm`"), "{e}");
}

#[test]
fn relative_paths_are_refused() {
    let e = err(r#"{"state_dir": "var/lib/ci-warm", "metrics_file": "m.prom"}"#);
    assert!(e.contains("`state_dir`"), "{e}");
    assert!(e.contains("`metrics_file`"), "{e}");
}

#[test]
fn disk_thresholds_must_be_ordered() {
    let e = err(r#"{"disk": {"warn_free_percent": 5, "critical_free_percent": 10}}"#);
    assert!(e.contains("disk.critical_free_percent"), "{e}");
}

#[test]
fn inline_secrets_are_not_accepted() {
    let e = err(r#"{"keycloak": {"url": "https://sso.example.org", "admin_password": "hunter2"}}"#);
    assert!(!e.contains("hunter2"), "a secret must not be echoed: {e}");
    let e = err(
        r#"{"keycloak": {"url": "https://sso.example.org", "admin_password": {"file": "pw"}}}"#,
    );
    assert!(e.contains("keycloak.admin_password.file"), "{e}");
}

#[test]
fn sweep_placeholders_are_checked() {
    let e = err(r#"{"sweep": {"cold_command": ["run", "{recipe}", "--ver={verison}"]}}"#);
    assert!(e.contains("sweep.cold_command[2]"), "{e}");
    parse(r#"{"sweep": {"cold_command": ["run", "{recipe}", "--v={version}", "{run}"]}}"#).unwrap();
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = err(r#"{"state_dir": "rel", "health": {"timeout_secs": 0}}"#);
    assert!(
        e.contains("state_dir") && e.contains("health.timeout_secs"),
        "{e}"
    );
}

#[test]
fn health_timeout_that_would_overflow_a_deadline_is_refused() {
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "health_timeout_secs": 18446744073709551615}}}}}}"#
    ));
    assert!(e.contains("apps.t.health_timeout_secs"), "{e}");
    assert!(e.contains("from 1 to 86400"), "{e}");
    let e = err(
        r#"{"health": {"timeout_secs": 18446744073709551615, "interval_ms": 18446744073709551615},
        "snapshot": {"reserve_bytes": 18446744073709551615},
        "sweep": {"timeout_secs": 18446744073709551615, "max_tests": 4294967295},
        "canonicals": {"x": {"domain": "x.example.org", "health_timeout_secs": 0}},
        "keycloak": {"url": "https://sso.example.org", "admin_password": {"file": "/pw"}, "reap_grace_secs": 18446744073709551615}}"#,
    );
    for key in [
        "health.timeout_secs",
        "health.interval_ms",
        "snapshot.reserve_bytes",
        "sweep.timeout_secs",
        "sweep.max_tests",
        "canonicals.x.health_timeout_secs",
        "keycloak.reap_grace_secs",
    ] {
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
    parse(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "health_timeout_secs": 86400}}}}}}"#
    ))
    .unwrap();
}

#[test]
fn top_level_that_is_not_an_object_is_refused() {
    for text in ["[]", "[1, 2]", "null", "42", "\"x\""] {
        let e = err(text);
        assert!(e.contains("top level must be a JSON object"), "{text}: {e}");
    }
    // serde would read an array as a struct written positionally, at any depth.
    let e = err(r#"{"health": [300, 2000]}"#);
    assert!(
        e.contains("at `health`") && e.contains("not an array"),
        "{e}"
    );
    let e = err(&format!(
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [["http://x/"]]}}}}}}"#
    ));
    assert!(e.contains("apps.t.probes[0]"), "{e}");
}

#[test]
fn dangerous_git_transports_are_refused_like_a_run_refuses_them() {
    for repo in [
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "fd::3",
        "foo::bar",
        "--upload-pack=touch /tmp/x",
        "https://x y",
    ] {
        let json = serde_json::json!({"apps": {"t": {
            "recipe": "traefik", "domain": "t.example.org", "repo": repo}}});
        let e = err(&json.to_string());
        assert!(e.contains("apps.t.repo"), "{repo}: {e}");
        // The same function decides for a run.
        assert!(
            crate::upgrade::recipe::check_repo_url(repo).is_err(),
            "{repo}"
        );
    }
    for repo in [
        "https://git.coopcloud.tech/coop-cloud/traefik.git",
        "/srv/recipes/traefik",
        "file:///srv/recipes/traefik",
        "ssh://git@git.example.org/traefik.git",
    ] {
        let json = serde_json::json!({"apps": {"t": {
            "recipe": "traefik", "domain": "t.example.org", "repo": repo}}});
        parse(&json.to_string()).unwrap();
        assert!(
            crate::upgrade::recipe::check_repo_url(repo).is_ok(),
            "{repo}"
        );
    }
}

#[test]
fn inline_url_credentials_are_refused_without_echoing_them() {
    let json = serde_json::json!({
        "apps": {"t": {"recipe": "traefik", "domain": "t.example.org",
            "repo": "https://bob:hunter2@git.example.org/traefik.git",
            "probes": [{"url": "https://bob:hunter2@t.example.org/ping"}]}},
        "canonicals": {"demo": {"domain": "d.example.org",
            "repo": "https://ghp_hunter2@github.com/x/demo.git"}},
        "keycloak": {"url": "https://admin:hunter2@sso.example.org",
            "admin_password": {"file": "/run/pw"}},
    });
    let e = err(&json.to_string());
    for key in [
        "apps.t.repo",
        "apps.t.probes[0].url",
        "canonicals.demo.repo",
        "keycloak.url",
    ] {
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
    assert!(e.contains("inline credentials"), "{e}");
    assert!(e.contains("secrets are read from files"), "{e}");
    assert!(
        !e.contains("hunter2"),
        "a credential must not be echoed: {e}"
    );
}

#[test]
fn control_characters_in_keys_and_values_are_escaped_in_messages() {
    let json = serde_json::json!({
        "apps": {"t\n[FATAL] forged\u{1b}[2K": {"recipe": "Bad\u{0}Name", "domain": "t.example.org"}},
        "stat\u{1b}_dir": "/x",
    });
    let e = err(&json.to_string());
    assert!(!e.contains('\u{1b}') && !e.contains('\0'), "{e:?}");
    assert!(e.contains("stat\\u{1b}_dir"), "{e}");
    let json = serde_json::json!({
        "apps": {"t\n[FATAL] forged": {"recipe": "Bad\u{0}Name", "domain": "t.example.org"}},
    });
    let e = err(&json.to_string());
    assert!(
        !e.lines().any(|l| l.starts_with("[FATAL]")),
        "a key must not start a line of its own: {e}"
    );
    assert!(e.contains("t\\n[FATAL] forged"), "{e}");
    assert!(e.contains("Bad\\u{0}Name"), "{e}");
}

fn stack_config(env_file: Option<&Path>) -> Config {
    let mut app = serde_json::json!({"recipe": "demo", "domain": "demo.example.org"});
    if let Some(p) = env_file {
        app["env_file"] = serde_json::json!(p);
    }
    parse(&serde_json::json!({"apps": {"demo": app}}).to_string()).unwrap()
}

#[test]
fn missing_or_unreadable_env_file_is_refused_before_a_run() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("demo.env");
    let e = stack_config(Some(&missing))
        .preflight("demo")
        .unwrap_err()
        .to_string();
    assert!(e.contains("apps.demo.env_file"), "{e}");
    assert!(
        e.contains("does not exist") && e.contains("demo.env"),
        "{e}"
    );
    assert!(e.contains("app demo"), "{e}");
    let c = stack_config(Some(d.path()));
    let e = c.preflight("demo").unwrap_err().to_string();
    assert!(e.contains("is not a regular file"), "{e}");
    assert_eq!(c.host_problems().len(), 1);
    let e = stack_config(None)
        .preflight("demo")
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no env_file"), "{e}");
    std::fs::write(&missing, "DOMAIN=demo.example.org\n").unwrap();
    let c = stack_config(Some(&missing));
    c.preflight("demo").unwrap();
    assert!(c.host_problems().is_empty());
    // abra keeps (and bootstraps) the env file itself: nothing to check.
    let abra = parse(
        r#"{"deployer": {"kind": "abra", "server": "s"},
            "apps": {"demo": {"recipe": "demo", "domain": "demo.example.org", "env_file": "/nonexistent/demo.env"}}}"#,
    )
    .unwrap();
    abra.preflight("demo").unwrap();
    assert!(abra.host_problems().is_empty());
}
