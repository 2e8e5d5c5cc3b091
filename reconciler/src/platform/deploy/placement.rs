//! Keeping a stateful app on the node that holds its data (issue #18).
//!
//! Docker volumes are local to a node, and ci-warm snapshots the ones on its own node. A
//! stateful app is therefore deployed with every service constrained to that node
//! (`node.id==<id>`), through a compose override file ci-warm writes *outside* the recipe
//! checkout and adds as the last compose file of every deploy:
//!
//! * `stack`: one more `-c <override>` to `docker stack deploy`;
//! * `abra`: an entry in the app env file's `COMPOSE_FILE`, the only way abra takes compose files
//!   (abra-contract §1.2). The file stays outside the recipe tree because a non-chaos deploy
//!   refuses a tree with untracked files (§4.2); the entry is relative, as abra joins it to the
//!   recipe tree, and climbs to `/` first, so it names the same file from any recipe checkout
//!   (ci-warm's per-app tree or an operator's `~/.abra/recipes/<recipe>`).
//!
//! The constraint is in the spec swarm first sees, so no task is ever scheduled elsewhere; a
//! `docker service update --constraint-add` after the deploy would let the first task start on
//! an empty volume of another node, and the next deploy would drop it again.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::DeployError;

/// The override's file name; a `COMPOSE_FILE` entry ending in it is ci-warm's.
pub const OVERRIDE_NAME: &str = "ci-warm-placement.compose.yml";

/// Where a stateful app must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The swarm node id of ci-warm's own node.
    pub node_id: String,
    /// Its hostname, for messages.
    pub hostname: String,
    /// The override file (absolute, outside any recipe checkout).
    pub file: PathBuf,
}

impl Pin {
    pub fn constraint(&self) -> String {
        format!("node.id=={}", self.node_id)
    }
}

/// The override: every service listed, constrained to the node. Docker's compose loader
/// appends constraint lists of later files, so a recipe's own constraints still hold.
pub fn override_yaml(services: &BTreeSet<String>, pin: &Pin) -> String {
    let mut out = format!(
        "# Written by ci-warm on every deploy: this stateful app's data is on node {} ({}).\n\
         version: \"3.8\"\nservices:\n",
        pin.hostname, pin.node_id
    );
    for s in services {
        out.push_str(&format!(
            "  {s}:\n    deploy:\n      placement:\n        constraints:\n          - \"{}\"\n",
            pin.constraint()
        ));
    }
    out
}

/// Writes the override for these services (replacing any earlier one).
pub async fn write_override(
    app: &str,
    services: &BTreeSet<String>,
    pin: &Pin,
) -> Result<(), DeployError> {
    let io = |source| DeployError::Placement {
        app: app.to_owned(),
        path: pin.file.clone(),
        source,
    };
    if let Some(dir) = pin.file.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    // Replaced atomically: a run killed mid-write must not leave a torn override that the next
    // deploy (or an operator's manual abra deploy) reads.
    let (file, yaml) = (pin.file.clone(), override_yaml(services, pin));
    tokio::task::spawn_blocking(move || {
        crate::platform::atomic::write(&file, yaml.as_bytes(), 0o644)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r.map_err(std::io::Error::other))
    .map_err(io)
}

/// `file` as a `COMPOSE_FILE` entry that abra resolves against `checkout`: `..` up to `/` (with
/// room to spare for a deeper recipe tree), then the absolute path.
pub fn compose_file_entry(checkout: &Path, file: &Path) -> String {
    let depth = checkout
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let up = "../".repeat(depth + 8);
    let rest = file.to_string_lossy();
    format!("{up}{}", rest.trim_start_matches('/'))
}

/// Whether a `COMPOSE_FILE` entry is ci-warm's override.
pub fn is_override_entry(entry: &str) -> bool {
    entry.ends_with(OVERRIDE_NAME)
}

/// The recipe's own compose files of a `COMPOSE_FILE` list (ci-warm's entry removed).
pub fn recipe_files(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| !is_override_entry(f))
        .cloned()
        .collect()
}

/// The `COMPOSE_FILE` value for the recipe's files plus, when pinned, the override entry.
pub fn compose_file_value(recipe: &[String], entry: Option<&str>) -> String {
    recipe
        .iter()
        .map(String::as_str)
        .chain(entry)
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> Pin {
        Pin {
            node_id: "abc123".into(),
            hostname: "ci1".into(),
            file: "/var/lib/ci-warm/kc/ci-warm-placement.compose.yml".into(),
        }
    }

    #[test]
    fn the_override_constrains_every_service() {
        let services = BTreeSet::from(["app".to_owned(), "db".to_owned()]);
        let y = override_yaml(&services, &pin());
        let doc: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        for s in ["app", "db"] {
            assert_eq!(
                doc["services"][s]["deploy"]["placement"]["constraints"][0],
                "node.id==abc123"
            );
        }
    }

    #[test]
    fn the_entry_climbs_out_of_any_checkout_to_the_same_file() {
        let p = pin();
        let e = compose_file_entry(
            Path::new("/var/lib/ci-warm/kc/abra/recipes/keycloak"),
            &p.file,
        );
        assert!(e.starts_with("../../../../../../../../../../../../../"));
        assert!(e.ends_with("var/lib/ci-warm/kc/ci-warm-placement.compose.yml"));
        assert!(is_override_entry(&e));
        // Resolved the way the OS (and Go's filepath.Join) does: `..` at `/` stays at `/`.
        for tree in [
            "/var/lib/ci-warm/kc/abra/recipes/keycloak",
            "/root/.abra/recipes/kc",
        ] {
            let mut stack: Vec<&str> = tree.split('/').filter(|c| !c.is_empty()).collect();
            for c in e.split('/') {
                match c {
                    ".." => {
                        stack.pop();
                    }
                    c => stack.push(c),
                }
            }
            assert_eq!(format!("/{}", stack.join("/")), p.file.to_string_lossy());
        }
    }

    #[test]
    fn compose_file_keeps_the_recipe_files_and_replaces_the_entry() {
        let files = vec![
            "compose.yml".to_owned(),
            "compose.smtp.yml".to_owned(),
            "../../old/ci-warm-placement.compose.yml".to_owned(),
        ];
        let recipe = recipe_files(&files);
        assert_eq!(recipe, ["compose.yml", "compose.smtp.yml"]);
        assert_eq!(
            compose_file_value(&recipe, Some("../x/ci-warm-placement.compose.yml")),
            "compose.yml:compose.smtp.yml:../x/ci-warm-placement.compose.yml"
        );
        assert_eq!(
            compose_file_value(&recipe, None),
            "compose.yml:compose.smtp.yml"
        );
    }
}
