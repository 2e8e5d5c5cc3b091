//! The app env file: reading it (the reconciler's own abra `.env` parser), rewriting single
//! keys in place (`TYPE=<recipe>:<version>`, `DOMAIN`), and the `# key=value` modifiers on a
//! `SECRET_<NAME>_VERSION` line (contract §1.2).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow};

pub fn read(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ci_warm::platform::deploy::stack::parse_env(&text)
        .map_err(|(line, why)| anyhow!("{} line {line}: {why}", path.display()))
}

fn key_of(line: &str) -> Option<&str> {
    let l = line.trim_start();
    if l.starts_with('#') {
        return None;
    }
    let l = l.strip_prefix("export ").unwrap_or(l);
    l.split_once('=').map(|(k, _)| k.trim())
}

/// The text with the first line whose key is one of `keys` set to `<that key>=<value>`
/// (an inline ` # comment` kept); appended as `<keys[0]>=<value>` when none is there.
pub fn set_key(text: &str, keys: &[&str], value: &str) -> String {
    let mut done = false;
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        match key_of(line) {
            Some(k) if !done && keys.contains(&k) => {
                let comment = line
                    .split_once('=')
                    .and_then(|(_, v)| v.find(" #").map(|i| v[i..].to_owned()))
                    .unwrap_or_default();
                out.push(format!("{k}={value}{comment}"));
                done = true;
            }
            _ => out.push(line.to_owned()),
        }
    }
    if !done {
        out.push(format!("{}={value}", keys[0]));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("env.abra-sim-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// Rewrites the `TYPE` (or `RECIPE`) line to `<recipe>:<version>` (§1.2 version pinning).
pub fn write_version(path: &Path, recipe: &str, version: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    write(
        path,
        &set_key(&text, &["TYPE", "RECIPE"], &format!("{recipe}:{version}")),
    )
}

/// The `name=value` words of the comment on the line of `key`, e.g. `length=32`,
/// `generate=false` (INFERRED: where abra reads them).
pub fn modifiers(text: &str, key: &str) -> BTreeMap<String, String> {
    text.lines()
        .find(|l| key_of(l) == Some(key))
        .and_then(|l| l.split_once(" #").map(|(_, c)| c.to_owned()))
        .map(|c| {
            c.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keys_in_place_and_reads_modifiers() {
        let t = "# c\nTYPE=demo\nSECRET_DB_VERSION=v1 # length=12 generate=false\n";
        let t2 = set_key(t, &["TYPE", "RECIPE"], "demo:1.0.0+1.0.0");
        assert_eq!(
            t2,
            "# c\nTYPE=demo:1.0.0+1.0.0\nSECRET_DB_VERSION=v1 # length=12 generate=false\n"
        );
        let t3 = set_key("RECIPE=demo # r\n", &["TYPE", "RECIPE"], "demo:x");
        assert_eq!(t3, "RECIPE=demo:x # r\n");
        assert_eq!(set_key("A=1", &["TYPE"], "d:1"), "A=1\nTYPE=d:1\n");
        let m = modifiers(t, "SECRET_DB_VERSION");
        assert_eq!(m["length"], "12");
        assert_eq!(m["generate"], "false");
        assert!(modifiers(t, "TYPE").is_empty());
    }
}
