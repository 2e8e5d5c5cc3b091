//! `ci-warm canonical list|promote|rewarm`.

use clap::{Args, Subcommand};

use super::Global;
use crate::canonical;
use crate::canonical::promote::{self, Action};
use crate::canonical::results::{Mode, Verdict};
use crate::canonical::rewarm;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum CanonicalCmd {
    /// Enrolled recipes: registry entry, target version, last good, known-good snapshot, drift.
    List,
    /// Record a CI run's result; only an enrolled recipe's green cold run without --ref promotes.
    Promote(PromoteArgs),
    /// Rebuild the canonical on fresh volumes at its registry version and snapshot it as the
    /// known-good.
    Rewarm {
        /// The enrolled recipe.
        recipe: String,
        /// Wait for the canonical's lock instead of exiting 75 (busy) at once.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The recipe the run tested.
    pub recipe: String,
    /// The recipe version the run tested, e.g. `1.1.0+1.0.0`.
    #[arg(long)]
    pub version: String,
    /// The recipe commit the run tested.
    #[arg(long)]
    pub commit: String,
    /// How the run tested: from scratch (cold) or from the canonical (quick).
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Whether the run was green.
    #[arg(long, value_enum)]
    pub result: Verdict,
    /// The PR ref the run tested (a run with a ref never promotes).
    #[arg(long = "ref")]
    pub r#ref: Option<String>,
    /// The CI run id, recorded with the promotion.
    #[arg(long)]
    pub run: Option<String>,
    /// Exit 75 (busy) at once when the canonical is locked, instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(global: &Global, cmd: CanonicalCmd) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    match cmd {
        CanonicalCmd::List => {
            let rows = canonical::list(&config)?;
            if global.json {
                super::print_json(&rows)?;
            } else if rows.is_empty() {
                println!("no canonicals (nothing enrolled under `canonicals`, registry empty)");
            } else {
                for r in rows {
                    let registry = r.registry.as_ref().map_or("-".to_owned(), |e| {
                        format!(
                            "{} ({} at {}{})",
                            e.version,
                            short(&e.commit),
                            e.promoted_at,
                            e.run
                                .as_ref()
                                .map(|r| format!(", run {r}"))
                                .unwrap_or_default()
                        )
                    });
                    println!(
                        "{}{}: registry {registry}; target {}; last good {}; known-good {}{}{}",
                        r.recipe,
                        if r.enrolled { "" } else { " (not enrolled)" },
                        r.target.as_deref().unwrap_or("- (unseeded)"),
                        r.last_good.as_deref().unwrap_or("-"),
                        if r.known_good { "yes" } else { "no" },
                        r.drift
                            .as_ref()
                            .map(|d| format!("; volumes drifted by {}", d.r#ref))
                            .unwrap_or_default(),
                        r.hold
                            .as_ref()
                            .map(|h| format!("; {}", hold_line(&r.app, h)))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(crate::platform::exit::OK)
        }
        CanonicalCmd::Promote(a) => {
            let req = promote::Request {
                recipe: a.recipe,
                version: a.version,
                commit: a.commit,
                mode: a.mode,
                result: a.result,
                r#ref: a.r#ref,
                run: a.run,
            };
            let record = promote::promote(&config, &req, !a.no_wait)?;
            if global.json {
                super::print_json(&record)?;
            } else {
                println!("{record}");
            }
            if record.action == Action::NoOp {
                tracing::info!(
                    "recorded in {}",
                    promote::log_path(&config.state_dir).display()
                );
            }
            Ok(crate::platform::exit::OK)
        }
        CanonicalCmd::Rewarm { recipe, wait } => {
            let report = rewarm::rewarm(&config, &recipe, wait)?;
            if global.json {
                super::print_json(&report)?;
            } else {
                println!("{}: {} ({})", report.app, report.detail, report.outcome);
            }
            Ok(report.exit)
        }
    }
}

/// One line on a canonical whose gate holds its target, shared by `canonical list` and `status`.
pub fn hold_line(app: &str, h: &canonical::Hold) -> String {
    format!(
        "HELD: its gate holds {} ({}), so it stays on {} and `base resolve` answers {}; \
         `ci-warm approve {app} {}` releases it",
        h.target, h.reason, h.holds, h.holds, h.target
    )
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
