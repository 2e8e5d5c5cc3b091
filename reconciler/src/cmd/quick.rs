//! `ci-warm quick <recipe> --ref R [--run ID] -- <test command...>`.

use clap::Args;

use super::Global;
use crate::canonical::quick;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct QuickArgs {
    /// The enrolled recipe whose canonical the run upgrades from.
    pub recipe: String,
    /// The ref to test: a branch, tag or commit of the recipe repository.
    #[arg(long = "ref")]
    pub r#ref: String,
    /// The CI run id (recorded, and given to the test command as CI_WARM_RUN).
    #[arg(long)]
    pub run: Option<String>,
    /// Wait for the canonical's lock instead of exiting 75 (busy) at once.
    #[arg(long)]
    pub wait: bool,
    /// Stop the test command after this many seconds and fail the run (restoring the
    /// known-good); 0 means no limit.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub timeout: u64,
    /// The test command and its arguments (run directly, never through a shell).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(global: &Global, a: QuickArgs) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let req = quick::Request {
        recipe: a.recipe,
        r#ref: a.r#ref,
        run: a.run,
        command: a.command,
        wait: a.wait,
        timeout: crate::platform::child::limit(a.timeout),
    };
    let report = quick::quick(&config, &req)?;
    if global.json {
        super::print_json(&report)?;
    } else {
        let r = &report.result;
        println!(
            "{} quick {} -> {}: {}{} ({:.1}s; {})",
            r.recipe,
            r.version.as_deref().unwrap_or("?"),
            req.r#ref,
            r.result.as_str(),
            match (&r.failed_step, &r.reason) {
                (Some(step), Some(why)) => format!(" at {step}: {why}"),
                _ => String::new(),
            },
            r.duration_secs,
            report.result_file.display()
        );
    }
    Ok(report.exit)
}
