use std::path::PathBuf;

use clap::Subcommand;

use super::Global;
use crate::config::spec;
use crate::config::{Config, ConfigError, Problem};
use crate::platform::docker::Engine;
use crate::platform::exit;

pub fn run(global: &Global, cmd: ConfigCmd) -> anyhow::Result<u8> {
    match cmd {
        ConfigCmd::Check { file, r#static } => {
            let path = file.as_deref().unwrap_or(&global.config);
            let config = Config::load(path)?;
            if !r#static {
                // What every deploying run checks before it changes anything (Config::preflight).
                let mut problems = config.host_problems();
                problems.extend(swarm_problems(&config));
                if !problems.is_empty() {
                    return Err(ConfigError::Invalid {
                        path: path.to_owned(),
                        problems,
                    }
                    .into());
                }
            }
            super::print_json(&config)?;
            tracing::info!(
                path = %path.display(),
                apps = config.apps.len(),
                canonicals = config.canonicals.len(),
                "config is valid"
            );
            Ok(exit::OK)
        }
    }
}

/// Stateful apps keep their data on ci-warm's own swarm node and are pinned there, which needs
/// that node to be a manager (only managers deploy and answer for services and tasks;
/// docs/operations.md, "More than one node"). Docker being unreachable is only a warning here:
/// the config may be checked before the engine runs.
fn swarm_problems(config: &Config) -> Vec<Problem> {
    let Some(first) = spec::plans(config)
        .into_iter()
        .find(|p| p.spec.stateful)
        .map(|p| match &p.canonical_of {
            Some(recipe) => format!("canonicals.{recipe}"),
            None => format!("apps.{}", p.spec.name),
        })
    else {
        return Vec::new();
    };
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let engine = Engine::connect().await?;
                Ok(engine.local_node().await?)
            })
        });
    match local {
        Ok(l) if l.manager => {
            tracing::info!(node = %l.node,
                "stateful apps and canonicals are pinned to this node, which holds their data");
            Vec::new()
        }
        Ok(l) => vec![Problem {
            path: first,
            message: format!(
                "stateful apps keep their data on ci-warm's node {}, which is a swarm worker: ci-warm deploys and observes through a manager only; promote it (`docker node promote {}`) or run ci-warm on a manager that holds the data",
                l.node, l.node.hostname
            ),
        }],
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"),
                "could not ask Docker which swarm node holds the stateful apps' data");
            Vec::new()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file and print it normalized (defaults filled in). Besides the file
    /// itself, checks what a run needs from this host (with the stack deployer: every env file
    /// exists and is a readable regular file).
    Check {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
        /// Check the file only, not this host's files (for a build sandbox, like the NixOS
        /// module's build-time check, which cannot see the host's env files).
        #[arg(long = "static")]
        r#static: bool,
    },
}
