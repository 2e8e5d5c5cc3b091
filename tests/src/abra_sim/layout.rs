//! `$ABRA_DIR` (default `~/.abra`): `servers/<server>/<domain>.env` and
//! `recipes/<recipe>`; finding an app by its domain; the stack name (contract §1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::envfile;
use super::switches::Switches;

/// The root: `$ABRA_DIR`, else `~/.abra` (§1.1 CONFIRMED).
pub fn abra_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("ABRA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither ABRA_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".abra"))
}

pub fn recipe_dir(root: &Path, recipe: &str) -> PathBuf {
    root.join("recipes").join(recipe)
}

/// The server directories under `servers/` (the directory and its entries may be symlinks).
pub fn servers(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = root.join("servers");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let path = e.path();
        // fs::metadata follows symlinks.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            out.push((e.file_name().to_string_lossy().into_owned(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// The stack name: `STACK_NAME` from the env when the switch allows, else the domain with
/// `.` replaced by `_`, cut to the configured maximum (§1.3).
pub fn stack_name(domain: &str, env: &BTreeMap<String, String>, sw: &Switches) -> String {
    if sw.stack_name_from_env
        && let Some(s) = env.get("STACK_NAME").filter(|s| !s.is_empty())
    {
        return s.clone();
    }
    let mut s = domain.replace('.', "_");
    if sw.stack_name_max > 0 && s.len() > sw.stack_name_max {
        let mut cut = sw.stack_name_max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// One app, loaded from its env file.
#[derive(Debug, Clone)]
pub struct App {
    pub domain: String,
    pub server: String,
    pub env_path: PathBuf,
    pub env: BTreeMap<String, String>,
    pub recipe: String,
    /// The version pinned by `TYPE=<recipe>:<version>`, if any.
    pub pinned: Option<String>,
    pub stack: String,
}

/// `TYPE` (or `RECIPE`) split into recipe and pinned version.
pub fn recipe_of(env: &BTreeMap<String, String>) -> Option<(String, Option<String>)> {
    let t = env
        .get("TYPE")
        .or_else(|| env.get("RECIPE"))
        .filter(|t| !t.is_empty())?;
    Some(match t.split_once(':') {
        Some((r, v)) if !v.is_empty() => (r.to_owned(), Some(v.to_owned())),
        Some((r, _)) => (r.to_owned(), None),
        None => (t.clone(), None),
    })
}

impl App {
    pub fn load(
        server: &str,
        env_path: PathBuf,
        domain: &str,
        sw: &Switches,
    ) -> anyhow::Result<App> {
        let env = envfile::read(&env_path)?;
        let Some((recipe, pinned)) = recipe_of(&env) else {
            bail!("{} has no TYPE (or RECIPE) line", env_path.display());
        };
        let stack = stack_name(domain, &env, sw);
        Ok(App {
            domain: domain.to_owned(),
            server: server.to_owned(),
            env_path,
            env,
            recipe,
            pinned,
            stack,
        })
    }

    /// The app `domain`, from `servers/*/<domain>.env`.
    pub fn find(root: &Path, domain: &str, sw: &Switches) -> anyhow::Result<App> {
        for (server, dir) in servers(root)? {
            let p = dir.join(format!("{domain}.env"));
            if p.is_file() {
                return App::load(&server, p, domain, sw);
            }
        }
        bail!("cannot find app with name {domain}")
    }

    /// Every app of every server, in `servers/` order.
    pub fn all(root: &Path, sw: &Switches) -> anyhow::Result<Vec<App>> {
        let mut out = Vec::new();
        for (server, dir) in servers(root)? {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "env"))
                .collect();
            files.sort();
            for p in files {
                let domain = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push(App::load(&server, p, &domain, sw)?);
            }
        }
        Ok(out)
    }
}
