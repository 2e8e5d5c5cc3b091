use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use ci_warm::cli::{Cli, Command, ConfigCmd};
use ci_warm::config::Config;
use ci_warm::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(exit::code_for(&err))
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("CI_WARM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Config(ConfigCmd::Check { file }) => {
            let path = file.unwrap_or(cli.global.config);
            let config = Config::load(&path)?;
            let text = serde_json::to_string_pretty(&config).context("serializing the config")?;
            println!("{text}");
            tracing::info!(path = %path.display(), apps = config.apps.len(), canonicals = config.canonicals.len(), "config is valid");
            Ok(exit::OK)
        }
    }
}
