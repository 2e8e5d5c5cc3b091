//! `abra app deploy <domain> [version] [-C] [-f] [-c] [-o] [-i] [-D] [-n] [-d]`, in the
//! order of the contract's §4.1 pipeline.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::Ctx;
use super::compose::{self, Compose};
use super::engine;
use super::ensure::{Ensure, ensure};
use super::envfile;
use super::layout::{self, App};
use super::monitor::{self, Outcome};
use super::secrets;
use super::switches::ExposeEnv;

pub struct DeployArgs<'a> {
    pub domain: &'a str,
    pub version: Option<&'a str>,
    pub chaos: bool,
    pub force: bool,
    pub no_converge_checks: bool,
    pub offline: bool,
    pub ignore_env_version: bool,
    pub no_input: bool,
}

/// Escapes `$` for compose: the override's values are literal.
fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// The override compose file that stamps abra's labels on every service (§4.1 step 8) and
/// exposes the app env (step 9).
pub fn labels_override(
    c: &Compose,
    stack: &str,
    recipe: &str,
    version: &str,
    chaos: bool,
    env: &BTreeMap<String, String>,
    expose: ExposeEnv,
) -> Value {
    let mut services = Map::new();
    for (name, s) in &c.services {
        let key = |k: &str| format!("coop-cloud.{stack}.{k}");
        let mut labels = Map::new();
        labels.insert(key("recipe"), json!(literal(recipe)));
        labels.insert(key("chaos"), json!(chaos.to_string()));
        if chaos {
            // The version label the compose files declare is kept (CONFIRMED-deriv).
            labels.insert(key("chaos-version"), json!(literal(version)));
        } else {
            labels.insert(key("version"), json!(literal(version)));
        }
        let mut svc = Map::new();
        svc.insert("deploy".into(), json!({ "labels": labels }));
        let exposed = match expose {
            ExposeEnv::All => true,
            ExposeEnv::App => name == "app",
            ExposeEnv::None => false,
        };
        if exposed {
            let add: Map<String, Value> = env
                .iter()
                .filter(|(k, _)| !s.env_keys.contains(*k))
                .map(|(k, v)| (k.clone(), json!(literal(v))))
                .collect();
            if !add.is_empty() {
                svc.insert("environment".into(), Value::Object(add));
            }
        }
        services.insert(name.clone(), Value::Object(svc));
    }
    json!({ "version": "3.8", "services": services })
}

/// The convergence window: label `coop-cloud.<stack>.timeout`, else `TIMEOUT` (switch), else
/// the default (§4.1 step 11).
pub fn timeout(
    c: &Compose,
    stack: &str,
    env: &BTreeMap<String, String>,
    ctx: &Ctx,
) -> anyhow::Result<Duration> {
    let key = format!("coop-cloud.{stack}.timeout");
    let from_label = c
        .services
        .get("app")
        .and_then(|s| s.labels.get(&key))
        .or_else(|| c.services.values().find_map(|s| s.labels.get(&key)));
    let from_env = env.get("TIMEOUT").filter(|_| ctx.sw.timeout_from_env);
    match from_label.or(from_env).filter(|v| !v.trim().is_empty()) {
        Some(v) => Ok(Duration::from_secs(v.trim().parse().with_context(
            || format!("timeout {v:?} is not a number of seconds"),
        )?)),
        None => Ok(ctx.sw.default_timeout),
    }
}

/// Warnings for keys of `.env.sample` missing from the app env (§4.1 step 10).
fn check_env(ctx: &Ctx, app: &App, dir: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(dir.join(".env.sample")) else {
        return;
    };
    if let Ok(sample) = ci_warm::platform::deploy::stack::parse_env(&text) {
        for k in sample.keys().filter(|k| !app.env.contains_key(*k)) {
            ctx.out
                .warn(&format!("{k} missing from {}.env", app.domain));
        }
    }
}

pub async fn cmd_deploy(ctx: &Ctx, a: &DeployArgs<'_>) -> anyhow::Result<()> {
    if ctx.sw.require_no_input && !a.no_input {
        bail!("a prompt needs a terminal: pass --no-input/-n");
    }
    // 1. The app.
    let app = App::find(&ctx.root, a.domain, &ctx.sw)?;
    let dir = layout::recipe_dir(&ctx.root, &app.recipe);
    // 2 + 4. Ensure the recipe, pick the version.
    let pinned = app.pinned.as_deref().filter(|_| !a.ignore_env_version);
    let version = ensure(
        ctx,
        &Ensure {
            recipe: &app.recipe,
            dir: &dir,
            chaos: a.chaos,
            offline: a.offline,
            explicit: a.version,
            pinned,
            lint: true,
        },
    )?;
    // 3. Deployed already?
    let docker = engine::connect().await?;
    let deployed = engine::is_deployed(&docker, &app.stack).await?;
    if let Some(d) = &deployed {
        ctx.out.debug(&format!("{} is deployed: {d:?}", app.domain));
        if !a.chaos && !a.force && ctx.sw.deployed_needs_force {
            bail!("{} is already deployed", app.domain);
        }
    }
    // 5. validateSecrets.
    let existing = engine::secret_names()?;
    for s in secrets::app_secrets(ctx, &app)? {
        if !existing.contains(&s.server_name) {
            if s.generate {
                bail!("secret not generated: {}", s.name);
            }
            bail!("secret not inserted (#generate=false): {}", s.name);
        }
    }
    // 7. The merged, interpolated config.
    let env = secrets::compose_env(&app);
    let files = compose::files(&env);
    let c = compose::load(&dir, &files, &env)?;
    // 10. CheckEnv.
    check_env(ctx, &app, &dir);
    // 11. Timeout.
    let window = timeout(&c, &app.stack, &app.env, ctx)?;
    ctx.out.info(&format!(
        "deploying {} ({}:{version}{}) as stack {} on server {}, timeout {}s",
        app.domain,
        app.recipe,
        if a.chaos { ", chaos" } else { "" },
        app.stack,
        app.server,
        window.as_secs()
    ));
    // 8 + 9. Labels and env through an override file.
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let override_path = tmp.path().join("compose.abra-sim-labels.yml");
    let doc = labels_override(
        &c,
        &app.stack,
        &app.recipe,
        &version,
        a.chaos,
        &env,
        ctx.sw.expose_env,
    );
    std::fs::write(
        &override_path,
        serde_yaml::to_string(&doc).context("writing the label override")?,
    )
    .context("writing the label override")?;
    // 12. Deploy, never pruning.
    let before = monitor::before(&docker, &app.stack).await?;
    let mut cmd = compose::docker_with_env(&dir, &env);
    cmd.args(["stack", "deploy", "--resolve-image", &ctx.sw.resolve_image]);
    if engine::client_has_detach() {
        cmd.arg("--detach=true");
    }
    for f in &files {
        cmd.args(["-c", f]);
    }
    cmd.arg("-c").arg(&override_path).arg(&app.stack);
    let out = cmd.output().context("running docker stack deploy")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for l in said.lines().filter(|l| !l.trim().is_empty()) {
        ctx.out.debug(l.trim());
    }
    if !out.status.success() {
        bail!("{}", said.trim());
    }
    // 13. Converge, then pin the version.
    if a.no_converge_checks {
        ctx.out
            .info("skipping converge checks (--no-converge-checks)");
    } else {
        let services: BTreeMap<String, Option<Duration>> = c
            .services
            .iter()
            .map(|(n, s)| (format!("{}_{n}", app.stack), s.start_period))
            .collect();
        match monitor::watch(ctx, &docker, &before, &services, window).await? {
            Outcome::Converged => {}
            Outcome::Failed(why) => {
                for w in why {
                    ctx.out.error(&w);
                }
                bail!("deploy failed");
            }
            Outcome::TimedOut(states) => {
                for s in states {
                    ctx.out.warn(&s);
                }
                bail!("deploy timed out");
            }
        }
    }
    envfile::write_version(&app.env_path, &app.recipe, &version)?;
    ctx.out.info(&format!(
        "{} deployed at {}:{version}",
        app.domain, app.recipe
    ));
    Ok(())
}
