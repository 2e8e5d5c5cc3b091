//! The `abra` backend: the CI host's normal tool, driven as it behaves
//! (`shared/abra-contract.md`, section numbers below are its).
//!
//! Command lines:
//!
//! ```text
//! abra app deploy <domain> <version> -n -o -c [-f] [deploy_args...]   a release (abra checks the tag out)
//! abra app deploy <domain> -C -n -o -c [-f] [deploy_args...]           a chaos ref (the tree as it is)
//! abra app undeploy <domain> -n                                        only when the engine shows it deployed
//! abra app new <recipe> <version> -s <server> -D <domain> -n -o        bootstrap (env file missing)
//! abra app secret generate <domain> <name> <version> -m -n -o          each missing secret, values never logged
//! ```
//!
//! * Observe before acting (§5, pitfall 13): undeploy of an app the Docker API shows without
//!   services is "already undeployed", never a call to abra, which refuses it with
//!   `FATA <domain> is not deployed?`. `-f` only where the app is deployed (§4.5).
//! * `-c` (§4.6, pitfall 8): abra's monitor calls a healthy upgrade whose new task is still in its
//!   `start_period` "deploy failed"; convergence is the health gate's, which waits it out.
//! * `-o` (§4.2, pitfall 4): ci-warm fetched the recipe already; abra's clone has no usable origin.
//! * No prune (§4.7): after every deploy the stack's services that the deployed compose files no
//!   longer declare are removed here, each one logged.
//! * Every call runs with `ABRA_DIR` set to the app's own directory (§1.1, pitfall 1), whose
//!   `recipes/<recipe>` ci-warm prepared at the revision: abra can only deploy what ci-warm chose.
//! * A stateful app is pinned to ci-warm's node by a compose override outside the recipe tree,
//!   named in the env file's `COMPOSE_FILE` (`placement`: why this way).
//! * A failure quotes abra's `FATA` line, from whichever stream it came (§4.8: stdout).
//!
//! Undeploy ends with the engine-side wait of both backends (abra returns before the stack is
//! gone, §5).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::stack::{compose_files, parse_env};
use super::{
    DeployError, DeployTarget, Deployer, GoneWait, Revision, placement, run_command, tail,
    wait_until_gone,
};
use crate::platform::docker::{BoxFuture, SwarmJanitor};

/// What a missing app is created with (`abra app new`), and whose missing secrets are generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    pub recipe: String,
    pub server: String,
    /// Keys written into the new env file (replacing the `.env.sample` line, or appended).
    pub env: BTreeMap<String, String>,
}

pub struct AbraDeployer {
    engine: Arc<dyn SwarmJanitor>,
    /// The abra executable.
    pub abra: PathBuf,
    /// Extra arguments appended to every `abra app deploy` (e.g. `--no-domain-checks` on a CI
    /// host whose domains do not resolve publicly).
    pub extra_deploy_args: Vec<String>,
    pub gone: GoneWait,
    /// Deadline for one abra invocation.
    pub command_timeout: Duration,
    /// Run abra under a pseudo-terminal (`script -qec ... /dev/null`).
    pub pty: bool,
    /// `ABRA_DIR` of every invocation; `None` inherits the caller's.
    pub abra_dir: Option<PathBuf>,
    /// The docker CLI, for removing orphaned services and listing secrets.
    pub docker_cli: PathBuf,
    /// `Some`: an app without env file is created, and missing secrets are generated before
    /// every deploy. `None`: a missing env file is an error.
    pub bootstrap: Option<Bootstrap>,
}

impl AbraDeployer {
    pub fn new(engine: Arc<dyn SwarmJanitor>, abra: PathBuf) -> Self {
        AbraDeployer {
            engine,
            abra,
            extra_deploy_args: Vec::new(),
            gone: GoneWait::default(),
            command_timeout: Duration::from_secs(900),
            pty: false,
            abra_dir: None,
            docker_cli: PathBuf::from("docker"),
            bootstrap: None,
        }
    }

    /// The argv (after the program) of the deploy; `deployed`: the engine shows the app running.
    pub fn deploy_args(&self, target: &DeployTarget, deployed: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["app".into(), "deploy".into(), target.domain.clone().into()];
        match &target.revision {
            Revision::Version(v) => args.push(v.into()),
            // The ref is checked out in the app's own recipe tree; abra deploys the tree as is.
            Revision::Chaos(_) => args.push("-C".into()),
        }
        args.extend(["-n", "-o", "-c"].map(OsString::from));
        if deployed {
            args.push("-f".into());
        }
        args.extend(self.extra_deploy_args.iter().map(OsString::from));
        args
    }

    /// The argv (after the program) of the undeploy.
    pub fn undeploy_args(&self, target: &DeployTarget) -> Vec<OsString> {
        vec![
            "app".into(),
            "undeploy".into(),
            target.domain.clone().into(),
            "-n".into(),
        ]
    }

    /// The argv (after the program) of `abra app new` for a bootstrap.
    pub fn new_args(&self, target: &DeployTarget, boot: &Bootstrap) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["app".into(), "new".into(), boot.recipe.clone().into()];
        match &target.revision {
            Revision::Version(v) => args.push(v.into()),
            Revision::Chaos(_) => args.push("-C".into()),
        }
        args.extend(
            [
                "-s",
                boot.server.as_str(),
                "-D",
                target.domain.as_str(),
                "-n",
                "-o",
            ]
            .map(OsString::from),
        );
        args
    }

    fn shown(&self, args: &[OsString]) -> String {
        std::iter::once(self.abra.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs abra; `reveals_secrets`: its output may hold secret values, so an error quotes only
    /// the FATA line and nothing is logged.
    async fn run(
        &self,
        args: Vec<OsString>,
        action: &'static str,
        target: &DeployTarget,
        reveals_secrets: bool,
    ) -> Result<String, DeployError> {
        let shown = self.shown(&args);
        tracing::info!(app = %target.app, command = %shown, pty = self.pty, "running abra");
        let mut cmd = if self.pty {
            // util-linux script: the command runs on a pseudo-terminal, its output copied to ours.
            let line = std::iter::once(self.abra.as_os_str())
                .chain(args.iter().map(OsString::as_os_str))
                .map(|a| shell_quote(&a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ");
            let mut c = tokio::process::Command::new("script");
            c.args(["-qec", &line, "/dev/null"]);
            c
        } else {
            let mut c = tokio::process::Command::new(&self.abra);
            c.args(&args);
            c
        };
        if let Some(dir) = &self.abra_dir {
            cmd.env("ABRA_DIR", dir);
        }
        if target.checkout.is_dir() {
            cmd.current_dir(&target.checkout);
        }
        match run_command(cmd, shown, action, &target.app, self.command_timeout).await {
            Ok(out) => Ok(out),
            Err(DeployError::Command {
                command,
                action,
                app,
                status,
                output,
            }) => {
                let fata = match fata_line(&output) {
                    Some(line) => line,
                    None if reveals_secrets => {
                        "no FATA line (output withheld: it may hold secret values)".to_owned()
                    }
                    None => format!("no FATA line; output: {}", tail(&output, 1000)),
                };
                Err(DeployError::Abra {
                    command,
                    action,
                    app,
                    status,
                    fata,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The stack's services, as the Docker API shows them.
    async fn services(
        &self,
        target: &DeployTarget,
    ) -> Result<Vec<crate::platform::docker::ServiceObs>, DeployError> {
        self.engine
            .services(&target.stack)
            .await
            .map_err(|source| DeployError::Observe {
                app: target.app.clone(),
                stack: target.stack.clone(),
                source,
            })
    }

    async fn deployed(&self, target: &DeployTarget) -> Result<bool, DeployError> {
        Ok(!self.services(target).await?.is_empty())
    }

    async fn deploy_inner(&self, target: &DeployTarget) -> Result<(), DeployError> {
        if let Some(boot) = &self.bootstrap {
            if !target.env_file.exists() {
                self.create_app(target, boot).await?;
            }
            self.generate_missing_secrets(target).await?;
        } else if !target.env_file.exists() {
            return Err(DeployError::NoApp {
                app: target.app.clone(),
                env_file: target.env_file.clone(),
            });
        }
        self.place(target).await?;
        let deployed = self.deployed(target).await?;
        self.run(self.deploy_args(target, deployed), "deploy", target, false)
            .await?;
        self.remove_orphans(target).await
    }

    /// Points the env file's `COMPOSE_FILE` at the placement override (written here, outside
    /// the recipe tree: a non-chaos deploy refuses untracked files in it), or drops the entry
    /// when the app is not pinned. abra takes compose files from `COMPOSE_FILE` only.
    async fn place(&self, target: &DeployTarget) -> Result<(), DeployError> {
        let (text, env) = read_env(target).await?;
        let current = compose_files(&env);
        let recipe = placement::recipe_files(&current);
        let entry = match &target.pin {
            Some(pin) => {
                let mut services = BTreeSet::new();
                for f in &recipe {
                    services.extend(compose_services(&target.app, &target.checkout.join(f)).await?);
                }
                placement::write_override(&target.app, &services, pin).await?;
                Some(placement::compose_file_entry(&target.checkout, &pin.file))
            }
            None => None,
        };
        if entry.is_none() && recipe == current {
            return Ok(());
        }
        let value = placement::compose_file_value(&recipe, entry.as_deref());
        if env.get("COMPOSE_FILE") == Some(&value) {
            return Ok(());
        }
        let keys = BTreeMap::from([("COMPOSE_FILE".to_owned(), value.clone())]);
        tokio::fs::write(&target.env_file, set_env_keys(&text, &keys))
            .await
            .map_err(|source| DeployError::EnvFile {
                app: target.app.clone(),
                path: target.env_file.clone(),
                source,
            })?;
        match &target.pin {
            Some(pin) => tracing::info!(app = %target.app, node = %pin.hostname,
                constraint = %pin.constraint(), compose_file = %value,
                "pinning the stateful app to ci-warm's node (COMPOSE_FILE in the env file)"),
            None => tracing::info!(app = %target.app, compose_file = %value,
                "the app is not pinned: dropped the placement override from COMPOSE_FILE"),
        }
        Ok(())
    }

    /// `abra app new`, then the configured env keys written into the new env file.
    async fn create_app(&self, target: &DeployTarget, boot: &Bootstrap) -> Result<(), DeployError> {
        tracing::info!(app = %target.app, env_file = %target.env_file.display(),
            "the app has no env file: bootstrapping it with abra app new");
        self.run(self.new_args(target, boot), "app new", target, true)
            .await?;
        if boot.env.is_empty() {
            return Ok(());
        }
        let io = |source| DeployError::EnvFile {
            app: target.app.clone(),
            path: target.env_file.clone(),
            source,
        };
        let text = tokio::fs::read_to_string(&target.env_file)
            .await
            .map_err(io)?;
        tokio::fs::write(&target.env_file, set_env_keys(&text, &boot.env))
            .await
            .map_err(io)?;
        tracing::info!(app = %target.app, keys = ?boot.env.keys().collect::<Vec<_>>(),
            "wrote the configured env keys into the new env file");
        Ok(())
    }

    /// Generates each secret the env file versions (`SECRET_<NAME>_VERSION=v1`) that swarm does
    /// not have yet, one by one: `abra app secret generate` of an existing one fails (§3).
    async fn generate_missing_secrets(&self, target: &DeployTarget) -> Result<(), DeployError> {
        let wanted = secret_versions(&read_env_text(target).await?);
        if wanted.is_empty() {
            return Ok(());
        }
        let mut ls = tokio::process::Command::new(&self.docker_cli);
        let filter = format!("name={}_", target.stack);
        ls.args(["secret", "ls", "--filter", &filter, "--format", "{{.Name}}"]);
        let display = format!("docker secret ls --filter {filter}");
        let existing: BTreeSet<String> = run_command(
            ls,
            display,
            "secret listing",
            &target.app,
            self.command_timeout,
        )
        .await?
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
        for s in wanted {
            let full = format!("{}_{}_{}", target.stack, s.name, s.version);
            if existing.contains(&full) {
                continue;
            }
            if !s.generate {
                tracing::warn!(app = %target.app, secret = %full,
                    "secret is missing and marked generate=false: insert it (abra app secret insert)");
                continue;
            }
            tracing::info!(app = %target.app, secret = %full, "generating a missing secret");
            let args = ["app", "secret", "generate"]
                .map(OsString::from)
                .into_iter()
                .chain([
                    target.domain.clone().into(),
                    s.name.clone().into(),
                    s.version.clone().into(),
                ])
                .chain(["-m", "-n", "-o"].map(OsString::from))
                .collect();
            // The output is dropped unread: it may hold the generated value.
            self.run(args, "secret generate", target, true).await?;
        }
        Ok(())
    }

    /// Removes the stack's services that the deployed compose files no longer declare.
    async fn remove_orphans(&self, target: &DeployTarget) -> Result<(), DeployError> {
        let declared = declared_services(target).await?;
        let running = self.services(target).await?;
        let prefix = format!("{}_", target.stack);
        for s in running {
            let short = s.name.strip_prefix(&prefix).unwrap_or(&s.name);
            if declared.contains(short) {
                continue;
            }
            tracing::warn!(app = %target.app, service = %s.name, revision = %target.revision,
                "removing an orphaned service: the deployed compose files no longer declare it (abra never prunes)");
            let mut rm = tokio::process::Command::new(&self.docker_cli);
            rm.args(["service", "rm", &s.name]);
            let display = format!("docker service rm {}", s.name);
            run_command(
                rm,
                display,
                "orphan removal",
                &target.app,
                self.command_timeout,
            )
            .await?;
        }
        Ok(())
    }

    async fn undeploy_inner(&self, target: &DeployTarget) -> Result<(), DeployError> {
        if !self.deployed(target).await? {
            tracing::info!(app = %target.app, stack = %target.stack,
                "already undeployed: the engine shows no service of the stack");
        } else {
            match self
                .run(self.undeploy_args(target), "undeploy", target, false)
                .await
            {
                Ok(_) => {}
                // Removed between our look and abra's: the same outcome.
                Err(DeployError::Abra { fata, .. }) if fata.contains("is not deployed?") => {
                    tracing::info!(app = %target.app, "already undeployed ({fata})");
                }
                // abra's undeploy is docker's `stack rm`, which fails when a stopping task still
                // holds the stack's network although every service is gone. Judge by what the
                // engine shows: with no service left, the wait below finishes the job.
                Err(e) if !self.deployed(target).await? => {
                    tracing::warn!(app = %target.app, stack = %target.stack,
                        "abra's undeploy failed but no service of the stack is left; waiting for the rest to go: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        wait_until_gone(self.engine.as_ref(), &target.app, &target.stack, self.gone).await
    }
}

impl Deployer for AbraDeployer {
    fn deploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(self.deploy_inner(target))
    }

    fn undeploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(self.undeploy_inner(target))
    }
}

/// The first `FATA` line of abra's output (either stream; ANSI colours and `\r` removed).
pub fn fata_line(output: &str) -> Option<String> {
    output
        .lines()
        .map(|l| strip_ansi(l).trim().to_owned())
        .find(|l| l.starts_with("FATA"))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `text` with each key set: its `KEY=` line replaced, or the line appended.
pub fn set_env_keys(text: &str, keys: &BTreeMap<String, String>) -> String {
    let mut done = BTreeSet::new();
    let mut out = String::new();
    for line in text.lines() {
        let key = line
            .trim_start()
            .strip_prefix("export ")
            .unwrap_or(line.trim_start())
            .split_once('=')
            .map(|(k, _)| k.trim());
        match key.and_then(|k| keys.get_key_value(k)) {
            Some((k, v)) if !line.trim_start().starts_with('#') => {
                out.push_str(&format!("{k}={}\n", env_value(v)));
                done.insert(k.clone());
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (k, v) in keys {
        if !done.contains(k) {
            out.push_str(&format!("{k}={}\n", env_value(v)));
        }
    }
    out
}

/// A value as an env-file line holds it: plain when that reads back the same, else quoted.
fn env_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@,+=%".contains(c));
    if plain || v.is_empty() {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', ""))
    }
}

/// One `SECRET_<NAME>_VERSION=<v>` line of an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// The compose secret name (`<name>` lowercased).
    pub name: String,
    pub version: String,
    /// False when the line's comment says `generate=false`.
    pub generate: bool,
}

pub fn secret_versions(env_text: &str) -> Vec<SecretVersion> {
    env_text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (key, rest) = line.split_once('=')?;
            let name = key
                .trim()
                .strip_prefix("SECRET_")?
                .strip_suffix("_VERSION")?;
            let (value, comment) = rest.split_once('#').unwrap_or((rest, ""));
            let version = value.trim().trim_matches(['"', '\'']).to_owned();
            if name.is_empty() || version.is_empty() {
                return None;
            }
            Some(SecretVersion {
                name: name.to_ascii_lowercase(),
                version,
                generate: !comment.replace(' ', "").contains("generate=false"),
            })
        })
        .collect()
}

async fn read_env_text(target: &DeployTarget) -> Result<String, DeployError> {
    tokio::fs::read_to_string(&target.env_file)
        .await
        .map_err(|source| DeployError::EnvFile {
            app: target.app.clone(),
            path: target.env_file.clone(),
            source,
        })
}

/// The app's env file: its text and its keys.
async fn read_env(
    target: &DeployTarget,
) -> Result<(String, BTreeMap<String, String>), DeployError> {
    let text = read_env_text(target).await?;
    let env = parse_env(&text).map_err(|(line, why)| DeployError::EnvSyntax {
        app: target.app.clone(),
        path: target.env_file.clone(),
        line,
        why,
    })?;
    Ok((text, env))
}

/// The service names the app's compose files (its `COMPOSE_FILE`, in the checkout) declare.
async fn declared_services(target: &DeployTarget) -> Result<BTreeSet<String>, DeployError> {
    let (_, env) = read_env(target).await?;
    let mut out = BTreeSet::new();
    for f in compose_files(&env) {
        let path = target.checkout.join(&f);
        out.extend(compose_services(&target.app, &path).await?);
    }
    Ok(out)
}

pub(super) async fn compose_services(app: &str, path: &Path) -> Result<Vec<String>, DeployError> {
    let text =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|_| DeployError::MissingComposeFile {
                app: app.to_owned(),
                path: path.to_owned(),
            })?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| DeployError::ComposeSyntax {
            app: app.to_owned(),
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    Ok(doc
        .get("services")
        .and_then(serde_yaml::Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fata_is_found_on_any_line_without_colours() {
        let out = "INFO starting\n\u{1b}[31mFATA\u{1b}[0m demo.example.org is not deployed?\r\n";
        assert_eq!(
            fata_line(out).as_deref(),
            Some("FATA demo.example.org is not deployed?")
        );
        assert_eq!(fata_line("WARN x\nINFO y"), None);
    }

    #[test]
    fn env_keys_replace_lines_or_are_appended() {
        let keys = BTreeMap::from([
            ("PORT".to_owned(), "18081".to_owned()),
            ("NEW".to_owned(), "a b".to_owned()),
        ]);
        assert_eq!(
            set_env_keys("TYPE=demo:1\n# PORT=1\nPORT=18080\n", &keys),
            "TYPE=demo:1\n# PORT=1\nPORT=18081\nNEW='a b'\n"
        );
    }

    #[test]
    fn secret_versions_read_names_and_generate_false() {
        let s = secret_versions(
            "TYPE=kc\nSECRET_DB_PASSWORD_VERSION=v1 # length=24\nSECRET_API_KEY_VERSION=v2 # generate=false\n",
        );
        assert_eq!(
            s,
            [
                SecretVersion {
                    name: "db_password".into(),
                    version: "v1".into(),
                    generate: true
                },
                SecretVersion {
                    name: "api_key".into(),
                    version: "v2".into(),
                    generate: false
                },
            ]
        );
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
