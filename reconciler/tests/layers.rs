//! The folders of `src/` depend downward only (lib.rs says the order): a path into a folder
//! that a folder may not import fails here, naming the file and the path, before it becomes a
//! loop that nobody can untangle.

use std::collections::BTreeMap;
use std::path::Path;

/// Each folder and the folders it may import (besides itself).
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("platform", &[]),
    ("upgrade", &["platform"]),
    ("config", &["upgrade", "platform"]),
    ("live", &["config", "upgrade", "platform"]),
    ("canonical", &["live", "config", "upgrade", "platform"]),
    ("ops", &["live", "config", "upgrade", "platform"]),
    ("ci", &["config", "upgrade", "platform"]),
    (
        "cmd",
        &[
            "canonical",
            "ops",
            "ci",
            "live",
            "config",
            "upgrade",
            "platform",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module names a source text reaches through `crate::`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

#[test]
fn folders_import_only_the_folders_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rules: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    let mut wrong = Vec::new();
    for (folder, allowed) in &rules {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "src/{folder} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for target in crate_paths(&text) {
                if target != *folder && !allowed.contains(&target.as_str()) {
                    wrong.push(format!(
                        "{} uses crate::{target}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_folder_is_in_the_layering_and_the_top_level_stays_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            assert!(
                MAY_IMPORT.iter().any(|(f, _)| *f == name),
                "src/{name}/ is not in the layering of tests/layers.rs"
            );
        }
        entries.push(name);
    }
    assert!(
        entries.len() <= 11,
        "src/ has {} entries: {entries:?}",
        entries.len()
    );
}

#[test]
fn the_layering_check_sees_a_wrong_import() {
    assert_eq!(
        crate_paths("use crate::ops::status;\nlet x = crate::platform::exit::OK;"),
        ["ops", "platform"]
    );
}
