//! `canonical rewarm <recipe>`: rebuild a canonical from scratch.
//!
//! Under the canonical's lock: undeploy, remove the stack's volumes, deploy the canonical's
//! target version (registry, else config) on fresh volumes, health-gate it, then undeploy and
//! snapshot the result as the new known-good. If the fresh deployment fails its gate, the old
//! known-good (when there is one) is restored onto the volumes and stays the known-good.

use anyhow::{Context, bail};
use serde::Serialize;

use crate::canonical::registry::Registry;
use crate::canonical::{self, Drift};
use crate::config::spec;
use crate::config::{self, Config};
use crate::live::LivePlatform;
use crate::platform::docker::{Engine, SwarmView};
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::recipe::RecipeSource;
use crate::upgrade::reconcile::{Health, Platform};
use crate::upgrade::state::AppState;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub recipe: String,
    pub app: String,
    pub version: String,
    /// `rewarmed`, or `failed` (with `restored` telling whether the old known-good is back).
    pub outcome: String,
    pub detail: String,
    pub restored: bool,
    pub exit: u8,
}

pub fn rewarm(config: &Config, recipe: &str, wait: bool) -> anyhow::Result<Report> {
    if !config.canonicals.contains_key(recipe) {
        return Err(Exit::new(
            exit::USAGE,
            format!("recipe {recipe} is not enrolled (no `canonicals.{recipe}` in the config)"),
        )
        .into());
    }
    let app = config::canonical_app_name(recipe);
    let mut plan = spec::plan(config, &app).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let app_dir = config.state_dir.join(&app);
    let _lock = lock::acquire(&app_dir, &app, wait)?;
    let registry = Registry::load(&config.state_dir)?;
    let Some((version, _)) = canonical::target(config, recipe, &registry)? else {
        bail!(
            "{app}: nothing to rewarm to: the registry has no entry for {recipe} and the config \
             names no `canonicals.{recipe}.version`"
        );
    };
    plan.spec.pinned = Some(version.clone());
    let stack = plan.stack.clone();
    let mut platform = LivePlatform::new(config, plan)?;
    platform
        .recipe()
        .fetch()
        .with_context(|| format!("fetching recipe {recipe}"))?;
    tracing::info!(app = %app, %version, "rewarm: undeploying and removing the volumes");
    platform.undeploy()?;
    canonical::mark_drift(
        &app_dir,
        &Drift {
            at: canonical::now(),
            r#ref: format!("rewarm {version}"),
            run: None,
            finished: false,
            alerted: false,
        },
    )?;
    remove_volumes(&stack).with_context(|| format!("removing the volumes of {app}"))?;
    let health = platform
        .deploy(&version)
        .and_then(|()| platform.health(&version));
    let failure = match health {
        Ok(Health::Healthy) => None,
        Ok(Health::Unhealthy(why)) => Some(why),
        Err(e) => Some(format!("{e:#}")),
    };
    let mut state = AppState::load(&app_dir)?;
    match failure {
        None => {
            canonical::refresh_known_good(&mut platform, &version)?;
            state = AppState::load(&app_dir)?;
            state.last_good = Some(version.clone());
            state.deployed = None;
            state.intent = None;
            state.failed.remove(&version.to_string());
            state.save(&app_dir)?;
            Ok(Report {
                recipe: recipe.to_owned(),
                app,
                version: version.to_string(),
                outcome: "rewarmed".into(),
                detail: format!("fresh {version} passed its gate; its data is the new known-good"),
                restored: false,
                exit: exit::OK,
            })
        }
        Some(reason) => {
            tracing::warn!(app = %app, %version, "rewarm failed its gate: {reason}");
            // (restored, what the volumes hold now, exit code)
            let (restored, now, code) = if canonical::has_known_good(&app_dir) {
                match canonical::restore_known_good(&mut platform) {
                    Ok(()) => (
                        true,
                        "the previous known-good is unchanged and back on the volumes",
                        exit::ROLLED_BACK,
                    ),
                    Err(e) => {
                        tracing::error!(app = %app, "restoring the old known-good failed: {e:#}");
                        (
                            false,
                            "the volumes are NOT the known-good",
                            exit::NOT_RECOVERED,
                        )
                    }
                }
            } else {
                if let Err(e) = platform.undeploy() {
                    tracing::error!(app = %app, "undeploying the failed rewarm failed: {e:#}");
                }
                // Without a known-good there is no drift to undo.
                if let Err(e) = canonical::clear_drift(&app_dir) {
                    tracing::warn!(app = %app, "{e:#}");
                }
                (
                    false,
                    "there was no known-good before; nothing to return to",
                    exit::FAILURE,
                )
            };
            state.deployed = None;
            state.save(&app_dir)?;
            Ok(Report {
                recipe: recipe.to_owned(),
                app,
                version: version.to_string(),
                outcome: "failed".into(),
                detail: format!("fresh {version} failed its gate: {reason}; {now}"),
                restored,
                exit: code,
            })
        }
    }
}

/// Removes every volume of the (undeployed) stack, so the next deploy starts from nothing.
fn remove_volumes(stack: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let engine = Engine::connect().await?;
        for v in engine.volumes(stack).await? {
            tracing::info!(volume = %v.name, "removing volume");
            engine
                .docker()
                .remove_volume(
                    &v.name,
                    Some(bollard::query_parameters::RemoveVolumeOptions { force: false }),
                )
                .await
                .with_context(|| format!("removing volume {}", v.name))?;
        }
        Ok(())
    })
}
