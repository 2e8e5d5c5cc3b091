//! The command line: the subset of abra 0.13's commands and flags a CI host uses.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "abra",
    version = "0.13.0-beta-abra-sim",
    about = "abra-sim: the subset of abra a CI host uses, over the real Docker engine",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Show DEBU lines with file:line.
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
    /// Never prompt.
    #[arg(short = 'n', long = "no-input", global = true)]
    pub no_input: bool,
    /// No git fetch.
    #[arg(short = 'o', long, global = true)]
    pub offline: bool,
    #[command(subcommand)]
    pub cmd: Top,
}

#[derive(Subcommand, Debug)]
pub enum Top {
    #[command(alias = "a")]
    App {
        #[command(subcommand)]
        cmd: AppCmd,
    },
    #[command(alias = "r")]
    Recipe {
        #[command(subcommand)]
        cmd: RecipeCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum AppCmd {
    #[command(alias = "n")]
    New(New),
    #[command(alias = "d")]
    Deploy(Deploy),
    #[command(alias = "un")]
    Undeploy(Undeploy),
    #[command(alias = "s")]
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    #[command(alias = "l")]
    Ls(Ls),
    #[command(alias = "p")]
    Ps(Ps),
}

#[derive(Args, Debug)]
pub struct New {
    pub recipe: String,
    pub version: Option<String>,
    #[arg(short = 's', long)]
    pub server: Option<String>,
    #[arg(short = 'D', long)]
    pub domain: Option<String>,
    /// Generate all secrets.
    #[arg(short = 'S', long)]
    pub secrets: bool,
    /// Show generated secrets (abra-sim never shows values unless ABRA_SIM_PRINT_SECRET_VALUES).
    #[arg(short = 'P', long)]
    pub pass: bool,
    #[arg(short = 'C', long)]
    pub chaos: bool,
    #[arg(short = 'm', long)]
    pub machine: bool,
}

#[derive(Args, Debug)]
pub struct Deploy {
    pub domain: String,
    pub version: Option<String>,
    #[arg(short = 'C', long)]
    pub chaos: bool,
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(short = 'c', long = "no-converge-checks")]
    pub no_converge_checks: bool,
    #[arg(short = 'D', long = "no-domain-checks")]
    pub no_domain_checks: bool,
    #[arg(short = 'i', long = "ignore-env-version")]
    pub ignore_env_version: bool,
}

#[derive(Args, Debug)]
pub struct Undeploy {
    pub domain: String,
    #[arg(short = 'p', long)]
    pub prune: bool,
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    #[command(alias = "g")]
    Generate {
        domain: String,
        name: Option<String>,
        version: Option<String>,
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'm', long)]
        machine: bool,
    },
    #[command(alias = "list")]
    Ls {
        domain: String,
        #[arg(short = 'm', long)]
        machine: bool,
    },
}

#[derive(Args, Debug)]
pub struct Ls {
    #[arg(short = 's', long)]
    pub server: Option<String>,
    #[arg(short = 'r', long)]
    pub recipe: Option<String>,
    #[arg(short = 'S', long)]
    pub status: bool,
    #[arg(short = 'm', long)]
    pub machine: bool,
}

#[derive(Args, Debug)]
pub struct Ps {
    pub domain: String,
    #[arg(short = 'm', long)]
    pub machine: bool,
}

#[derive(Subcommand, Debug)]
pub enum RecipeCmd {
    #[command(alias = "l")]
    Lint { recipe: String },
}
