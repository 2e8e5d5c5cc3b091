use std::path::PathBuf;

use clap::Subcommand;

use super::Global;
use crate::config::{Config, ConfigError};
use crate::platform::exit;

pub fn run(global: &Global, cmd: ConfigCmd) -> anyhow::Result<u8> {
    match cmd {
        ConfigCmd::Check { file, r#static } => {
            let path = file.as_deref().unwrap_or(&global.config);
            let config = Config::load(path)?;
            if !r#static {
                // What every deploying run checks before it changes anything (Config::preflight).
                let problems = config.host_problems();
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
