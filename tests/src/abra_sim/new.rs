//! `abra app new <recipe> [version] -s <server> -D <domain> [-S] [-C] [-o] [-n]` (contract §2).

use anyhow::{Context, bail};

use super::Ctx;
use super::compose;
use super::ensure::{Ensure, ensure};
use super::envfile;
use super::layout::{self, App};
use super::secrets;
use super::switches::NewValidation;

pub struct NewArgs<'a> {
    pub recipe: &'a str,
    pub version: Option<&'a str>,
    pub server: Option<&'a str>,
    pub domain: Option<&'a str>,
    pub secrets: bool,
    pub chaos: bool,
    pub offline: bool,
    pub machine: bool,
}

pub fn cmd_new(ctx: &Ctx, a: &NewArgs<'_>) -> anyhow::Result<()> {
    let Some(server) = a.server else {
        bail!("--server/-s is required without a prompt");
    };
    let Some(domain) = a.domain else {
        bail!("--domain/-D is required without a prompt");
    };
    let server_dir = ctx.root.join("servers").join(server);
    if !server_dir.is_dir() {
        bail!(
            "server {server} doesn't exist? ({} is missing)",
            server_dir.display()
        );
    }
    let env_path = server_dir.join(format!("{domain}.env"));
    if env_path.exists() {
        bail!("{} already exists", env_path.display());
    }
    let dir = layout::recipe_dir(&ctx.root, a.recipe);
    let version = ensure(
        ctx,
        &Ensure {
            recipe: a.recipe,
            dir: &dir,
            chaos: a.chaos,
            offline: a.offline,
            explicit: a.version,
            pinned: None,
            lint: false,
        },
    )?;
    let sample_path = dir.join(".env.sample");
    let sample = std::fs::read_to_string(&sample_path)
        .with_context(|| format!("unable to read {}", sample_path.display()))?;
    let text = envfile::set_key(
        &sample,
        &["TYPE", "RECIPE"],
        &format!("{}:{version}", a.recipe),
    );
    let text = envfile::set_key(&text, &["DOMAIN"], domain);
    let env = ci_warm::platform::deploy::stack::parse_env(&text)
        .map_err(|(line, why)| anyhow::anyhow!(".env.sample line {line}: {why}"))?;
    // The literal files, before any interpolation: `${X}` as a duration fails here.
    match ctx.sw.new_validation {
        NewValidation::Durations => {
            compose::validate_literal_durations(&dir, &compose::files(&env))?;
        }
        NewValidation::Literal => compose::validate_literal(&dir, &compose::files(&env), &env)?,
        NewValidation::None => {}
    }
    envfile::write(&env_path, &text)?;
    ctx.out.info(&format!(
        "{domain} created ({}:{version} on server {server}, {})",
        a.recipe,
        env_path.display()
    ));
    if a.secrets {
        let app = App::load(server, env_path, domain, &ctx.sw)?;
        let all: Vec<_> = secrets::app_secrets(ctx, &app)?
            .into_iter()
            .filter(|s| s.generate)
            .collect();
        secrets::generate(ctx, &app, &all, a.machine)?;
    }
    Ok(())
}
