//! The `previous/` overlay guard. A recipe's test folder may hold `previous/` with the minimal
//! config needed to deploy the *previous* version (typically `compose.previous.yml`), e.g. an
//! env var the old release still required. It declares the version it was written for, through
//! a `coop-cloud.<stack>.version` label in its compose files or a one-line `previous/version`
//! file; when the resolved base is a different version the overlay is stale and layering it
//! would deploy a base nobody tested, so the guard says so instead.
//!
//! Only the base deploy ever gets the overlay: [`Overlay::head_compose_file`] is the caller's
//! list with every `previous/` entry removed, whatever the status.

use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::ci::base::same_version;
use crate::upgrade::compose_version::{self, ComposeVersionError};
use crate::upgrade::version::{Version, VersionError};

/// The marker file a `previous/` without a version label declares its version in.
pub const MARKER: &str = "version";
pub const DIR: &str = "previous";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `previous/` targets the base version: layer `files` onto the base deploy.
    Apply,
    /// `previous/` targets another version: do not layer it; it should be removed.
    Stale,
    /// There is no `previous/`.
    None,
}

/// The guard's answer; its JSON shape is documented in docs/cli.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    pub status: Status,
    pub base: Version,
    /// The version `previous/` declares (`null` when there is no `previous/`).
    pub targets: Option<Version>,
    pub reason: String,
    /// The overlay's compose files as `COMPOSE_FILE` entries; empty unless `apply`.
    pub files: Vec<String>,
    /// `COMPOSE_FILE` for the base deploy: the caller's entries, then `files`.
    pub base_compose_file: String,
    /// `COMPOSE_FILE` for the head deploy: the caller's entries, never a `previous/` file.
    pub head_compose_file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviousError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{dir} declares no version: add a coop-cloud.${{STACK_NAME}}.version label to its compose \
         file or a one-line {dir}/{MARKER} file"
    )]
    Undeclared { dir: PathBuf },
    #[error("{dir} holds no compose*.yml file to layer onto the base deploy")]
    NoComposeFiles { dir: PathBuf },
    #[error("{path}: {source}")]
    BadMarker {
        path: PathBuf,
        #[source]
        source: VersionError,
    },
    #[error("{dir} declares two versions: {label} in its compose labels and {marker} in {MARKER}")]
    Conflict {
        dir: PathBuf,
        label: Version,
        marker: Version,
    },
    #[error(transparent)]
    Compose(#[from] ComposeVersionError),
}

/// Decides for `tests_dir/previous` against `base`. `compose_file` is the recipe's
/// `COMPOSE_FILE` entries (relative to `recipe_dir`), shared by both deploys.
pub fn guard(
    tests_dir: &Path,
    recipe_dir: &Path,
    base: &Version,
    compose_file: &[String],
) -> Result<Overlay, PreviousError> {
    let dir = tests_dir.join(DIR);
    let head: Vec<String> = compose_file
        .iter()
        .filter(|entry| {
            let inside = is_inside(&recipe_dir.join(entry), &dir);
            if inside {
                tracing::warn!(
                    entry = entry.as_str(),
                    "dropping a previous/ file from the head's COMPOSE_FILE"
                );
            }
            !inside
        })
        .cloned()
        .collect();
    let overlay = |status, targets, reason: String, files: Vec<String>| {
        let mut base_list = head.clone();
        base_list.extend(files.iter().cloned());
        Overlay {
            status,
            base: base.clone(),
            targets,
            reason,
            files,
            base_compose_file: base_list.join(":"),
            head_compose_file: head.join(":"),
        }
    };
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(PreviousError::Io {
                path: dir,
                source: io::Error::other("exists but is not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(overlay(
                Status::None,
                None,
                format!("no {} directory", dir.display()),
                Vec::new(),
            ));
        }
        Err(source) => return Err(PreviousError::Io { path: dir, source }),
    }
    let compose = compose_files(&dir)?;
    let targets = declared_version(&dir, &compose)?;
    if !same_version(&targets, base) {
        return Ok(overlay(
            Status::Stale,
            Some(targets.clone()),
            format!(
                "previous/ targets {targets}, base is {base} — remove it ({})",
                dir.display()
            ),
            Vec::new(),
        ));
    }
    if compose.is_empty() {
        return Err(PreviousError::NoComposeFiles { dir });
    }
    let files = compose.iter().map(|p| entry_for(p, recipe_dir)).collect();
    Ok(overlay(
        Status::Apply,
        Some(targets),
        format!("previous/ targets the base version {base}; layered onto the base deploy only"),
        files,
    ))
}

/// `compose*.yml` / `compose*.yaml` regular files directly in `dir`, sorted by name.
fn compose_files(dir: &Path) -> Result<Vec<PathBuf>, PreviousError> {
    let io_err = |source| PreviousError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let compose =
            name.starts_with("compose") && (name.ends_with(".yml") || name.ends_with(".yaml"));
        // A symlink could point anywhere, including at the head's own files.
        if compose && entry.file_type().map_err(io_err)?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn declared_version(dir: &Path, compose: &[PathBuf]) -> Result<Version, PreviousError> {
    let mut label: Option<Version> = None;
    for path in compose {
        let text = std::fs::read_to_string(path).map_err(|source| PreviousError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(v) = compose_version::parse(path, &text)? {
            match &label {
                Some(first) if *first != v => {
                    return Err(ComposeVersionError::Conflict {
                        path: dir.to_owned(),
                        first: first.clone(),
                        second: v,
                    }
                    .into());
                }
                _ => label = Some(v),
            }
        }
    }
    let marker_path = dir.join(MARKER);
    let marker = match std::fs::read_to_string(&marker_path) {
        Ok(text) => {
            Some(
                text.trim()
                    .parse::<Version>()
                    .map_err(|source| PreviousError::BadMarker {
                        path: marker_path.clone(),
                        source,
                    })?,
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(PreviousError::Io {
                path: marker_path,
                source,
            });
        }
    };
    match (label, marker) {
        (Some(l), Some(m)) if l != m => Err(PreviousError::Conflict {
            dir: dir.to_owned(),
            label: l,
            marker: m,
        }),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(PreviousError::Undeclared {
            dir: dir.to_owned(),
        }),
    }
}

/// A `COMPOSE_FILE` entry for `path`: relative to the recipe dir when it lies inside it (abra
/// resolves entries against the recipe dir), else absolute.
fn entry_for(path: &Path, recipe_dir: &Path) -> String {
    let path = normalize(&absolute(path));
    let recipe = normalize(&absolute(recipe_dir));
    match path.strip_prefix(&recipe) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

fn is_inside(path: &Path, dir: &Path) -> bool {
    let lexical = normalize(&absolute(path)).starts_with(normalize(&absolute(dir)));
    // Also through symlinks, when both exist.
    let real = match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    };
    lexical || real
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Removes `.` and resolves `..` without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    struct Recipe {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        tests: PathBuf,
    }

    fn recipe() -> Recipe {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("recipe");
        let tests = root.join("tests");
        std::fs::create_dir_all(&tests).unwrap();
        Recipe {
            _tmp: tmp,
            root,
            tests,
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    const PREV_COMPOSE: &str = "services:\n  app:\n    deploy:\n      labels:\n        - \"coop-cloud.${STACK_NAME}.version=1.1.0+1.0\"\n";

    #[test]
    fn apply_layers_onto_the_base_only() {
        let r = recipe();
        write(&r.tests.join("previous/compose.previous.yml"), PREV_COMPOSE);
        write(&r.tests.join("previous/README.md"), "why this exists\n");
        let o = guard(
            &r.tests,
            &r.root,
            &v("1.1.0+1.0"),
            &list(&["compose.yml", "compose.smtp.yml"]),
        )
        .unwrap();
        assert_eq!(o.status, Status::Apply);
        assert_eq!(o.targets, Some(v("1.1.0+1.0")));
        assert_eq!(o.files, ["tests/previous/compose.previous.yml"]);
        assert_eq!(
            o.base_compose_file,
            "compose.yml:compose.smtp.yml:tests/previous/compose.previous.yml"
        );
        assert_eq!(o.head_compose_file, "compose.yml:compose.smtp.yml");
    }

    #[test]
    fn marker_file_declares_the_version() {
        let r = recipe();
        write(
            &r.tests.join("previous/compose.previous.yml"),
            "services: {}\n",
        );
        write(&r.tests.join("previous/version"), "1.1.0+1.0\n");
        let o = guard(&r.tests, &r.root, &v("1.1.0+1.0"), &list(&["compose.yml"])).unwrap();
        assert_eq!(o.status, Status::Apply);
        let o = guard(&r.tests, &r.root, &v("1.2.0+1.0"), &list(&["compose.yml"])).unwrap();
        assert_eq!(o.status, Status::Stale);
        // Label and marker disagreeing is a mistake to fix, not a guess to make.
        write(&r.tests.join("previous/compose.x.yml"), PREV_COMPOSE);
        write(&r.tests.join("previous/version"), "1.0.0+1.0\n");
        let e = guard(&r.tests, &r.root, &v("1.1.0+1.0"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1.1.0+1.0") && e.contains("1.0.0+1.0"), "{e}");
        write(&r.tests.join("previous/version"), "one point one\n");
        let e = guard(&r.tests, &r.root, &v("1.1.0+1.0"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("previous/version"), "{e}");
    }

    #[test]
    fn stale_names_both_versions_and_layers_nothing() {
        let r = recipe();
        write(&r.tests.join("previous/compose.previous.yml"), PREV_COMPOSE);
        let o = guard(&r.tests, &r.root, &v("1.2.0+1.1"), &list(&["compose.yml"])).unwrap();
        assert_eq!(o.status, Status::Stale);
        assert!(o.files.is_empty());
        assert_eq!(o.base_compose_file, "compose.yml");
        assert_eq!(o.head_compose_file, "compose.yml");
        assert!(
            o.reason
                .starts_with("previous/ targets 1.1.0+1.0, base is 1.2.0+1.1 — remove it"),
            "{}",
            o.reason
        );
    }

    #[test]
    fn a_respelled_base_is_the_same_release() {
        let r = recipe();
        write(&r.tests.join("previous/compose.previous.yml"), PREV_COMPOSE);
        let o = guard(&r.tests, &r.root, &v("1.1.0+v1.0"), &list(&["compose.yml"])).unwrap();
        assert_eq!(o.status, Status::Apply, "{}", o.reason);
        assert_eq!(o.files, ["tests/previous/compose.previous.yml"]);
        let o = guard(
            &r.tests,
            &r.root,
            &v("1.1.0+1.0.1"),
            &list(&["compose.yml"]),
        )
        .unwrap();
        assert_eq!(o.status, Status::Stale, "{}", o.reason);
    }

    #[test]
    fn none_without_previous_dir() {
        let r = recipe();
        let o = guard(&r.tests, &r.root, &v("1.0.0+1"), &list(&["compose.yml"])).unwrap();
        assert_eq!(o.status, Status::None);
        assert_eq!(o.targets, None);
        assert!(o.files.is_empty());
        assert_eq!(o.base_compose_file, "compose.yml");
        assert_eq!(o.head_compose_file, "compose.yml");
    }

    #[test]
    fn head_list_never_holds_previous_files() {
        let r = recipe();
        write(&r.tests.join("previous/compose.previous.yml"), PREV_COMPOSE);
        let given = list(&[
            "compose.yml",
            "tests/previous/compose.previous.yml",
            "./tests/previous/../previous/compose.previous.yml",
            "compose.smtp.yml",
        ]);
        for base in ["1.1.0+1.0", "9.0.0+1"] {
            let o = guard(&r.tests, &r.root, &v(base), &given).unwrap();
            assert_eq!(
                o.head_compose_file, "compose.yml:compose.smtp.yml",
                "{base}"
            );
            let prev = o
                .base_compose_file
                .split(':')
                .filter(|e| e.contains("previous"))
                .count();
            assert_eq!(prev, usize::from(o.status == Status::Apply), "{base}");
        }
        std::fs::remove_dir_all(r.tests.join("previous")).unwrap();
        let o = guard(&r.tests, &r.root, &v("1.1.0+1.0"), &given).unwrap();
        assert_eq!(o.status, Status::None);
        assert_eq!(o.head_compose_file, "compose.yml:compose.smtp.yml");
    }

    #[test]
    fn undeclared_or_empty_previous_is_an_error() {
        let r = recipe();
        std::fs::create_dir_all(r.tests.join("previous")).unwrap();
        let e = guard(&r.tests, &r.root, &v("1.0.0+1"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("declares no version"), "{e}");
        write(&r.tests.join("previous/version"), "1.0.0+1\n");
        let e = guard(&r.tests, &r.root, &v("1.0.0+1"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no compose*.yml"), "{e}");
    }

    #[test]
    fn json_shape() {
        let r = recipe();
        let o = guard(&r.tests, &r.root, &v("1.0.0+1"), &list(&["compose.yml"])).unwrap();
        let j = serde_json::to_value(&o).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            [
                "base",
                "base_compose_file",
                "files",
                "head_compose_file",
                "reason",
                "status",
                "targets"
            ]
        );
        assert_eq!(j["status"], "none");
    }
}
