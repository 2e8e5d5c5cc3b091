use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::Global;
use crate::config::Config;
use crate::config::spec::{self, AppPlan};
use crate::live::LivePlatform;
use crate::platform::exit::{self, Exit};
use crate::platform::lock;
use crate::upgrade::reconcile::Reconciler;

#[derive(Debug, Serialize)]
struct Report {
    app: String,
    outcome: String,
    detail: String,
    exit: u8,
}

pub fn run(global: &Global, args: ReconcileArgs) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let plans: Vec<AppPlan> = if args.all {
        spec::plans(&config)
    } else if args.apps.is_empty() {
        return Err(Exit::new(exit::USAGE, "name at least one app, or --all").into());
    } else {
        args.apps
            .iter()
            .map(|a| spec::plan(&config, a).map_err(|e| Exit::new(exit::USAGE, e.to_string())))
            .collect::<Result<_, _>>()?
    };
    let mut reports = Vec::new();
    let mut facts = Vec::new();
    for plan in plans {
        let app = plan.spec.name.clone();
        let mut snapshot = None;
        let report = match reconcile_one(&config, plan, args.wait, &mut snapshot) {
            Ok((outcome, code)) => Report {
                app,
                outcome: outcome.0,
                detail: outcome.1,
                exit: code,
            },
            Err(e) => {
                let code = super::exit_code(&e);
                tracing::error!(app = %app, "{e:#}");
                Report {
                    app,
                    outcome: if code == exit::BUSY { "busy" } else { "error" }.to_owned(),
                    detail: format!("{e:#}"),
                    exit: code,
                }
            }
        };
        if !global.json {
            println!("{}: {} ({})", report.app, report.detail, report.outcome);
        }
        facts.push(crate::ops::metrics::RunFact {
            app: report.app.clone(),
            outcome: report.outcome.clone(),
            exit: report.exit,
            snapshot,
        });
        reports.push(report);
    }
    crate::ops::metrics::after_reconcile(&config, args.metrics_file.as_deref(), &facts);
    if global.json {
        super::print_json(&reports)?;
    }
    Ok(worst(reports.iter().map(|r| r.exit)))
}

fn reconcile_one(
    config: &Config,
    plan: AppPlan,
    wait: bool,
    snapshot: &mut Option<ci_warm_snapshot::Summary>,
) -> anyhow::Result<((String, String), u8)> {
    if plan.canonical_of.is_some() {
        // A canonical tracks the registry and keeps its known-good honest (canonical.rs).
        let (name, detail, code) = crate::canonical::reconcile(config, plan, wait, snapshot)?;
        return Ok(((name, detail), code));
    }
    let app_dir = config.state_dir.join(&plan.spec.name);
    let _lock = lock::acquire(&app_dir, &plan.spec.name, wait)?;
    let spec = plan.spec.clone();
    let mut platform = LivePlatform::new(config, plan)?;
    let outcome = Reconciler::new(&spec, &config.state_dir, &mut platform)?.run();
    *snapshot = platform.last_snapshot.take();
    let outcome = outcome?;
    Ok((
        (outcome.name().to_owned(), outcome.to_string()),
        outcome.exit_code(),
    ))
}

/// The exit code of several apps: the most severe one wins.
fn worst(codes: impl Iterator<Item = u8>) -> u8 {
    let rank = |c: u8| match c {
        exit::OK => 0,
        exit::ROLLED_BACK => 1,
        exit::BUSY => 2,
        exit::FAILURE | exit::USAGE => 3,
        _ => 4,
    };
    codes.max_by_key(|c| rank(*c)).unwrap_or(exit::OK)
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Apps to reconcile, by name (`warm-<recipe>` for a canonical).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub apps: Vec<String>,
    /// Reconcile every configured app.
    #[arg(long)]
    pub all: bool,
    /// Wait for an app's lock instead of exiting 75 (busy) at once.
    #[arg(long)]
    pub wait: bool,
    /// Write the Prometheus textfile-collector file here after the run (overrides the
    /// config's `metrics_file`).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}
