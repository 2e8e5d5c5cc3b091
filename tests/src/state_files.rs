//! Readers of what ci-warm leaves in its state dir, for the swarm scenarios' assertions.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `<state_dir>/<app>/state.json`.
pub fn app_state(state_dir: &Path, app: &str) -> Value {
    let path = state_dir.join(app).join("state.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every JSON file of `dir`, oldest name first (alerts and results are named by time); none
/// when the directory does not exist yet.
pub fn json_files(dir: &Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("dir entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
        })
        .collect()
}

/// The alerts ci-warm wrote and nobody acknowledged yet (`<state_dir>/alerts/*.json`).
pub fn alerts(state_dir: &Path) -> Vec<Value> {
    json_files(&state_dir.join("alerts"))
}
