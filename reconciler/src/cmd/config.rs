use std::path::PathBuf;

use clap::Subcommand;

use super::Global;
use crate::config::Config;
use crate::platform::exit;

pub fn run(global: &Global, cmd: ConfigCmd) -> anyhow::Result<u8> {
    match cmd {
        ConfigCmd::Check { file } => {
            let path = file.as_deref().unwrap_or(&global.config);
            let config = Config::load(path)?;
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
    /// Validate a config file and print it normalized (defaults filled in).
    Check {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
    },
}
