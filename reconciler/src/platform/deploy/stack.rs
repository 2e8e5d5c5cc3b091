//! The `stack` backend: `docker stack deploy` / `docker stack rm`, for hosts without abra and for
//! the test suite.
//!
//! It does what abra does for a deploy, minus abra's bookkeeping: the app's env file (and only
//! it; `.env.sample` defaults are not used) provides the variables the compose files interpolate,
//! `COMPOSE_FILE` picks the compose files, and `STACK_NAME`/`DOMAIN` are set as abra sets them.
//! Unlike abra it stamps no version label: the stack backend deploys exactly what the compose
//! files say, so the recipe's own `coop-cloud.${STACK_NAME}.version` label (which every Co-op
//! Cloud recipe carries) is what the health gate checks. For a chaos ref nothing stamps
//! `chaos-version`; a recipe checkout at a ref deploys the version label it contains.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::abra::compose_services;
use super::{
    DeployError, DeployTarget, Deployer, GoneWait, placement, run_command, wait_until_gone,
};
use crate::platform::docker::{BoxFuture, SwarmJanitor};
use std::sync::Arc;

/// The `docker stack` deployer.
pub struct StackDeployer {
    engine: Arc<dyn SwarmJanitor>,
    /// The docker CLI executable.
    pub docker_cli: PathBuf,
    pub gone: GoneWait,
    /// Deadline for one `docker stack deploy/rm` invocation.
    pub command_timeout: Duration,
    /// Cleared once the client rejected `--detach` (clients before 26.0 lack it and never wait).
    detach_flag: AtomicBool,
}

impl StackDeployer {
    pub fn new(engine: Arc<dyn SwarmJanitor>) -> Self {
        StackDeployer {
            engine,
            docker_cli: PathBuf::from("docker"),
            gone: GoneWait::default(),
            command_timeout: Duration::from_secs(300),
            detach_flag: AtomicBool::new(true),
        }
    }

    /// The argv (after the program) of `docker stack deploy` for these compose files.
    pub fn deploy_args(&self, compose_files: &[String], stack: &str, detach: bool) -> Vec<String> {
        let mut args: Vec<String> = ["stack", "deploy", "--prune"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if detach {
            args.push("--detach=true".to_owned());
        }
        // No registry lookups: the images a recipe names are pulled by the engine, and a digest
        // pinned at deploy time would differ from what abra deploys.
        args.extend(["--resolve-image", "never"].map(str::to_owned));
        for f in compose_files {
            args.push("-c".to_owned());
            args.push(f.clone());
        }
        args.push(stack.to_owned());
        args
    }

    async fn deploy_inner(&self, target: &DeployTarget) -> Result<(), DeployError> {
        if !target.checkout.is_dir() {
            return Err(DeployError::MissingCheckout {
                app: target.app.clone(),
                path: target.checkout.clone(),
            });
        }
        let env = read_env_file(&target.app, &target.env_file).await?;
        // A pin written into COMPOSE_FILE by hand (abra's way) is replaced by ours below.
        let mut files = placement::recipe_files(&compose_files(&env));
        for f in &files {
            let p = target.checkout.join(f);
            if !p.is_file() {
                return Err(DeployError::MissingComposeFile {
                    app: target.app.clone(),
                    path: p,
                });
            }
        }
        if let Some(pin) = &target.pin {
            let mut services = std::collections::BTreeSet::new();
            for f in &files {
                services.extend(compose_services(&target.app, &target.checkout.join(f)).await?);
            }
            placement::write_override(&target.app, &services, pin).await?;
            tracing::info!(app = %target.app, node = %pin.hostname, constraint = %pin.constraint(),
                "pinning the stateful app to ci-warm's node");
            files.push(pin.file.to_string_lossy().into_owned());
        }
        tracing::info!(app = %target.app, stack = %target.stack, revision = %target.revision,
            compose = ?files, "docker stack deploy");
        let mut detach = self.detach_flag.load(Ordering::Relaxed);
        loop {
            let args = self.deploy_args(&files, &target.stack, detach);
            let display = format!("{} {}", self.docker_cli.display(), args.join(" "));
            let mut cmd = tokio::process::Command::new(&self.docker_cli);
            cmd.args(&args).current_dir(&target.checkout);
            // Values go through the environment only: never argv, never logs.
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd.env("STACK_NAME", &target.stack)
                .env("DOMAIN", &target.domain);
            match run_command(cmd, display, "deploy", &target.app, self.command_timeout).await {
                Ok(out) => {
                    tracing::debug!(app = %target.app, output = %out.trim(), "stack deployed");
                    return Ok(());
                }
                Err(DeployError::Command { output, .. })
                    if detach && output.contains("unknown flag: --detach") =>
                {
                    tracing::info!("docker client has no --detach; deploying without it");
                    self.detach_flag.store(false, Ordering::Relaxed);
                    detach = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn undeploy_inner(&self, target: &DeployTarget) -> Result<(), DeployError> {
        tracing::info!(app = %target.app, stack = %target.stack, "docker stack rm");
        let args = ["stack", "rm", target.stack.as_str()];
        let display = format!("{} {}", self.docker_cli.display(), args.join(" "));
        let deadline =
            crate::platform::deadline::after_tokio(tokio::time::Instant::now(), self.gone.timeout);
        loop {
            let mut cmd = tokio::process::Command::new(&self.docker_cli);
            cmd.args(args);
            match run_command(
                cmd,
                display.clone(),
                "undeploy",
                &target.app,
                self.command_timeout,
            )
            .await
            {
                Ok(_) => break,
                // Undeploying what is not deployed is done already; the wait below confirms it.
                Err(DeployError::Command { output, .. })
                    if output.contains("Nothing found in stack") =>
                {
                    tracing::info!(app = %target.app, stack = %target.stack, "stack was not deployed");
                    break;
                }
                // The services are removed but the network is not: their tasks still hold it as
                // they stop ("in use by task"), or an earlier `stack rm` is removing it right now
                // ("not found"). Another `stack rm` settles it, or finds nothing left.
                Err(DeployError::Command { output, .. })
                    if output.contains("Failed to remove network")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!(app = %target.app, stack = %target.stack,
                        "the stack's network could not be removed yet; removing it again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        wait_until_gone(self.engine.as_ref(), &target.app, &target.stack, self.gone).await
    }
}

impl Deployer for StackDeployer {
    fn deploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(self.deploy_inner(target))
    }

    fn undeploy<'a>(&'a self, target: &'a DeployTarget) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(self.undeploy_inner(target))
    }
}

/// The compose files `COMPOSE_FILE` names (colon-separated), default `compose.yml`.
pub fn compose_files(env: &BTreeMap<String, String>) -> Vec<String> {
    let files: Vec<String> = env
        .get("COMPOSE_FILE")
        .map(|v| {
            v.split(':')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        vec!["compose.yml".to_owned()]
    } else {
        files
    }
}

async fn read_env_file(app: &str, path: &Path) -> Result<BTreeMap<String, String>, DeployError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| DeployError::EnvFile {
            app: app.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    parse_env(&text).map_err(|(line, why)| DeployError::EnvSyntax {
        app: app.to_owned(),
        path: path.to_owned(),
        line,
        why,
    })
}

/// Parses an abra `.env`: `KEY=VALUE` lines, `#` comment lines, optional `export `, values in
/// single quotes (literal) or double quotes (`\"`, `\\`, `\n` escapes), and unquoted values with
/// a trailing ` # comment` (abra writes `SECRET_X_VERSION=v1 # length=32`). On error, returns the
/// 1-based line and why; the offending value is never echoed (it may be a secret).
pub fn parse_env(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, "expected KEY=VALUE".to_owned()));
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((line_no, format!("{key:?} is not a valid variable name")));
        }
        let value = parse_value(value.trim_start())
            .map_err(|why| (line_no, format!("value of {key}: {why}")))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<String, &'static str> {
    let mut chars = v.chars();
    match chars.next() {
        Some('\'') => {
            let rest = chars.as_str();
            let end = rest.find('\'').ok_or("unterminated single quote")?;
            check_after_quote(&rest[end + 1..])?;
            Ok(rest[..end].to_owned())
        }
        Some('"') => {
            let mut out = String::new();
            let mut escaped = false;
            for (idx, c) in chars.as_str().char_indices() {
                if escaped {
                    out.push(match c {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    check_after_quote(&chars.as_str()[idx + 1..])?;
                    return Ok(out);
                } else {
                    out.push(c);
                }
            }
            Err("unterminated double quote")
        }
        _ => {
            // An inline comment needs whitespace before '#', so `a#b` stays a value.
            let cut = v
                .char_indices()
                .find(|&(i, c)| c == '#' && v[..i].ends_with([' ', '\t']))
                .map_or(v.len(), |(i, _)| i);
            Ok(v[..cut].trim_end().to_owned())
        }
    }
}

fn check_after_quote(rest: &str) -> Result<(), &'static str> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err("unexpected text after the closing quote")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_abra_env_files() {
        let env = parse_env(
            "# comment\n\
             TYPE=demo\n\
             DOMAIN=demo.example.org\n\
             \n\
             export LETS_ENCRYPT_ENV=production\n\
             SECRET_DB_VERSION=v1 # length=32\n\
             COMPOSE_FILE=\"compose.yml:compose.smtp.yml\"\n\
             SINGLE='a # b \\n'\n\
             DOUBLE=\"say \\\"hi\\\"\\n\" # trailing\n\
             HASH=a#b\n\
             EMPTY=\n\
             SPACED = value with spaces  \n",
        )
        .unwrap();
        assert_eq!(env["TYPE"], "demo");
        assert_eq!(env["LETS_ENCRYPT_ENV"], "production");
        assert_eq!(env["SECRET_DB_VERSION"], "v1");
        assert_eq!(env["COMPOSE_FILE"], "compose.yml:compose.smtp.yml");
        assert_eq!(env["SINGLE"], "a # b \\n");
        assert_eq!(env["DOUBLE"], "say \"hi\"\n");
        assert_eq!(env["HASH"], "a#b");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["SPACED"], "value with spaces");
        assert_eq!(
            compose_files(&env),
            ["compose.yml", "compose.smtp.yml"].map(String::from)
        );
    }

    #[test]
    fn env_errors_name_the_line_and_never_the_value() {
        let (line, why) = parse_env("A=1\nnot a pair\n").unwrap_err();
        assert_eq!((line, why.as_str()), (2, "expected KEY=VALUE"));
        let (line, why) = parse_env("A=1\nPASSWORD=\"hunter2\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(
            why.contains("PASSWORD") && why.contains("unterminated"),
            "{why}"
        );
        assert!(!why.contains("hunter2"));
        let (_, why) = parse_env("1A=x").unwrap_err();
        assert!(why.contains("not a valid variable name"));
        assert!(parse_env("A='x' y").is_err());
    }

    #[test]
    fn compose_file_defaults_to_compose_yml() {
        assert_eq!(compose_files(&BTreeMap::new()), ["compose.yml"]);
        let env = BTreeMap::from([("COMPOSE_FILE".to_owned(), " : ".to_owned())]);
        assert_eq!(compose_files(&env), ["compose.yml"]);
    }
}
