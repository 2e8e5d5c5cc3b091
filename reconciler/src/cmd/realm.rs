//! `ci-warm realm create|delete|reap`: per-run realms on the warm keycloak (`crate::ci::realm`),
//! with the keycloak URL and admin login from the config's `keycloak` section.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::Global;
use crate::ci::realm::{self, Admin, CreateRequest, Deleted, RealmError};
use crate::config::Config;
use crate::config::secret;
use crate::platform::docker::Engine;
use crate::platform::exit::{self, Exit};

#[derive(Debug, Subcommand)]
pub enum RealmCmd {
    /// Create realm `<prefix>-<run>` with a confidential client and a test user; write their
    /// credentials (mode 0600) and print the file's path.
    Create(CreateArgs),
    /// Delete a per-run realm (idempotent; `master` and realms ci-warm did not create are refused).
    Delete(DeleteArgs),
    /// Delete the per-run realms of runs that are not live and are older than the grace period.
    Reap(ReapArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The CI run's id.
    #[arg(long, value_name = "ID")]
    pub run: String,
    /// The realm name's prefix, usually the recipe.
    #[arg(long, value_name = "RECIPE", default_value = "ci")]
    pub prefix: String,
    /// The confidential client's id (default: the prefix).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// The test user's name.
    #[arg(long, value_name = "NAME", default_value = "ci-test")]
    pub user: String,
    /// The credentials file (default: `<realm>.credentials.json` in the current directory).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The run whose realm to delete.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "realm",
        conflicts_with = "realm"
    )]
    pub run: Option<String>,
    #[arg(long, value_name = "RECIPE", default_value = "ci")]
    pub prefix: String,
    /// The realm, by name.
    #[arg(long, value_name = "NAME")]
    pub realm: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Runs still in progress; their realms are kept whatever their age.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub live: Vec<String>,
    /// Also keep the realms of runs whose stacks are running now (`keycloak.live_runs` says
    /// how a stack names its run). If that cannot be read, nothing is reaped.
    #[arg(long)]
    pub live_from_swarm: bool,
    /// The grace period (e.g. `6h`, `90m`); default: `keycloak.reap_grace_secs`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
}

pub fn run(global: &Global, cmd: RealmCmd) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let Some(kc) = config.keycloak.clone() else {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "the config {} has no `keycloak` section (url, admin_user, admin_password)",
                global.config.display()
            ),
        )
        .into());
    };
    // Refuse bad names before reading secrets or touching the network.
    let delete_target = match &cmd {
        RealmCmd::Delete(a) => Some(delete_target(a)?),
        RealmCmd::Create(a) => {
            realm::realm_name(&a.prefix, &a.run).map_err(|e| usage_for(e.into()))?;
            None
        }
        RealmCmd::Reap(a) if a.live_from_swarm && kc.live_runs.is_none() => {
            return Err(Exit::new(
                exit::USAGE,
                "--live-from-swarm needs keycloak.live_runs in the config (stack_label or \
                 stack_pattern); without a way to tell live runs, nothing is reaped",
            )
            .into());
        }
        RealmCmd::Reap(_) => None,
    };
    let password = secret::read(&kc.admin_password).context("reading keycloak.admin_password")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let admin = Admin::login(&kc.url, &kc.admin_user, password).await?;
        match cmd {
            RealmCmd::Create(a) => create(global, &admin, a).await,
            RealmCmd::Delete(_) => {
                let realm = delete_target.unwrap_or_default();
                delete(global, &admin, &realm).await
            }
            RealmCmd::Reap(mut a) => {
                let grace = a
                    .older_than
                    .unwrap_or(Duration::from_secs(kc.reap_grace_secs));
                if a.live_from_swarm {
                    let source = live_source(kc.live_runs.as_ref())?;
                    // An unreadable swarm is an error before any delete: reap nothing.
                    let services = async {
                        let engine = Engine::connect().await?;
                        engine.stack_service_labels().await
                    }
                    .await
                    .context(
                        "reading the live runs from the running stacks (--live-from-swarm); \
                         nothing was reaped",
                    )?;
                    let live = realm::live_runs(&source, &services);
                    tracing::info!(live = ?live, "live runs from the swarm");
                    a.live.extend(live);
                }
                reap(global, &admin, a, grace).await
            }
        }
    })
}

fn live_source(l: Option<&crate::config::LiveRuns>) -> anyhow::Result<realm::LiveSource> {
    match l.map(|l| (&l.stack_label, &l.stack_pattern)) {
        Some((Some(label), None)) => Ok(realm::LiveSource::StackLabel(label.clone())),
        Some((None, Some(p))) => Ok(realm::LiveSource::StackPattern(p.clone())),
        _ => Err(Exit::new(
            exit::USAGE,
            "keycloak.live_runs must set exactly one of stack_label and stack_pattern; nothing \
             was reaped",
        )
        .into()),
    }
}

fn delete_target(a: &DeleteArgs) -> anyhow::Result<String> {
    match (&a.realm, &a.run) {
        (Some(r), _) if r == realm::MASTER => Err(usage_for(RealmError::Master)),
        (Some(r), _) => {
            crate::config::names::check("realm", r).map_err(|e| usage_for(e.into()))?;
            Ok(r.clone())
        }
        (None, Some(run)) => realm::realm_name(&a.prefix, run).map_err(|e| usage_for(e.into())),
        (None, None) => Err(Exit::new(exit::USAGE, "give --run ID or --realm NAME").into()),
    }
}

/// Refusals (bad names, `master`, foreign realms) are usage errors: retrying cannot help.
fn usage_for(e: RealmError) -> anyhow::Error {
    match e {
        RealmError::Name(_) | RealmError::Master | RealmError::NotPerRun { .. } => {
            Exit::new(exit::USAGE, e.to_string()).into()
        }
        other => other.into(),
    }
}

#[derive(Serialize)]
struct CreatedOut<'a> {
    realm: &'a str,
    run: &'a str,
    path: String,
    issuer: &'a str,
    client_id: &'a str,
    username: &'a str,
}

async fn create(global: &Global, admin: &Admin, a: CreateArgs) -> anyhow::Result<u8> {
    let realm_name = realm::realm_name(&a.prefix, &a.run)?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| realm::default_output(&realm_name));
    let req = CreateRequest {
        client_id: a.client_id.clone().unwrap_or_else(|| a.prefix.clone()),
        prefix: a.prefix,
        run: a.run,
        username: a.user,
    };
    let creds = realm::create(admin, &req, &output, SystemTime::now()).await?;
    let path = std::path::absolute(&output)
        .unwrap_or(output)
        .to_string_lossy()
        .into_owned();
    if global.json {
        super::print_json(&CreatedOut {
            realm: &creds.realm,
            run: &creds.run,
            path,
            issuer: &creds.issuer,
            client_id: &creds.client_id,
            username: &creds.username,
        })?;
    } else {
        println!("{path}");
    }
    Ok(exit::OK)
}

async fn delete(global: &Global, admin: &Admin, realm_name: &str) -> anyhow::Result<u8> {
    let result = realm::delete(admin, realm_name).await.map_err(usage_for)?;
    if global.json {
        super::print_json(&serde_json::json!({"realm": realm_name, "result": result}))?;
    } else {
        match result {
            Deleted::Deleted => println!("deleted realm {realm_name}"),
            Deleted::AlreadyGone => println!("realm {realm_name} does not exist (already deleted)"),
        }
    }
    Ok(exit::OK)
}

async fn reap(global: &Global, admin: &Admin, a: ReapArgs, grace: Duration) -> anyhow::Result<u8> {
    for run in &a.live {
        crate::config::names::check("run id", run).map_err(|e| usage_for(e.into()))?;
    }
    let live: BTreeSet<String> = a.live.into_iter().collect();
    let report = realm::reap(admin, &live, grace, SystemTime::now()).await?;
    if global.json {
        super::print_json(&report)?;
    } else {
        for r in &report.deleted {
            println!("deleted {r}");
        }
        for k in &report.kept {
            println!("kept {} (run {}: {})", k.realm, k.run, k.why);
        }
        for f in &report.failed {
            println!("failed {}: {}", f.realm, f.error);
        }
    }
    Ok(if report.failed.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}
