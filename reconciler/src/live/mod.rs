//! The real Platform (here) and its snapshot adapter (`snap`): the state machine wired to git, the
//! deployers, Docker and the snapshot engine. May import: `config`, `upgrade`, `platform`.
//!
//! The real [`Platform`]: git for the recipe, a real deployer, the Docker API for observation
//! and the snapshot engine for volumes. The state machine in `reconcile.rs` only sees the trait.

mod abra_dir;
pub mod snap;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::spec::AppPlan;
use crate::config::{Config, Deployer as DeployerConfig};
use crate::platform::backupbot;
use crate::platform::deploy::abra::{AbraDeployer, Bootstrap};
use crate::platform::deploy::placement::{self, Pin};
use crate::platform::deploy::stack::StackDeployer;
use crate::platform::deploy::{DeployTarget, Deployer, GoneWait, Revision};
use crate::platform::docker::{self, Engine, SwarmView};
use crate::upgrade::gate::Release;
use crate::upgrade::health::{Expected, GateTiming, HealthGate, Verdict};
use crate::upgrade::probe::HttpProbe;
use crate::upgrade::recipe::{GitRecipe, RecipeSource, Rev};
use crate::upgrade::reconcile::{Health, Platform, Verified};
use crate::upgrade::version::Version;

/// Everything with side effects for one app.
pub struct LivePlatform {
    pub plan: AppPlan,
    pub app_dir: PathBuf,
    recipe: GitRecipe,
    engine: Arc<Engine>,
    deployer: Box<dyn Deployer>,
    reserve: snap::Reserve,
    rt: tokio::runtime::Runtime,
    /// With the abra deployer: the app's own `ABRA_DIR` and its env file there.
    abra: Option<abra_dir::AbraDirs>,
    /// The summary of the snapshot this run took, for the metrics file.
    pub last_snapshot: Option<ci_warm_snapshot::Summary>,
    /// ci-warm's swarm node, once asked (stateful apps only).
    home: std::sync::OnceLock<docker::NodeObs>,
}

impl LivePlatform {
    /// The platform of a run that deploys. It refuses, before anything has changed, an app its
    /// deployer could not deploy on this host (a missing or unreadable env file,
    /// [`Config::preflight`]): a stateful upgrade undeploys first, and a deploy that fails only
    /// afterwards takes the app down and records a good version as failed.
    pub fn new(config: &Config, plan: AppPlan) -> anyhow::Result<LivePlatform> {
        config.preflight(&plan.spec.name)?;
        Self::for_snapshots(config, plan)
    }

    /// The platform of a command that never deploys (snapshot take, verify, restore): no
    /// pre-flight of what only a deploy needs.
    pub fn for_snapshots(config: &Config, plan: AppPlan) -> anyhow::Result<LivePlatform> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let engine = Arc::new(
            rt.block_on(Engine::connect())
                .with_context(|| format!("connecting to Docker for app {}", plan.spec.name))?,
        );
        let app_dir = config.state_dir.join(&plan.spec.name);
        let gone = GoneWait {
            timeout: std::time::Duration::from_secs(config.undeploy.timeout_secs),
            ..GoneWait::default()
        };
        let (deployer, abra): (Box<dyn Deployer>, Option<abra_dir::AbraDirs>) = match &config
            .deployer
        {
            DeployerConfig::Stack => {
                let mut d = StackDeployer::new(engine.clone());
                d.gone = gone;
                (Box::new(d), None)
            }
            DeployerConfig::Abra {
                abra,
                server,
                abra_dir,
                timeout_secs,
                deploy_args,
                pty,
            } => {
                let dirs = abra_dir::AbraDirs::new(abra_dir.as_deref(), &app_dir, server, &plan)?;
                let mut d = AbraDeployer::new(engine.clone(), abra.clone());
                d.gone = gone;
                d.extra_deploy_args = deploy_args.clone();
                d.command_timeout = std::time::Duration::from_secs(*timeout_secs);
                d.pty = *pty;
                d.abra_dir = Some(dirs.run.clone());
                d.bootstrap = plan.bootstrap.then(|| Bootstrap {
                    recipe: plan.spec.recipe.clone(),
                    server: server.clone(),
                    env: plan.env.clone(),
                });
                (Box::new(d), Some(dirs))
            }
        };
        let recipe = GitRecipe::new(
            plan.repo.clone(),
            GitRecipe::cache_dir_for(&config.state_dir, &plan.spec.name),
        )?;
        Ok(LivePlatform {
            reserve: snap::Reserve {
                bytes: config.snapshot.reserve_bytes,
                percent: config.snapshot.reserve_percent,
            },
            plan,
            app_dir,
            recipe,
            engine,
            deployer,
            rt,
            abra,
            last_snapshot: None,
            home: std::sync::OnceLock::new(),
        })
    }

    /// A stateful app's home: ci-warm's own swarm node, whose volumes it snapshots (issue #18).
    /// `None` for a stateless app, which swarm places as it likes.
    fn home(&self) -> anyhow::Result<Option<docker::NodeObs>> {
        if !self.plan.spec.stateful {
            return Ok(None);
        }
        // Asked once per run: a deploy and its gate must agree, and a gate must not fail
        // because `docker info` did not answer once.
        if let Some(node) = self.home.get() {
            return Ok(Some(node.clone()));
        }
        let local = self
            .rt
            .block_on(self.engine.local_node())
            .with_context(|| {
                format!(
                    "finding the node that holds app {}'s data",
                    self.plan.spec.name
                )
            })?;
        if !local.manager {
            bail!(
                "ci-warm's Docker engine (node {}) is a swarm worker: it keeps app {}'s data on this node but can only deploy and observe through a manager; promote the node (`docker node promote {}`) — see docs/operations.md, \"More than one node\"",
                local.node,
                self.plan.spec.name,
                local.node.hostname
            );
        }
        Ok(Some(self.home.get_or_init(|| local.node).clone()))
    }

    fn pin(&self) -> anyhow::Result<Option<Pin>> {
        Ok(self.home()?.map(|node| Pin {
            node_id: node.id,
            hostname: node.hostname,
            file: self.app_dir.join(placement::OVERRIDE_NAME),
        }))
    }

    fn env_file(&self) -> anyhow::Result<PathBuf> {
        self.abra
            .as_ref()
            .map(|a| a.env_file.clone())
            .or_else(|| self.plan.env_file.clone())
            .with_context(|| {
                format!(
                    "app {} has no env_file (the stack deployer needs one)",
                    self.plan.spec.name
                )
            })
    }

    fn target(&self, revision: Revision) -> anyhow::Result<DeployTarget> {
        let env_file = self.env_file()?;
        Ok(DeployTarget {
            app: self.plan.spec.name.clone(),
            domain: self.plan.domain.clone(),
            stack: self.plan.stack.clone(),
            checkout: self.checkout_dir(),
            env_file,
            revision,
            pin: self.pin()?,
        })
    }

    /// Where the recipe revision being deployed is checked out.
    pub fn checkout_dir(&self) -> PathBuf {
        match &self.abra {
            Some(a) => a.recipe_tree(),
            None => self.app_dir.join("checkout"),
        }
    }

    /// Deploys any revision (a version, or a chaos ref for the quick lane).
    pub fn deploy_revision(&mut self, rev: &Rev, revision: Revision) -> anyhow::Result<()> {
        let dir = self.checkout_dir();
        match &self.abra {
            // abra reads its own recipe tree: a fresh clone of the cache at the revision.
            Some(a) => a.prepare(&self.recipe, rev),
            None => self
                .recipe
                .checkout(rev, &dir)
                .map(drop)
                .map_err(Into::into),
        }
        .with_context(|| format!("checking out {rev} of recipe {}", self.plan.spec.recipe))?;
        let target = self.target(revision)?;
        self.rt
            .block_on(self.deployer.deploy(&target))
            .with_context(|| format!("deploying {} of app {}", target.revision, target.app))
    }

    /// Health-gates whatever revision is expected.
    pub fn gate(&mut self, revision: Revision) -> anyhow::Result<Health> {
        let probes: Vec<HttpProbe> = self.plan.probes.iter().map(HttpProbe::from).collect();
        let expected = Expected {
            stack: self.plan.stack.clone(),
            revision,
            home: self.home()?,
        };
        let timing = GateTiming {
            timeout: self.plan.health_timeout,
            interval: self.plan.health_interval,
            ..GateTiming::default()
        };
        let gate = HealthGate::new(self.engine.as_ref(), timing);
        let verdict = self
            .rt
            .block_on(gate.wait(&expected, &probes))
            .with_context(|| format!("health-gating app {}", self.plan.spec.name))?;
        Ok(match verdict {
            Verdict::Healthy => Health::Healthy,
            Verdict::Unhealthy { reason } => Health::Unhealthy(reason),
        })
    }

    /// Every volume of the stack, keyed by its compose name (without `<stack>_`), so a snapshot
    /// survives a stack rename. A restore writes exactly the volumes its snapshot holds onto
    /// these; an excluded volume is not in the snapshot and is left as it is.
    pub fn volumes(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        self.volumes_without(&std::collections::BTreeSet::new())
    }

    /// The volumes a snapshot of `version` covers: the stack's volumes minus those backup-bot's
    /// labels exclude in the compose files of that version (the recipe at that tag, with
    /// `COMPOSE_FILE` from the env file). `None`: the checkout last deployed, if there is one.
    pub fn snapshot_volumes(
        &mut self,
        version: Option<&Version>,
    ) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let checkout = match version {
            Some(v) => {
                let dir = self.app_dir.join("compose-labels");
                self.recipe
                    .checkout(&Rev::Version(v.clone()), &dir)
                    .with_context(|| {
                        format!(
                            "checking out {v} of recipe {} for its backup-bot labels",
                            self.plan.spec.recipe
                        )
                    })?;
                Some(dir)
            }
            None => Some(self.checkout_dir()).filter(|d| d.is_dir()),
        };
        let excluded = match checkout {
            Some(dir) => {
                let env_file = self
                    .abra
                    .as_ref()
                    .map(|a| a.env_file.clone())
                    .or_else(|| self.plan.env_file.clone());
                backupbot::excluded_volumes(&dir, env_file.as_deref()).with_context(|| {
                    format!(
                        "reading the backup-bot labels of app {}",
                        self.plan.spec.name
                    )
                })?
            }
            None => {
                tracing::warn!(app = %self.plan.spec.name, "no recipe checkout to read backup-bot labels from; every volume is included");
                std::collections::BTreeSet::new()
            }
        };
        if !excluded.is_empty() {
            tracing::info!(app = %self.plan.spec.name, excluded = ?excluded, "volumes excluded from the snapshot by backup-bot labels");
        }
        self.volumes_without(&excluded)
    }

    fn volumes_without(
        &self,
        excluded: &std::collections::BTreeSet<String>,
    ) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let stack = &self.plan.stack;
        let volumes = self.rt.block_on(self.engine.volumes(stack))?;
        Ok(docker::backed_up_volumes(stack, excluded, &volumes)
            .into_iter()
            .map(|v| {
                let short = v
                    .name
                    .strip_prefix(stack.as_str())
                    .and_then(|r| r.strip_prefix('_'))
                    .unwrap_or(&v.name)
                    .to_owned();
                (short, PathBuf::from(v.mountpoint))
            })
            .collect())
    }

    /// Refuses when any container, running or stopped, still uses one of the volumes.
    pub fn ensure_unused(&self, volumes: &[(String, PathBuf)]) -> anyhow::Result<()> {
        for (short, _) in volumes {
            let full = format!("{}_{short}", self.plan.stack);
            let users = self.rt.block_on(self.engine.containers_using(&full))?;
            if !users.is_empty() {
                let names: Vec<String> = users
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.state))
                    .collect();
                bail!(
                    "volume {full} of app {} is in use by {}; undeploy the app first",
                    self.plan.spec.name,
                    names.join(", ")
                );
            }
        }
        Ok(())
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        snap::snapshot_dir(&self.app_dir)
    }

    pub fn app_dir(&self) -> &Path {
        &self.app_dir
    }

    pub fn recipe(&mut self) -> &mut GitRecipe {
        &mut self.recipe
    }
}

impl Platform for LivePlatform {
    fn releases(&mut self) -> anyhow::Result<Vec<Release>> {
        self.recipe.fetch()?;
        Ok(self.recipe.releases()?)
    }

    fn deploy(&mut self, version: &Version) -> anyhow::Result<()> {
        self.deploy_revision(
            &Rev::Version(version.clone()),
            Revision::Version(version.to_string()),
        )
    }

    fn undeploy(&mut self) -> anyhow::Result<()> {
        let target = DeployTarget {
            app: self.plan.spec.name.clone(),
            domain: self.plan.domain.clone(),
            stack: self.plan.stack.clone(),
            checkout: self.checkout_dir(),
            env_file: self.env_file().unwrap_or_default(),
            revision: Revision::Version(String::new()),
            pin: None,
        };
        self.rt
            .block_on(self.deployer.undeploy(&target))
            .with_context(|| format!("undeploying app {}", self.plan.spec.name))
    }

    fn health(&mut self, version: &Version) -> anyhow::Result<Health> {
        self.gate(Revision::Version(version.to_string()))
    }

    fn take_snapshot(&mut self, version: &Version) -> anyhow::Result<()> {
        let volumes = self.snapshot_volumes(Some(version))?;
        self.ensure_unused(&volumes)?;
        let summary = snap::take(&self.app_dir, &volumes, self.reserve)
            .with_context(|| format!("snapshotting the volumes of app {}", self.plan.spec.name))?;
        self.last_snapshot = Some(summary);
        Ok(())
    }

    fn verify_snapshot(&mut self) -> anyhow::Result<Verified> {
        snap::verify(&self.app_dir)
    }

    fn restore_snapshot(&mut self) -> anyhow::Result<()> {
        let volumes = self.volumes()?;
        self.ensure_unused(&volumes)?;
        snap::restore(&self.app_dir, &volumes)
            .with_context(|| format!("restoring the volumes of app {}", self.plan.spec.name))
    }
}
