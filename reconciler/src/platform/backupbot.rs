//! backup-bot-two's exclusions, read from a recipe checkout's compose files (DESIGN.md,
//! "Snapshots"): `backupbot.backup.volumes.<volume>=false` on a service excludes that volume,
//! `backupbot.backup=false` on a service excludes the volumes only such services mount.
//!
//! Read from the compose files of the version being snapshotted, never from live services: a
//! snapshot runs after the undeploy, when there are none. The files are the ones the deployer
//! deploys: `COMPOSE_FILE` from the app's env file when it sets one, else `compose.yml`. Labels
//! are taken from a service's `deploy.labels` and `labels`, in either list (`- "k=v"`) or map
//! form; a later file's label overrides an earlier one's, as compose merges them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_yaml::Value;

use crate::platform::deploy::stack::{compose_files, parse_env};

const VOLUME_PREFIX: &str = "backupbot.backup.volumes.";
const BACKUP: &str = "backupbot.backup";

/// The compose names of the volumes the checkout's labels exclude from snapshots.
pub fn excluded_volumes(
    checkout: &Path,
    env_file: Option<&Path>,
) -> anyhow::Result<BTreeSet<String>> {
    let env = match env_file.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) if p.exists() => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading env file {}", p.display()))?;
            parse_env(&text).map_err(|(line, why)| {
                anyhow::anyhow!("env file {} line {line}: {why}", p.display())
            })?
        }
        _ => BTreeMap::new(),
    };
    // ci-warm's own placement override carries no backup-bot labels (and may not exist yet).
    let files: Vec<PathBuf> =
        crate::platform::deploy::placement::recipe_files(&compose_files(&env))
            .iter()
            .map(|f| checkout.join(f))
            .collect();
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| {
            format!("reading compose file {} for backup-bot labels", f.display())
        })?;
        texts.push((f.clone(), text));
    }
    excluded_in(&texts)
}

#[derive(Default)]
struct Service {
    labels: BTreeMap<String, String>,
    volumes: BTreeSet<String>,
}

/// The exclusions declared by compose `texts` (path for messages, contents), merged in order.
pub fn excluded_in(texts: &[(PathBuf, String)]) -> anyhow::Result<BTreeSet<String>> {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for (path, text) in texts {
        let doc: Value = serde_yaml::from_str(text)
            .with_context(|| format!("parsing compose file {}", path.display()))?;
        let Some(map) = doc.get("services").and_then(Value::as_mapping) else {
            continue;
        };
        for (name, svc) in map {
            let Some(name) = name.as_str() else { continue };
            let entry = services.entry(name.to_owned()).or_default();
            for labels in [
                svc.get("labels"),
                svc.get("deploy").and_then(|d| d.get("labels")),
            ]
            .into_iter()
            .flatten()
            {
                entry.labels.extend(labels_of(labels));
            }
            if let Some(vols) = svc.get("volumes").and_then(Value::as_sequence) {
                entry.volumes.extend(vols.iter().filter_map(named_volume));
            }
        }
    }
    let is_false = |v: &str| v.trim().eq_ignore_ascii_case("false");
    let mut out: BTreeSet<String> = services
        .values()
        .flat_map(|s| s.labels.iter())
        .filter(|(_, v)| is_false(v))
        .filter_map(|(k, _)| k.strip_prefix(VOLUME_PREFIX).map(str::to_owned))
        .collect();
    let mounted: BTreeSet<&String> = services.values().flat_map(|s| &s.volumes).collect();
    for vol in mounted {
        let users: Vec<&Service> = services
            .values()
            .filter(|s| s.volumes.contains(vol))
            .collect();
        if users
            .iter()
            .all(|s| s.labels.get(BACKUP).is_some_and(|v| is_false(v)))
        {
            out.insert(vol.clone());
        }
    }
    Ok(out)
}

fn labels_of(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
        Value::Mapping(m) => m
            .iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((k.as_str()?.to_owned(), value))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The compose name of a named volume mount (`data:/var/lib/x[:ro]` or `{type: volume, source:
/// data}`); bind mounts and anonymous volumes are not volumes of the stack.
fn named_volume(v: &Value) -> Option<String> {
    let source = match v {
        Value::String(s) => {
            let (src, _) = s.split_once(':')?;
            src.to_owned()
        }
        Value::Mapping(_) => {
            if v.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "volume")
            {
                return None;
            }
            v.get("source").and_then(Value::as_str)?.to_owned()
        }
        _ => return None,
    };
    let bind = source.is_empty() || source.starts_with(['/', '.', '~', '$']);
    (!bind).then_some(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(files: &[&str]) -> Vec<String> {
        let texts: Vec<(PathBuf, String)> = files
            .iter()
            .enumerate()
            .map(|(i, t)| (PathBuf::from(format!("compose{i}.yml")), (*t).to_owned()))
            .collect();
        excluded_in(&texts).unwrap().into_iter().collect()
    }

    #[test]
    fn volume_labels_and_service_opt_outs() {
        let base = r#"
version: "3.8"
services:
  app:
    image: x
    volumes:
      - data:/data
      - cache:/cache:rw
      - ./conf:/etc/conf
    deploy:
      labels:
        - "coop-cloud.${STACK_NAME}.version=1.0.0+1"
        - "backupbot.backup=true"
        - "backupbot.backup.volumes.cache=false"
  worker:
    image: y
    labels:
      backupbot.backup: false
    volumes:
      - type: volume
        source: scratch
        target: /s
      - type: bind
        source: /srv
        target: /srv
volumes:
  data:
  cache:
  scratch:
"#;
        assert_eq!(excluded(&[base]), ["cache", "scratch"]);
        // A later file re-includes the cache (labels merge, later wins) and shares scratch
        // with a service that is backed up.
        let overlay = r#"
services:
  app:
    volumes:
      - scratch:/scratch
    deploy:
      labels:
        backupbot.backup.volumes.cache: "true"
"#;
        assert_eq!(excluded(&[base, overlay]), Vec::<String>::new());
        assert!(excluded_in(&[(PathBuf::from("x.yml"), "services: [".into())]).is_err());
    }

    #[test]
    fn reads_compose_file_from_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yml"),
            "services:\n  app:\n    volumes: [\"data:/d\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("compose.nocache.yml"),
            "services:\n  app:\n    deploy:\n      labels: [\"backupbot.backup.volumes.data=false\"]\n",
        )
        .unwrap();
        let env = dir.path().join("app.env");
        std::fs::write(&env, "COMPOSE_FILE=compose.yml:compose.nocache.yml\n").unwrap();
        assert_eq!(
            excluded_volumes(dir.path(), Some(&env)).unwrap(),
            BTreeSet::from(["data".to_owned()])
        );
        // No env file: compose.yml alone.
        assert!(excluded_volumes(dir.path(), None).unwrap().is_empty());
        // A compose file COMPOSE_FILE names but the checkout lacks is an error, not "no
        // exclusions".
        std::fs::write(&env, "COMPOSE_FILE=compose.yml:missing.yml\n").unwrap();
        let e = excluded_volumes(dir.path(), Some(&env)).unwrap_err();
        assert!(format!("{e:#}").contains("missing.yml"), "{e:#}");
    }
}
