use anyhow::Context;
use clap::Args;

use super::Global;
use crate::config::Config;
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::state::AppState;
use crate::upgrade::version::Version;

pub fn run(global: &Global, args: ApproveArgs) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let known = config.apps.contains_key(&args.app)
        || config
            .canonicals
            .keys()
            .any(|r| crate::config::canonical_app_name(r) == args.app);
    if !known {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "app {:?} is not in the config {}",
                args.app,
                global.config.display()
            ),
        )
        .into());
    }
    let version: Version = args
        .version
        .parse()
        .map_err(|e| Exit::new(exit::USAGE, format!("{e}")))?;
    let app_dir = config.state_dir.join(&args.app);
    // Waiting is right here: an approval must not be lost because a reconcile is running.
    let _lock = lock::acquire(&app_dir, &args.app, true)?;
    let mut state = AppState::load(&app_dir)?;
    let fresh = state.approvals.insert(version.to_string());
    state
        .save(&app_dir)
        .with_context(|| format!("recording the approval of {version} for app {}", args.app))?;
    if global.json {
        super::print_json(&serde_json::json!({
            "app": args.app,
            "version": version.to_string(),
            "already_approved": !fresh,
        }))?;
    }
    tracing::info!(app = %args.app, %version, "approved; the next reconcile may deploy it");
    Ok(exit::OK)
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The app (`warm-<recipe>` for a canonical).
    pub app: String,
    /// The version to let through, e.g. `2.0.0+2.0.0`.
    pub version: String,
}
