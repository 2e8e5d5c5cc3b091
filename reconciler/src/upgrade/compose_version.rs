//! The version a recipe checkout declares: its compose file's `coop-cloud.<stack>.version` label
//! (`- "coop-cloud.${STACK_NAME}.version=1.2.0+1.0.0"` in every Co-op Cloud recipe).
//!
//! Read line by line rather than through a YAML parser: the label is always one scalar on one
//! line, in either the list form (`- "key=value"`) or the map form (`key: value`), and a line
//! reader needs no YAML dependency that interpolation syntax (`${STACK_NAME}`) could trip up.
//! `chaos-version` labels and commented-out lines are ignored; two different versions in one
//! file are an error, since nothing says which one the recipe means.

use std::io;
use std::path::{Path, PathBuf};

use crate::upgrade::version::{Version, VersionError};

#[derive(Debug, thiserror::Error)]
pub enum ComposeVersionError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no coop-cloud.<stack>.version label")]
    Missing { path: PathBuf },
    #[error("{path} line {line}: the coop-cloud version label is not a recipe version: {source}")]
    Invalid {
        path: PathBuf,
        line: usize,
        #[source]
        source: VersionError,
    },
    #[error("{path} declares two different versions ({first} and {second}); keep one label")]
    Conflict {
        path: PathBuf,
        first: Version,
        second: Version,
    },
}

/// The version label of the compose file at `path`.
pub fn read_file(path: &Path) -> Result<Version, ComposeVersionError> {
    let text = std::fs::read_to_string(path).map_err(|source| ComposeVersionError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)?.ok_or_else(|| ComposeVersionError::Missing {
        path: path.to_owned(),
    })
}

/// The version label of a recipe checkout: its `compose.yml`.
pub fn read_checkout(dir: &Path) -> Result<Version, ComposeVersionError> {
    read_file(&dir.join("compose.yml"))
}

/// The version label in `text` (`path` is only used in messages); `None` when there is none.
pub fn parse(path: &Path, text: &str) -> Result<Option<Version>, ComposeVersionError> {
    let mut found: Option<Version> = None;
    for (idx, line) in text.lines().enumerate() {
        let Some(raw) = label_value(line) else {
            continue;
        };
        let version: Version = raw.parse().map_err(|source| ComposeVersionError::Invalid {
            path: path.to_owned(),
            line: idx + 1,
            source,
        })?;
        match &found {
            Some(first) if *first != version => {
                return Err(ComposeVersionError::Conflict {
                    path: path.to_owned(),
                    first: first.clone(),
                    second: version,
                });
            }
            _ => found = Some(version),
        }
    }
    Ok(found)
}

/// The raw value of a `coop-cloud.<x>.version` label on this line, if it carries one.
fn label_value(line: &str) -> Option<&str> {
    let mut s = line.trim();
    if s.starts_with('#') {
        return None;
    }
    if let Some(rest) = s.strip_prefix('-') {
        s = rest.trim_start();
    }
    let (key, value) = if let Some(q) = s.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let end = s[1..].find(q)? + 1;
        let inner = &s[1..end];
        let after = s[end + 1..].trim_start();
        match after.strip_prefix(':') {
            // `"key": value`
            Some(v) => (inner, v),
            // `"key=value"`
            None => inner.split_once('=')?,
        }
    } else if let Some((k, v)) = s.split_once('=').filter(|(k, _)| !k.contains(':')) {
        (k, v)
    } else {
        let (k, v) = s.split_once(':')?;
        (k, v)
    };
    let key = key.trim();
    let stack = key.strip_prefix("coop-cloud.")?.strip_suffix(".version")?;
    if stack.is_empty() || stack.contains(char::is_whitespace) {
        return None;
    }
    let value = strip_comment(value.trim());
    let value = value
        .strip_prefix(['"', '\''])
        .and_then(|v| v.strip_suffix(['"', '\'']))
        .unwrap_or(value)
        .trim();
    (!value.is_empty()).then_some(value)
}

/// Drops a trailing ` # comment` (YAML needs the space before `#`).
fn strip_comment(value: &str) -> &str {
    match value.find(" #") {
        Some(i) => value[..i].trim_end(),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Option<Version>, ComposeVersionError> {
        parse(Path::new("compose.yml"), text)
    }

    #[test]
    fn reads_every_spelling_of_the_label() {
        let cases = [
            "      - \"coop-cloud.${STACK_NAME}.version=1.2.0+1.0.0\"",
            "      - 'coop-cloud.${STACK_NAME}.version=1.2.0+1.0.0'",
            "      - coop-cloud.${STACK_NAME}.version=1.2.0+1.0.0",
            "        coop-cloud.${STACK_NAME}.version: 1.2.0+1.0.0",
            "        coop-cloud.${STACK_NAME}.version: \"1.2.0+1.0.0\" # bumped by abra",
            "        \"coop-cloud.${STACK_NAME}.version\": '1.2.0+1.0.0'",
            "      - \"coop-cloud.demo_ci_org.version=1.2.0+1.0.0\"",
        ];
        for line in cases {
            let text = format!("services:\n  app:\n    deploy:\n      labels:\n{line}\n");
            assert_eq!(
                p(&text).unwrap(),
                Some("1.2.0+1.0.0".parse().unwrap()),
                "{line}"
            );
        }
    }

    #[test]
    fn ignores_comments_chaos_and_other_labels() {
        let text = "\
services:
  app:
    deploy:
      labels:
        # - \"coop-cloud.${STACK_NAME}.version=9.9.9+9\"
        - \"coop-cloud.${STACK_NAME}.chaos-version=abcdef1\"
        - \"traefik.enable=true\"
        - \"coop-cloud.${STACK_NAME}.timeout=120\"
";
        assert_eq!(p(text).unwrap(), None);
        let text = format!("{text}        - \"coop-cloud.${{STACK_NAME}}.version=2.0.0+1\"\n");
        assert_eq!(p(&text).unwrap(), Some("2.0.0+1".parse().unwrap()));
    }

    #[test]
    fn conflicting_or_invalid_labels_are_errors() {
        let two = "- coop-cloud.a.version=1.0.0+1\n- coop-cloud.b.version=1.1.0+1\n";
        let e = p(two).unwrap_err().to_string();
        assert!(e.contains("1.0.0+1") && e.contains("1.1.0+1"), "{e}");
        let same = "- coop-cloud.a.version=1.0.0+1\n- coop-cloud.b.version=1.0.0+1\n";
        assert_eq!(p(same).unwrap(), Some("1.0.0+1".parse().unwrap()));
        let bad = "services:\n  - coop-cloud.a.version=1.0+1\n";
        let e = p(bad).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("exactly three"), "{e}");
    }

    #[test]
    fn files_and_checkouts() {
        let d = tempfile::tempdir().unwrap();
        let e = read_checkout(d.path()).unwrap_err().to_string();
        assert!(e.contains("compose.yml"), "{e}");
        std::fs::write(d.path().join("compose.yml"), "services: {}\n").unwrap();
        let e = read_checkout(d.path()).unwrap_err().to_string();
        assert!(e.contains("no coop-cloud.<stack>.version label"), "{e}");
        std::fs::write(
            d.path().join("compose.yml"),
            "- \"coop-cloud.${STACK_NAME}.version=3.0.0+2\"\n",
        )
        .unwrap();
        assert_eq!(read_checkout(d.path()).unwrap().to_string(), "3.0.0+2");
    }
}
