//! One file per command group: its arguments, and the calls that turn them into output (text, or
//! JSON with `--json`). May import every folder; nothing imports it but `cli.rs` and `main.rs`.

pub mod alerts;
pub mod approve;
pub mod base;
pub mod canonical;
pub mod config;
pub mod disk;
pub mod quick;
pub mod realm;
pub mod reconcile;
pub mod snapshot;
pub mod status;
pub mod sweep;

use std::path::PathBuf;

use clap::Args;

use crate::config::DEFAULT_CONFIG_PATH;

/// The process exit code for an error: a bad config file is a usage error (2), the rest as
/// `platform::exit` maps it.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use crate::platform::exit;
    exit::code_with(err, |cause| {
        cause
            .downcast_ref::<crate::config::ConfigError>()
            .map(|_| exit::USAGE)
    })
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(value).context("serializing the output")?;
    println!("{text}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct Global {
    /// The JSON config file.
    #[arg(long, global = true, env = "CI_WARM_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v debug, -vv trace); `CI_WARM_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
