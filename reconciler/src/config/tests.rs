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
        r#"{{"apps": {{"t": {{{MINIMAL_APP}, "probes": [{{"url": "ftp://x"}}, {{"url": "http://x/", "status": 42}}]}}}}}}"#
    ));
    assert!(e.contains("apps.t.probes[0].url"), "{e}");
    assert!(e.contains("apps.t.probes[1].status"), "{e}");
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
