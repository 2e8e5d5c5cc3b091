//! The `abra` backend: the CI host's normal tool.
//!
//! Command lines (abra 0.9+ flag names):
//!
//! ```text
//! abra app deploy <domain> <version> --no-input --force
//! abra app deploy <domain> <ref> --chaos --no-input --force
//! abra app undeploy <domain> --no-input
//! ```
//!
//! `--no-input` because a timer has no terminal to answer prompts; `--force` because re-deploying
//! the version already deployed (a rollback to last-good after a failed gate) must happen, not be
//! skipped as "already deployed"; `--chaos` deploys a git ref and makes abra stamp
//! `coop-cloud.<stack>.chaos-version`. abra's own converge wait is left on: the health gate then
//! starts from a settled deployment. abra's undeploy returns before swarm has stopped every
//! container, so the undeploy ends with the same engine-side wait as the stack backend.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    DeployError, DeployTarget, Deployer, GoneWait, Revision, run_command, wait_until_gone,
};
use crate::platform::docker::{BoxFuture, SwarmJanitor};
use std::sync::Arc;

pub struct AbraDeployer {
    engine: Arc<dyn SwarmJanitor>,
    /// The abra executable.
    pub abra: PathBuf,
    /// Extra arguments appended to every `abra app deploy` (e.g. `--no-domain-checks` on a CI
    /// host whose domains do not resolve publicly).
    pub extra_deploy_args: Vec<String>,
    pub gone: GoneWait,
    /// Deadline for one abra invocation (abra waits for convergence itself).
    pub command_timeout: Duration,
}

impl AbraDeployer {
    pub fn new(engine: Arc<dyn SwarmJanitor>, abra: PathBuf) -> Self {
        AbraDeployer {
            engine,
            abra,
            extra_deploy_args: Vec::new(),
            gone: GoneWait::default(),
            command_timeout: Duration::from_secs(900),
        }
    }

    /// The argv (after the program) of the deploy.
    pub fn deploy_args(&self, target: &DeployTarget) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["app".into(), "deploy".into(), target.domain.clone().into()];
        match &target.revision {
            Revision::Version(v) => args.push(v.into()),
            Revision::Chaos(r) => {
                args.push(r.into());
                args.push("--chaos".into());
            }
        }
        args.push("--no-input".into());
        args.push("--force".into());
        args.extend(self.extra_deploy_args.iter().map(OsString::from));
        args
    }

    /// The argv (after the program) of the undeploy.
    pub fn undeploy_args(&self, target: &DeployTarget) -> Vec<OsString> {
        vec![
            "app".into(),
            "undeploy".into(),
            target.domain.clone().into(),
            "--no-input".into(),
        ]
    }

    async fn run(
        &self,
        args: Vec<OsString>,
        action: &'static str,
        target: &DeployTarget,
    ) -> Result<String, DeployError> {
        let shown = std::iter::once(self.abra.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(app = %target.app, command = %shown, "running abra");
        let mut cmd = tokio::process::Command::new(&self.abra);
        cmd.args(&args);
        // abra resolves a chaos deploy against the recipe checkout it manages itself; running
        // inside our checkout (when there is one) keeps relative paths in its messages sensible.
        if target.checkout.is_dir() {
            cmd.current_dir(&target.checkout);
        }
        run_command(cmd, shown, action, &target.app, self.command_timeout).await
    }
}

impl Deployer for AbraDeployer {
    fn deploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            self.run(self.deploy_args(target), "deploy", target).await?;
            Ok(())
        })
    }

    fn undeploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            self.run(self.undeploy_args(target), "undeploy", target)
                .await?;
            wait_until_gone(self.engine.as_ref(), &target.app, &target.stack, self.gone).await
        })
    }
}
