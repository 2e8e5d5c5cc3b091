//! abra-sim: a faithful simulator of the abra CLI over the real Docker engine, for the test
//! suite (abra cannot be installed on these machines). It implements what a CI host does with
//! abra, following `shared/abra-contract.md` fact by fact; behaviours the contract marks
//! INFERRED are switches ([`switches`]). docs/testing.md, "The abra simulator", is the map.
//!
//! One module per job: [`cli`] (argv), [`out`] (level-prefixed lines), [`layout`] (`$ABRA_DIR`,
//! apps, stack names), [`envfile`], [`git`], [`compose`] (docker's loader), [`engine`]
//! (Docker), [`ensure`] (recipe checkout and version), [`lint`], and the commands: [`new`],
//! [`secrets`], [`deploy`] with its [`monitor`], [`undeploy`], [`ls`]; [`invocations`] logs.

pub mod cli;
pub mod compose;
pub mod deploy;
pub mod engine;
pub mod ensure;
pub mod envfile;
pub mod git;
pub mod invocations;
pub mod layout;
pub mod lint;
pub mod ls;
pub mod monitor;
pub mod new;
pub mod out;
pub mod secrets;
pub mod switches;
pub mod undeploy;

use std::path::PathBuf;

use clap::Parser;

use cli::{AppCmd, Cli, RecipeCmd, SecretCmd, Top};
use out::Out;
use switches::Switches;

/// What every command gets.
pub struct Ctx {
    pub out: Out,
    pub sw: Switches,
    pub root: PathBuf,
}

async fn dispatch(ctx: &Ctx, cli: Cli) -> anyhow::Result<()> {
    let (offline, no_input) = (cli.offline, cli.no_input);
    match cli.cmd {
        Top::App { cmd } => match cmd {
            AppCmd::New(a) => {
                if ctx.sw.require_no_input && !no_input {
                    anyhow::bail!("a prompt needs a terminal: pass --no-input/-n");
                }
                new::cmd_new(
                    ctx,
                    &new::NewArgs {
                        recipe: &a.recipe,
                        version: a.version.as_deref(),
                        server: a.server.as_deref(),
                        domain: a.domain.as_deref(),
                        secrets: a.secrets,
                        chaos: a.chaos,
                        offline,
                        machine: a.machine,
                    },
                )
            }
            AppCmd::Deploy(a) => {
                deploy::cmd_deploy(
                    ctx,
                    &deploy::DeployArgs {
                        domain: &a.domain,
                        version: a.version.as_deref(),
                        chaos: a.chaos,
                        force: a.force,
                        no_converge_checks: a.no_converge_checks,
                        offline,
                        ignore_env_version: a.ignore_env_version,
                        no_input,
                    },
                )
                .await
            }
            AppCmd::Undeploy(a) => undeploy::cmd_undeploy(ctx, &a.domain, no_input, a.prune).await,
            AppCmd::Secret { cmd } => match cmd {
                SecretCmd::Generate {
                    domain,
                    name,
                    version,
                    all,
                    machine,
                } => secrets::cmd_generate(
                    ctx,
                    &domain,
                    all,
                    name.as_deref(),
                    version.as_deref(),
                    machine,
                ),
                SecretCmd::Ls { domain, machine } => secrets::cmd_ls(ctx, &domain, machine),
            },
            AppCmd::Ls(a) => {
                ls::cmd_ls(
                    ctx,
                    a.server.as_deref(),
                    a.recipe.as_deref(),
                    a.status,
                    a.machine,
                )
                .await
            }
            AppCmd::Ps(a) => ls::cmd_ps(ctx, &a.domain, a.machine).await,
        },
        Top::Recipe { cmd } => match cmd {
            RecipeCmd::Lint { recipe } => lint::cmd_lint(ctx, &recipe),
        },
    }
}

/// Runs one invocation (`argv[0]` is the program) and returns the exit code: 1 after a FATA,
/// 0 otherwise (contract §4.8).
pub fn run(argv: Vec<String>) -> i32 {
    let fallback = Out {
        debug: false,
        fata: switches::Stream::Stdout,
        rest: switches::Stream::Stdout,
    };
    let sw = match Switches::from_env() {
        Ok(sw) => sw,
        Err(e) => {
            fallback.fatal(&format!("abra-sim: {e:#}"));
            return 1;
        }
    };
    let log = sw.log.clone();
    let code = run_with(&argv, sw, &fallback);
    if let Some(path) = log {
        invocations::append(&path, &argv, code);
    }
    code
}

fn run_with(argv: &[String], sw: Switches, fallback: &Out) -> i32 {
    let fallback = Out {
        fata: sw.fata_stream,
        rest: sw.log_stream,
        ..*fallback
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                fallback.print(&e.to_string());
                return 0;
            }
            let msg = e.to_string();
            fallback.fatal(msg.trim_start_matches("error: "));
            return 1;
        }
    };
    let root = match layout::abra_dir() {
        Ok(r) => r,
        Err(e) => {
            fallback.fatal(&format!("{e:#}"));
            return 1;
        }
    };
    let ctx = Ctx {
        out: Out {
            debug: cli.debug,
            ..fallback
        },
        sw,
        root,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ctx.out.fatal(&format!("starting the runtime: {e}"));
            return 1;
        }
    };
    match rt.block_on(dispatch(&ctx, cli)) {
        Ok(()) => 0,
        Err(e) => {
            ctx.out.fatal(&format!("{e:#}"));
            1
        }
    }
}
