//! `abra app secret generate|ls`: swarm secrets `<stack>_<name>_<version>` for the compose
//! secrets, versions from `SECRET_<NAME>_VERSION` (contract §3). Values go to `docker secret
//! create` on stdin and are never printed (unless a switch asks for abra's value table).

use std::io::Read;

use anyhow::{Context, bail};

use super::Ctx;
use super::compose;
use super::engine;
use super::envfile;
use super::layout::{self, App};

/// One compose secret of an app, as abra names it on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSecret {
    /// The compose key, e.g. `db_password`.
    pub name: String,
    pub version: String,
    /// `<stack>_<name>_<version>`.
    pub server_name: String,
    /// False for `# generate=false` (inserted by hand, e.g. a certificate).
    pub generate: bool,
    pub length: usize,
}

/// The app env plus what abra adds for compose: `STACK_NAME`.
pub fn compose_env(app: &App) -> std::collections::BTreeMap<String, String> {
    let mut env = app.env.clone();
    env.insert("STACK_NAME".into(), app.stack.clone());
    env
}

/// The app's compose secrets (from the recipe tree as it is now) with their versions.
pub fn app_secrets(ctx: &Ctx, app: &App) -> anyhow::Result<Vec<AppSecret>> {
    let dir = layout::recipe_dir(&ctx.root, &app.recipe);
    let env = compose_env(app);
    let c = compose::load(&dir, &compose::files(&env), &env)?;
    let text = std::fs::read_to_string(&app.env_path)
        .with_context(|| format!("reading {}", app.env_path.display()))?;
    let mut out = Vec::new();
    for s in c.secrets {
        let key = format!("SECRET_{}_VERSION", s.key.to_uppercase());
        let Some(version) = app.env.get(&key).filter(|v| !v.is_empty()) else {
            bail!("{key} missing from {}.env", app.domain);
        };
        let m = envfile::modifiers(&text, &key);
        let length = match m.get("length") {
            Some(l) => l
                .parse()
                .with_context(|| format!("{key}: length={l} is not a number"))?,
            None => 32,
        };
        out.push(AppSecret {
            server_name: format!("{}_{}_{version}", app.stack, s.key),
            name: s.key,
            version: version.clone(),
            generate: m.get("generate").is_none_or(|g| g != "false"),
            length,
        });
    }
    Ok(out)
}

fn random_value(length: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = vec![0u8; length];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// Creates the secrets; the first that exists already ends it with docker's AlreadyExists
/// error (§3 REPORTED; secrets before it stay created).
pub fn generate(ctx: &Ctx, app: &App, wanted: &[AppSecret], machine: bool) -> anyhow::Result<()> {
    let mut made: Vec<(&AppSecret, String)> = Vec::new();
    for s in wanted {
        let value = random_value(s.length)?;
        ctx.out.debug(&format!(
            "creating secret {} (length {})",
            s.server_name, s.length
        ));
        engine::secret_create(&s.server_name, &value)?;
        made.push((s, value));
    }
    if machine {
        let rows: Vec<serde_json::Value> = made
            .iter()
            .map(|(s, _)| {
                serde_json::json!({"name": s.name, "version": s.version, "server_name": s.server_name})
            })
            .collect();
        ctx.out.print(&serde_json::Value::Array(rows).to_string());
    } else {
        ctx.out.print("NAME\tVALUE");
        for (s, v) in &made {
            let shown = if ctx.sw.print_secret_values {
                v.as_str()
            } else {
                "(not shown by abra-sim)"
            };
            ctx.out.print(&format!("{}\t{shown}", s.name));
        }
    }
    ctx.out.info(&format!(
        "{} secret(s) generated for {}",
        made.len(),
        app.domain
    ));
    Ok(())
}

/// `abra app secret generate <domain> (--all | <name> <version>) [-m]`.
pub fn cmd_generate(
    ctx: &Ctx,
    domain: &str,
    all: bool,
    name: Option<&str>,
    version: Option<&str>,
    machine: bool,
) -> anyhow::Result<()> {
    let app = App::find(&ctx.root, domain, &ctx.sw)?;
    let secrets = app_secrets(ctx, &app)?;
    let wanted: Vec<AppSecret> = match (all, name) {
        (true, None) => secrets.into_iter().filter(|s| s.generate).collect(),
        (false, Some(n)) => {
            let Some(v) = version else {
                bail!("missing arguments <secret> <version> or '--all'");
            };
            let Some(s) = secrets.into_iter().find(|s| s.name == n) else {
                bail!("{n} doesn't exist in the env config?");
            };
            vec![AppSecret {
                version: v.to_owned(),
                server_name: format!("{}_{n}_{v}", app.stack),
                ..s
            }]
        }
        (true, Some(_)) => bail!("cannot use '<secret> <version>' and '--all' together"),
        (false, None) => bail!("missing arguments <secret> <version> or '--all'"),
    };
    generate(ctx, &app, &wanted, machine)
}

/// `abra app secret ls <domain> [-m]`: every compose secret, its version and whether it
/// exists on the server.
pub fn cmd_ls(ctx: &Ctx, domain: &str, machine: bool) -> anyhow::Result<()> {
    let app = App::find(&ctx.root, domain, &ctx.sw)?;
    let existing = engine::secret_names()?;
    let rows: Vec<(AppSecret, bool)> = app_secrets(ctx, &app)?
        .into_iter()
        .map(|s| {
            let there = existing.contains(&s.server_name);
            (s, there)
        })
        .collect();
    if machine {
        let j: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, there)| serde_json::json!({"name": s.name, "version": s.version, "generated-on-server": there, "created-on-server": there, "server_name": s.server_name}))
            .collect();
        ctx.out.print(&serde_json::Value::Array(j).to_string());
    } else {
        ctx.out
            .print("SECRET NAME\tVERSION\tGENERATED NAME\tCREATED ON SERVER");
        for (s, there) in rows {
            ctx.out.print(&format!(
                "{}\t{}\t{}\t{there}",
                s.name, s.version, s.server_name
            ));
        }
    }
    Ok(())
}
