//! Validation of the names that end up in file paths, stack names and realm names.
//!
//! App and recipe names become directory names under the state dir, so anything that could
//! escape it (`..`, `/`, a leading dot) is refused before it reaches the filesystem.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {what} name {}: {why}", crate::platform::text::quoted(.name))]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
    pub why: &'static str,
}

/// Longest name accepted; keeps derived paths and stack names well inside system limits.
const MAX_LEN: usize = 64;

/// Checks an app or recipe name: `[a-z0-9][a-z0-9._-]*`, no `..`, at most 64 bytes.
pub fn check(what: &'static str, name: &str) -> Result<(), NameError> {
    let err = |why| {
        Err(NameError {
            what,
            name: name.to_owned(),
            why,
        })
    };
    let Some(first) = name.bytes().next() else {
        return err("must not be empty");
    };
    if name.len() > MAX_LEN {
        return err("must be at most 64 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return err("must start with a lowercase letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return err("may only contain a-z, 0-9, '.', '_' and '-'");
    }
    if name.contains("..") {
        return err("must not contain '..'");
    }
    Ok(())
}

/// Names an app may not take: app directories sit beside ci-warm's own files and directories
/// in the state dir, and `host` is the `app` of host-wide alerts (`disk-low`).
pub const RESERVED_APP_NAMES: &[&str] = &[
    "alerts",
    "results",
    "host",
    "registry.json",
    "registry.lock",
    "promotions.jsonl",
    "metrics.lock",
    "disk.lock",
    "disk.json",
];

/// Checks an app name: [`check`], and none of [`RESERVED_APP_NAMES`].
pub fn check_app(name: &str) -> Result<(), NameError> {
    check("app", name)?;
    if RESERVED_APP_NAMES.contains(&name) {
        return Err(NameError {
            what: "app",
            name: name.to_owned(),
            why: "is reserved for ci-warm's own files in the state dir",
        });
    }
    Ok(())
}

/// Checks a Docker stack name: swarm accepts `[a-zA-Z0-9][a-zA-Z0-9_-]*`, and abra truncates
/// to 45 characters; we refuse rather than silently truncate so two apps never collide.
pub fn check_stack(name: &str) -> Result<(), NameError> {
    let err = |why| {
        Err(NameError {
            what: "stack",
            name: name.to_owned(),
            why,
        })
    };
    let Some(first) = name.bytes().next() else {
        return err("must not be empty");
    };
    if name.len() > 45 {
        return err("must be at most 45 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return err("must start with a letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err("may only contain letters, digits, '_' and '-'");
    }
    Ok(())
}

/// The stack name abra derives from a domain: dots become underscores.
pub fn stack_from_domain(domain: &str) -> String {
    domain.replace('.', "_")
}

/// Checks a DNS name used as an app domain.
pub fn check_domain(domain: &str) -> Result<(), NameError> {
    let err = |why| {
        Err(NameError {
            what: "domain",
            name: domain.to_owned(),
            why,
        })
    };
    if domain.is_empty() || domain.len() > 253 {
        return err("must be 1 to 253 characters");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return err("every dot-separated label must be 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err("a label must not start or end with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return err("may only contain letters, digits, '-' and '.'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_app_names_are_refused() {
        for n in RESERVED_APP_NAMES {
            let e = check_app(n).unwrap_err().to_string();
            assert!(e.contains("reserved"), "{e}");
        }
        assert!(check_app("hostname").is_ok());
        assert!(check_app("../x").is_err());
    }

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "traefik",
            "keycloak",
            "warm-nextcloud",
            "a",
            "0day",
            "x.y_z-1",
        ] {
            assert_eq!(check("app", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_names() {
        for n in [
            "", "..", "a..b", "../etc", "a/b", "/abs", ".hidden", "-dash", "_u", "Upper", "sp ace",
            "tab\t", "ünï", "a\0b",
        ] {
            assert!(check("app", n).is_err(), "{n:?} must be refused");
        }
        assert!(check("app", &"a".repeat(65)).is_err());
        assert!(check("app", &"a".repeat(64)).is_ok());
    }

    #[test]
    fn error_names_what_and_why() {
        let e = check("recipe", "../x").unwrap_err().to_string();
        assert!(e.contains("recipe") && e.contains("../x"), "{e}");
    }

    #[test]
    fn stacks_and_domains() {
        assert_eq!(
            stack_from_domain("warm-demo.ci.example.org"),
            "warm-demo_ci_example_org"
        );
        assert!(check_stack("warm-demo_ci_example_org").is_ok());
        assert!(check_stack("a.b").is_err());
        assert!(check_stack(&"a".repeat(46)).is_err());
        assert!(check_domain("traefik.ci.example.org").is_ok());
        for d in ["", "a..b", "-a.b", "a_b.c", "a b", "a/b"] {
            assert!(check_domain(d).is_err(), "{d:?}");
        }
    }
}
