//! `ci-warm sweep [--max-tests N]`.

use clap::Args;

use super::Global;
use crate::canonical::sweep;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// At most this many cold runs (default: `sweep.max_tests` from the config).
    #[arg(long)]
    pub max_tests: Option<u32>,
}

pub fn run(global: &Global, a: SweepArgs) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let report = sweep::sweep(&config, a.max_tests)?;
    if global.json {
        super::print_json(&report)?;
    } else {
        for item in &report.ran {
            let r = &item.result;
            println!(
                "{} {}: {} in {:.1}s{}{} (log {})",
                r.recipe,
                r.version.as_deref().unwrap_or("?"),
                r.result.as_str(),
                r.duration_secs,
                r.reason
                    .as_ref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default(),
                r.promotion
                    .as_ref()
                    .map(|p| format!("; {p}"))
                    .unwrap_or_default(),
                r.log
                    .as_ref()
                    .map_or("-".to_owned(), |l| l.display().to_string())
            );
        }
        let skipped = report.order.len().saturating_sub(report.ran.len());
        if skipped > 0 {
            println!(
                "{skipped} enrolled recipe(s) left for the next sweep (max {})",
                report.max_tests
            );
        }
    }
    Ok(report.exit)
}
