//! `ci-warm status`: a table per app on a terminal, the full report with `--json`.

use clap::Args;

use super::Global;
use crate::config::Config;
use crate::ops::status::{self, AppStatus, HealthNow, Options, short_age, short_bytes};
use crate::platform::exit::{self, Exit};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these apps (default: all, plus unconfigured ones with state on disk).
    pub apps: Vec<String>,
    /// Skip the live health observation (no Docker or HTTP access).
    #[arg(long)]
    pub no_health: bool,
    /// Rehash every snapshot instead of checking only its manifest (slow for big snapshots).
    #[arg(long)]
    pub verify: bool,
}

pub fn run(global: &Global, args: StatusArgs) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let mut st = status::collect(
        &config,
        Options {
            health: !args.no_health,
            verify: args.verify,
        },
    )?;
    // The registry belongs to the canonical layer, which `ops` may not read: the canonicals'
    // holds on their registry version are filled in here.
    let registry = crate::canonical::registry::Registry::load(&config.state_dir)?;
    for plan in crate::config::spec::plans(&config) {
        let Some(recipe) = &plan.canonical_of else {
            continue;
        };
        if let Some(a) = st.apps.iter_mut().find(|a| a.app == plan.spec.name)
            && a.error.is_none()
        {
            a.canonical_hold = crate::canonical::hold(&config, recipe, &registry)?;
        }
    }
    if !args.apps.is_empty() {
        if let Some(unknown) = args
            .apps
            .iter()
            .find(|a| !st.apps.iter().any(|s| &s.app == *a))
        {
            return Err(Exit::new(
                exit::USAGE,
                format!("app {unknown:?} is neither configured nor has state"),
            )
            .into());
        }
        st.apps.retain(|a| args.apps.contains(&a.app));
    }
    if global.json {
        super::print_json(&st)?;
    } else {
        print_table(&st.apps);
        println!("{} new alert(s) in total", st.pending_alerts);
    }
    Ok(exit::OK)
}

fn health_cell(h: &HealthNow) -> String {
    match h {
        HealthNow::Healthy => "healthy".into(),
        HealthNow::Unhealthy(_) => "UNHEALTHY".into(),
        HealthNow::Unknown(_) => "unknown".into(),
        HealthNow::NotChecked => "-".into(),
    }
}

fn row(a: &AppStatus) -> Vec<String> {
    let dash = || "-".to_owned();
    let last_run = a.last_run.as_ref().map_or_else(dash, |r| {
        let ago = humantime::parse_rfc3339_weak(&r.at)
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or_else(
                || r.at.clone(),
                |d| format!("{} ago", short_age(d.as_secs())),
            );
        format!("{} {ago}", r.outcome)
    });
    let snapshot = a.snapshot.as_ref().map_or_else(dash, |s| {
        format!(
            "{} {} {}",
            s.age_secs.map_or_else(|| "?".into(), short_age),
            short_bytes(s.bytes),
            match (s.verified.ok, s.verified.depth) {
                (true, "full") => "verified",
                (true, _) => "manifest-ok",
                (false, _) => "CORRUPT",
            }
        )
    });
    vec![
        if a.configured {
            a.app.clone()
        } else {
            format!("{} (unconfigured)", a.app)
        },
        a.deployed.clone().unwrap_or_else(dash),
        a.last_good.clone().unwrap_or_else(dash),
        health_cell(&a.health),
        if a.nodes.is_empty() {
            dash()
        } else {
            a.nodes.join(",")
        },
        last_run,
        snapshot,
        a.held.len().to_string(),
        a.pending_alerts.len().to_string(),
    ]
}

fn print_table(apps: &[AppStatus]) {
    let header: Vec<String> = [
        "APP",
        "DEPLOYED",
        "LAST GOOD",
        "HEALTH",
        "NODE",
        "LAST RUN",
        "SNAPSHOT",
        "HELD",
        "ALERTS",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(apps.iter().map(row))
        .collect();
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    // Details a person must act on, under the table.
    for a in apps {
        if let Some(e) = &a.error {
            println!("{}: ERROR {e}", a.app);
        }
        for url in &a.insecure_probes {
            println!(
                "{}: probe {url} is insecure: its certificate is not checked",
                a.app
            );
        }
        if let Some(i) = &a.intent {
            println!(
                "{}: run in progress or interrupted: step {:?} of {} (pid {}, since {})",
                a.app, i.step, i.to, i.pid, i.started_at
            );
        }
        match &a.health {
            HealthNow::Unhealthy(why) | HealthNow::Unknown(why) => {
                println!("{}: health: {why}", a.app)
            }
            _ => {}
        }
        if let Some(h) = &a.canonical_hold {
            println!("{}: {}", a.app, super::canonical::hold_line(&a.app, h));
        }
        for h in &a.held {
            println!("{}: held {} ({}): {}", a.app, h.version, h.kind, h.reason);
        }
        for v in &a.skipped_prerelease {
            println!(
                "{}: skipped {v}: a pre-release (set allow_prerelease to take it)",
                a.app
            );
        }
        for f in &a.failed {
            println!("{}: failed {} at {}: {}", a.app, f.version, f.at, f.reason);
        }
        if let Some(s) = &a.snapshot {
            for p in &s.verified.problems {
                println!("{}: snapshot problem: {p}", a.app);
            }
        }
    }
}
