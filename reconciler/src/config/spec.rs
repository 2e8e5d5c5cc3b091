//! Resolves the config into one [`AppPlan`] per warm app: presets applied, defaults derived,
//! canonicals turned into apps named `warm-<recipe>`. Everything downstream reads plans, never
//! the raw config, so a default lives in exactly one place.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::names;
use crate::config::{self, Config, Preset, Probe, Track};
use crate::upgrade::gate;
use crate::upgrade::probe::{ConnectTo, StatusSet};
use crate::upgrade::reconcile::AppSpec;
use crate::upgrade::version::Version;

/// The Co-op Cloud recipe catalogue, where a recipe's repository lives by default.
pub const CATALOGUE: &str = "https://git.coopcloud.tech/coop-cloud";

/// Everything needed to reconcile one app.
#[derive(Debug, Clone)]
pub struct AppPlan {
    pub spec: AppSpec,
    pub repo: String,
    pub domain: String,
    pub stack: String,
    pub env_file: Option<PathBuf>,
    /// abra deployer: bootstrap the app when its env file is missing.
    pub bootstrap: bool,
    /// abra deployer: keys written into the env file at bootstrap.
    pub env: std::collections::BTreeMap<String, String>,
    pub probes: Vec<Probe>,
    pub health_timeout: Duration,
    pub health_interval: Duration,
    /// Set for canonicals: the recipe whose registry entry the app tracks.
    pub canonical_of: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("app {name} is not in the config (known: {known})", name = crate::platform::text::quoted(.0), known = .1)]
pub struct UnknownApp(pub String, pub String);

/// Every configured app, apps first, then canonicals, each sorted by name.
pub fn plans(config: &Config) -> Vec<AppPlan> {
    let mut out: Vec<AppPlan> = config
        .apps
        .iter()
        .map(|(name, app)| app_plan(config, name, app))
        .collect();
    out.extend(
        config
            .canonicals
            .iter()
            .filter_map(|(recipe, c)| canonical_plan(config, recipe, c)),
    );
    out
}

/// The plan of one app by name.
pub fn plan(config: &Config, name: &str) -> Result<AppPlan, UnknownApp> {
    plans(config)
        .into_iter()
        .find(|p| p.spec.name == name)
        .ok_or_else(|| {
            let known: Vec<String> = plans(config).into_iter().map(|p| p.spec.name).collect();
            UnknownApp(name.to_owned(), known.join(", "))
        })
}

fn parse_all(list: &[String]) -> BTreeSet<Version> {
    // The config was validated on load; an unparsable entry cannot reach here.
    list.iter().filter_map(|v| v.parse().ok()).collect()
}

fn phrases(config: &Config) -> Vec<String> {
    if config.gate.manual_migration_phrases.is_empty() {
        gate::default_phrases()
    } else {
        config.gate.manual_migration_phrases.clone()
    }
}

fn repo_for(repo: Option<&str>, recipe: &str) -> String {
    repo.map_or_else(|| format!("{CATALOGUE}/{recipe}.git"), str::to_owned)
}

/// A probe that reaches `url` the way users do: through traefik on this host, by the URL's
/// name (SNI, certificate check and Host all use it).
fn through_traefik(url: String, status: StatusSet) -> Probe {
    Probe {
        url,
        status,
        body_contains: None,
        host: None,
        connect_to: Some(LOCALHOST),
        ca_file: None,
        insecure: false,
    }
}

const LOCALHOST: ConnectTo = ConnectTo {
    ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    port: None,
};

fn preset_probes(preset: Preset, domain: &str) -> Vec<Probe> {
    match preset {
        // traefik's /ping is off unless its static config enables it, and its own domain may
        // have no certificate: what it always does is answer plain HTTP on :80 itself (a redirect
        // to HTTPS, or 404 for a name no router knows). A 5xx or no answer means it is broken.
        Preset::Traefik => vec![through_traefik(
            format!("http://{domain}/"),
            StatusSet::range(100, 499),
        )],
        Preset::Keycloak => vec![through_traefik(
            format!("https://{domain}/realms/master"),
            StatusSet::exact(200),
        )],
        Preset::Custom => vec![],
    }
}

/// A canonical without probes: its domain answers through traefik, anything below 500 (an app
/// may redirect to a login page or answer 404 at `/`; a 5xx or a TLS failure is not healthy).
fn canonical_default_probes(domain: &str) -> Vec<Probe> {
    vec![through_traefik(
        format!("https://{domain}/"),
        StatusSet::range(100, 499),
    )]
}

fn app_plan(config: &Config, name: &str, app: &config::App) -> AppPlan {
    let probes = match &app.probes {
        None => preset_probes(app.preset, &app.domain),
        Some(p) => p.clone(),
    };
    AppPlan {
        spec: AppSpec {
            name: name.to_owned(),
            recipe: app.recipe.clone(),
            stateful: app.stateful.unwrap_or(app.preset != Preset::Traefik),
            pinned: match &app.track {
                Track::Pinned(v) => v.parse().ok(),
                Track::Latest => None,
            },
            initial_version: app.initial_version.as_deref().and_then(|v| v.parse().ok()),
            approved: parse_all(&app.approved),
            allow_prerelease: app.allow_prerelease,
            manual_migration_phrases: phrases(config),
            on_alert: config.alerts.on_alert.clone(),
            canonical: false,
        },
        repo: repo_for(app.repo.as_deref(), &app.recipe),
        domain: app.domain.clone(),
        stack: config.app_stack(name, app),
        env_file: app.env_file.clone(),
        bootstrap: app.bootstrap.unwrap_or(true),
        env: app.env.clone(),
        probes,
        health_timeout: Duration::from_secs(
            app.health_timeout_secs
                .unwrap_or(config.health.timeout_secs),
        ),
        health_interval: Duration::from_millis(config.health.interval_ms),
        canonical_of: None,
    }
}

fn canonical_plan(config: &Config, recipe: &str, c: &config::Canonical) -> Option<AppPlan> {
    // Validated on load: a canonical without a derivable domain never gets here.
    let domain = config.canonical_domain(recipe, c)?;
    let default_probe_domain = domain.clone();
    let stack = c
        .stack
        .clone()
        .unwrap_or_else(|| names::stack_from_domain(&domain));
    let pinned: Option<Version> = c.version.as_deref().and_then(|v| v.parse().ok());
    Some(AppPlan {
        spec: AppSpec {
            name: config::canonical_app_name(recipe),
            recipe: recipe.to_owned(),
            stateful: true,
            initial_version: pinned.clone(),
            pinned,
            approved: parse_all(&c.approved),
            allow_prerelease: c.allow_prerelease,
            manual_migration_phrases: phrases(config),
            on_alert: config.alerts.on_alert.clone(),
            canonical: true,
        },
        repo: repo_for(c.repo.as_deref(), recipe),
        domain,
        stack,
        env_file: c.env_file.clone(),
        bootstrap: c.bootstrap.unwrap_or(true),
        env: c.env.clone(),
        probes: c
            .probes
            .clone()
            .unwrap_or_else(|| canonical_default_probes(&default_probe_domain)),
        health_timeout: Duration::from_secs(
            c.health_timeout_secs.unwrap_or(config.health.timeout_secs),
        ),
        health_interval: Duration::from_millis(config.health.interval_ms),
        canonical_of: Some(recipe.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example() -> Config {
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config.json"))
            .unwrap()
    }

    #[test]
    fn presets_set_statefulness_and_probes() {
        let c = example();
        let t = plan(&c, "traefik").unwrap();
        assert!(!t.spec.stateful);
        assert_eq!(t.stack, "traefik_ci_example_org");
        assert_eq!(t.repo, format!("{CATALOGUE}/traefik.git"));
        let k = plan(&c, "keycloak").unwrap();
        assert!(k.spec.stateful);
        assert_eq!(k.health_timeout, Duration::from_secs(600));
        let mut bare = c.apps["keycloak"].clone();
        bare.probes = None;
        let p = app_plan(&c, "keycloak", &bare);
        assert_eq!(p.probes[0].url, "https://sso.ci.example.org/realms/master");
        assert_eq!(
            p.probes[0].connect_to,
            Some(LOCALHOST),
            "through traefik on this host"
        );
        bare.probes = Some(vec![]);
        assert!(
            app_plan(&c, "keycloak", &bare).probes.is_empty(),
            "[] turns it off"
        );
        let mut t = c.apps["traefik"].clone();
        t.probes = None;
        let p = app_plan(&c, "traefik", &t);
        assert_eq!(p.probes[0].url, "http://traefik.ci.example.org/");
        assert!(p.probes[0].status.contains(308) && !p.probes[0].status.contains(502));
    }

    #[test]
    fn canonicals_become_warm_apps() {
        let c = example();
        let n = plan(&c, "warm-nextcloud").unwrap();
        assert_eq!(n.domain, "warm-nextcloud.ci.example.org");
        assert_eq!(n.stack, "warm-nextcloud_ci_example_org");
        assert!(n.spec.stateful);
        assert_eq!(n.canonical_of.as_deref(), Some("nextcloud"));
    }

    #[test]
    fn unknown_app_lists_the_known_ones() {
        let e = plan(&example(), "trafik").unwrap_err().to_string();
        assert!(e.contains("traefik") && e.contains("warm-nextcloud"), "{e}");
    }
}
