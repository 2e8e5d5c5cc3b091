//! The upgrade base of a CI run: what to deploy *before* the head, so the run tests an upgrade
//! (DESIGN.md, "Canonicals and CI integration"). The chain, first match wins:
//!
//! 1. an explicit override;
//! 2. the canonical's version, if it is strictly older than the head's;
//! 3. the canonical's version equals or is newer than the head's: the newest published,
//!    non-pre-release version strictly older than the head (an upgrade from the head's own
//!    version would be a no-op, from a newer one a downgrade), or skip when there is none;
//! 4. no canonical: the tip of the target branch (default: the main branch), if it is not the
//!    head itself, else skip.
//!
//! [`resolve`] is pure; the published tags and the main tip are asked for through closures only
//! when the chain reaches the step that needs them, so an override never costs a fetch of the
//! recipe (a canonical's answer does: the caller checks its tag's commit against the registry).

use std::cmp::Ordering;

use serde::Serialize;

use crate::upgrade::version::{Version, cmp_upstream, parse_tags};

/// What the CI deploys first. Serialized as `{"kind": ..., "value": ..., "reason": ...}`; this
/// shape is a documented contract (docs/cli.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Base {
    pub kind: Kind,
    /// The version tag, the commit/ref, or `null` for a skip.
    pub value: Option<String>,
    /// Why this step of the chain was taken, for people reading CI logs.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A published version: check out its tag.
    Version,
    /// A commit or branch.
    Ref,
    /// No upgrade to test.
    Skip,
}

/// An override as the CI passes it: a version tag if it parses as one, else a ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    Version(Version),
    Ref(String),
}

/// The facts that are cheap to know up front.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub override_base: Option<Override>,
    /// The commit under test (full or abbreviated), or a ref name.
    pub head_ref: String,
    /// `None` when the head's compose file could not tell; only a canonical needs it.
    pub head_version: Option<Version>,
    /// The version the recipe's canonical holds, if the recipe has one: the registry's
    /// version, or its last good when its own gate holds the registry's ([`Inputs::held`]).
    pub canonical: Option<Version>,
    /// Set when the canonical's gate holds the registry's version, which `canonical` is then not.
    pub held: Option<Held>,
    /// The branch the change is proposed against (`--target-branch`); `None`: the default
    /// branch. Only names the tip in the reason; the caller's `main_tip` looks it up.
    pub target_branch: Option<String>,
    /// Whether a pre-release tag may be the base (the canonical's `allow_prerelease`).
    pub allow_prerelease: bool,
}

/// The canonical's own gate holds the registry's version (a major bump or a manual migration
/// from the version it is on), so the canonical stays on its last good: that is the version a
/// run's upgrade starts from, and every reason says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub registry: Version,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the recipe has a canonical ({canonical}) but the head's version is unknown ({why}); \
         pass --head-version or a head checkout whose compose.yml has the version label"
    )]
    NoHeadVersion { canonical: Version, why: String },
    #[error("listing the recipe's published tags: {0:#}")]
    Tags(anyhow::Error),
    #[error("finding the main branch's tip: {0:#}")]
    MainTip(anyhow::Error),
}

pub const REASON_NO_PREDECESSOR: &str = "base == head and no older published predecessor";
pub const REASON_HEAD_IS_MAIN: &str = "head == main tip";
pub const REASON_NEWER_NO_PREDECESSOR: &str =
    "canonical newer than head and no older published predecessor";

/// Resolves the base. `head_version_why` explains a missing head version; `tags` yields the
/// recipe's raw tag names (non-versions are skipped); `main_tip` yields the main branch's commit.
pub fn resolve(
    inputs: &Inputs,
    head_version_why: &str,
    tags: impl FnOnce() -> anyhow::Result<Vec<String>>,
    main_tip: impl FnOnce() -> anyhow::Result<String>,
) -> Result<Base, ResolveError> {
    match &inputs.override_base {
        Some(Override::Version(v)) => {
            return Ok(base(Kind::Version, v.to_string(), "explicit override"));
        }
        Some(Override::Ref(r)) => return Ok(base(Kind::Ref, r.clone(), "explicit override")),
        None => {}
    }
    if let Some(canonical) = &inputs.canonical {
        let Some(head) = &inputs.head_version else {
            return Err(ResolveError::NoHeadVersion {
                canonical: canonical.clone(),
                why: head_version_why.to_owned(),
            });
        };
        let held = match &inputs.held {
            Some(h) => format!(
                "the canonical's gate holds registry version {} ({}), so it stays on {canonical}; ",
                h.registry, h.reason
            ),
            None => String::new(),
        };
        if canonical < head && !same_version(canonical, head) {
            return Ok(base(
                Kind::Version,
                canonical.to_string(),
                &format!("{held}canonical version {canonical} differs from head version {head}"),
            ));
        }
        // A canonical equal to or newer than the head would test a no-op or a downgrade: step
        // back to the newest published version strictly older than the head instead.
        let newer = !same_version(canonical, head);
        let published = parse_tags(tags().map_err(ResolveError::Tags)?);
        return Ok(
            match predecessor(&published, head, inputs.allow_prerelease) {
                Some(prev) if newer => base(
                    Kind::Version,
                    prev.to_string(),
                    &format!(
                        "{held}canonical version {canonical} is newer than head version {head}; \
                         newest published version older than the head"
                    ),
                ),
                Some(prev) => base(
                    Kind::Version,
                    prev.to_string(),
                    &format!(
                        "{held}canonical version equals head version {head}; newest published \
                         version older than it"
                    ),
                ),
                None if newer => skip(&format!("{held}{REASON_NEWER_NO_PREDECESSOR}")),
                None => skip(&format!("{held}{REASON_NO_PREDECESSOR}")),
            },
        );
    }
    let tip = main_tip().map_err(ResolveError::MainTip)?;
    match (&inputs.target_branch, same_commit(&tip, &inputs.head_ref)) {
        (None, true) => Ok(skip(REASON_HEAD_IS_MAIN)),
        (None, false) => Ok(base(Kind::Ref, tip, "no canonical; main branch tip")),
        (Some(b), true) => Ok(skip(&format!("head == tip of target branch {b}"))),
        (Some(b), false) => Ok(base(
            Kind::Ref,
            tip,
            &format!("no canonical; tip of target branch {b}"),
        )),
    }
}

fn base(kind: Kind, value: String, reason: &str) -> Base {
    Base {
        kind,
        value: Some(value),
        reason: reason.to_owned(),
    }
}

fn skip(reason: &str) -> Base {
    Base {
        kind: Kind::Skip,
        value: None,
        reason: reason.to_owned(),
    }
}

/// Whether two tags name the same release: `Version`'s `Ord` separates `1.0.0+v1.2` from
/// `1.0.0+1.2` only by spelling, and upgrading between those would be the same-version no-op
/// the chain exists to avoid.
pub fn same_version(a: &Version, b: &Version) -> bool {
    a.recipe == b.recipe && cmp_upstream(&a.upstream, &b.upstream) == Ordering::Equal
}

/// The newest of `published` strictly older than `head` (and not a respelling of it); a
/// pre-release only when `allow_prerelease`.
pub fn predecessor<'a>(
    published: &'a [Version],
    head: &Version,
    allow_prerelease: bool,
) -> Option<&'a Version> {
    published
        .iter()
        .filter(|v| *v < head && !same_version(v, head))
        .filter(|v| allow_prerelease || !v.is_prerelease())
        .max()
}

/// Whether two commit ids name the same commit, allowing either to be abbreviated (at least 7
/// hex digits, as git abbreviates); anything that is not hex compares exactly.
pub fn same_commit(a: &str, b: &str) -> bool {
    let hex = |s: &str| s.len() >= 7 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if hex(a) && hex(b) {
        let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
        a.starts_with(&b) || b.starts_with(&a)
    } else {
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
    const HEAD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    struct Case {
        name: &'static str,
        override_base: Option<Override>,
        head_ref: &'static str,
        head_version: Option<&'static str>,
        canonical: Option<&'static str>,
        /// The registry's version when the canonical's gate holds it (`canonical` is then the
        /// version the canonical holds).
        held: Option<&'static str>,
        tags: &'static [&'static str],
        main_tip: &'static str,
        want: (Kind, Option<&'static str>, &'static str),
        target_branch: Option<&'static str>,
        /// Whether the chain may look at the tags / the main tip at all.
        reads_tags: bool,
        reads_main: bool,
    }

    const TAGS: &[&str] = &["1.0.0+1.0", "1.1.0+1.0", "1.2.0+1.1", "2.0.0+2.0"];

    fn case(name: &'static str) -> Case {
        Case {
            name,
            override_base: None,
            head_ref: HEAD,
            head_version: Some("1.2.0+1.1"),
            canonical: None,
            held: None,
            tags: TAGS,
            main_tip: MAIN,
            want: (Kind::Skip, None, ""),
            target_branch: None,
            reads_tags: false,
            reads_main: false,
        }
    }

    #[test]
    fn every_branch_of_the_chain() {
        let cases = vec![
            Case {
                override_base: Some(Override::Version(v("1.0.0+1.0"))),
                canonical: Some("1.1.0+1.0"),
                want: (Kind::Version, Some("1.0.0+1.0"), "explicit override"),
                ..case("override version wins over the canonical")
            },
            Case {
                override_base: Some(Override::Ref("feature/x".into())),
                head_version: None,
                want: (Kind::Ref, Some("feature/x"), "explicit override"),
                ..case("override ref needs no head version")
            },
            Case {
                canonical: Some("1.1.0+1.0"),
                want: (
                    Kind::Version,
                    Some("1.1.0+1.0"),
                    "canonical version 1.1.0+1.0 differs from head version 1.2.0+1.1",
                ),
                ..case("canonical differs from head")
            },
            Case {
                canonical: Some("1.1.0+1.0"),
                held: Some("2.0.0+2.0"),
                want: (
                    Kind::Version,
                    Some("1.1.0+1.0"),
                    "the canonical's gate holds registry version 2.0.0+2.0 (2.0.0+2.0 is a major \
                     bump from 1.1.0+1.0), so it stays on 1.1.0+1.0; canonical version 1.1.0+1.0 \
                     differs from head version 1.2.0+1.1",
                ),
                ..case("a canonical whose gate holds the registry's version: the version it holds")
            },
            Case {
                head_version: Some("1.1.0+1.0"),
                canonical: Some("1.1.0+1.0"),
                held: Some("2.0.0+2.0"),
                want: (
                    Kind::Version,
                    Some("1.0.0+1.0"),
                    "the canonical's gate holds registry version 2.0.0+2.0 (2.0.0+2.0 is a major \
                     bump from 1.1.0+1.0), so it stays on 1.1.0+1.0; canonical version equals \
                     head version 1.1.0+1.0; newest published version older than it",
                ),
                reads_tags: true,
                ..case("a held canonical equal to the head steps back, still saying why")
            },
            Case {
                head_version: Some("1.0.0+1.0"),
                canonical: Some("1.0.0+1.0"),
                held: Some("2.0.0+2.0"),
                want: (
                    Kind::Skip,
                    None,
                    "the canonical's gate holds registry version 2.0.0+2.0 (2.0.0+2.0 is a major \
                     bump from 1.0.0+1.0), so it stays on 1.0.0+1.0; base == head and no older \
                     published predecessor",
                ),
                reads_tags: true,
                ..case("a held canonical equal to the oldest tag: skip, saying why")
            },
            Case {
                canonical: Some("2.0.0+2.0"),
                want: (
                    Kind::Version,
                    Some("1.1.0+1.0"),
                    "canonical version 2.0.0+2.0 is newer than head version 1.2.0+1.1; newest published version older than the head",
                ),
                reads_tags: true,
                ..case("canonical newer than head steps back like an equal one")
            },
            Case {
                head_version: Some("1.0.0+1.0"),
                canonical: Some("1.1.0+1.0"),
                want: (Kind::Skip, None, REASON_NEWER_NO_PREDECESSOR),
                reads_tags: true,
                ..case("canonical newer than head, nothing older published: skip")
            },
            Case {
                target_branch: Some("stable"),
                want: (
                    Kind::Ref,
                    Some(MAIN),
                    "no canonical; tip of target branch stable",
                ),
                reads_main: true,
                ..case("no canonical: the target branch's tip")
            },
            Case {
                head_ref: MAIN,
                target_branch: Some("stable"),
                want: (Kind::Skip, None, "head == tip of target branch stable"),
                reads_main: true,
                ..case("no canonical, head is the target branch tip: skip")
            },
            Case {
                canonical: Some("1.2.0+1.1"),
                want: (
                    Kind::Version,
                    Some("1.1.0+1.0"),
                    "canonical version equals head version 1.2.0+1.1; newest published version older than it",
                ),
                reads_tags: true,
                ..case("canonical equals head: newest older tag")
            },
            Case {
                head_version: Some("3.0.0+3.0"),
                canonical: Some("3.0.0+3.0"),
                want: (
                    Kind::Version,
                    Some("2.0.0+2.0"),
                    "canonical version equals head version 3.0.0+3.0; newest published version older than it",
                ),
                reads_tags: true,
                ..case("head above all tags: the newest tag")
            },
            Case {
                head_version: Some("1.0.0+1.0"),
                canonical: Some("1.0.0+1.0"),
                want: (Kind::Skip, None, REASON_NO_PREDECESSOR),
                reads_tags: true,
                ..case("head equal to the oldest tag: skip")
            },
            Case {
                head_version: Some("1.0.0+1.0"),
                canonical: Some("1.0.0+1.0"),
                tags: &[],
                want: (Kind::Skip, None, REASON_NO_PREDECESSOR),
                reads_tags: true,
                ..case("no tags at all: skip")
            },
            Case {
                head_version: Some("1.10.0+2.0"),
                canonical: Some("1.10.0+2.0"),
                tags: &[
                    "latest",
                    "1.9.0+1.9",
                    "v1.0.0",
                    "1.10.0+2.0",
                    "1.11.0+2.0",
                    "1.2.0+1.0",
                    "backup-2024",
                    "1.10.0+",
                    "1.10.0+v2.0",
                ],
                want: (
                    Kind::Version,
                    Some("1.9.0+1.9"),
                    "canonical version equals head version 1.10.0+2.0; newest published version older than it",
                ),
                reads_tags: true,
                ..case("unparseable tags mixed in; numeric order; respelled head skipped")
            },
            Case {
                head_version: Some("1.0.0+1.0"),
                canonical: Some("1.0.0+1.0"),
                tags: &["nope", "1.0.0+v1.0", "1.0.0+1.0", "release-1"],
                want: (Kind::Skip, None, REASON_NO_PREDECESSOR),
                reads_tags: true,
                ..case("only a respelling of the head and junk: skip")
            },
            Case {
                canonical: Some("1.2.0+v1.1"),
                tags: &["1.1.0+1.0", "1.2.0+v1.1", "1.2.0+1.1", "1.1.0+v1.0"],
                want: (
                    Kind::Version,
                    Some("1.1.0+v1.0"),
                    "canonical version equals head version 1.2.0+1.1; newest published version older than it",
                ),
                reads_tags: true,
                ..case("canonical a respelling of the head counts as equal; exact tag returned")
            },
            Case {
                head_version: Some("1.2.0+1.1-rc1"),
                canonical: Some("1.2.0+1.1-rc1"),
                tags: &["1.2.0+1.1", "1.2.0+1.0", "1.1.0+9.9"],
                want: (
                    Kind::Version,
                    Some("1.2.0+1.0"),
                    "canonical version equals head version 1.2.0+1.1-rc1; newest published version older than it",
                ),
                reads_tags: true,
                ..case("the reconciler's order: a pre-release head sorts below its release")
            },
            Case {
                want: (Kind::Ref, Some(MAIN), "no canonical; main branch tip"),
                reads_main: true,
                ..case("no canonical: main tip")
            },
            Case {
                head_version: None,
                want: (Kind::Ref, Some(MAIN), "no canonical; main branch tip"),
                reads_main: true,
                ..case("no canonical needs no head version")
            },
            Case {
                head_ref: MAIN,
                want: (Kind::Skip, None, REASON_HEAD_IS_MAIN),
                reads_main: true,
                ..case("no canonical, head is main: skip")
            },
            Case {
                head_ref: "0123456",
                want: (Kind::Skip, None, REASON_HEAD_IS_MAIN),
                reads_main: true,
                ..case("abbreviated head that is main: skip")
            },
            Case {
                head_ref: "0123456789ABCDEF",
                want: (Kind::Skip, None, REASON_HEAD_IS_MAIN),
                reads_main: true,
                ..case("upper-case head that is main: skip")
            },
        ];
        for c in cases {
            let inputs = Inputs {
                override_base: c.override_base.clone(),
                head_ref: c.head_ref.to_owned(),
                head_version: c.head_version.map(v),
                canonical: c.canonical.map(v),
                held: c.held.map(|r| Held {
                    registry: v(r),
                    reason: format!("{r} is a major bump from {}", c.canonical.unwrap()),
                }),
                target_branch: c.target_branch.map(str::to_owned),
                ..Inputs::default()
            };
            let tags_read = std::cell::Cell::new(false);
            let main_read = std::cell::Cell::new(false);
            let got = resolve(
                &inputs,
                "not given",
                || {
                    tags_read.set(true);
                    Ok(c.tags.iter().map(|s| s.to_string()).collect())
                },
                || {
                    main_read.set(true);
                    Ok(c.main_tip.to_owned())
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let want = Base {
                kind: c.want.0,
                value: c.want.1.map(str::to_owned),
                reason: c.want.2.to_owned(),
            };
            assert_eq!(got, want, "{}", c.name);
            assert_eq!(tags_read.get(), c.reads_tags, "{}: tags read", c.name);
            assert_eq!(main_read.get(), c.reads_main, "{}: main tip read", c.name);
            if let Some(value) = &got.value {
                if got.kind == Kind::Version {
                    assert_ne!(Some(value.as_str()), c.head_version, "{}", c.name);
                }
                // Whatever the spelling, a predecessor is strictly older than the head in the
                // reconciler's order, is not the same release, and is one of the tags verbatim.
                if c.reads_tags {
                    let (got_v, head) = (v(value), v(c.head_version.unwrap()));
                    assert!(got_v < head && !same_version(&got_v, &head), "{}", c.name);
                    assert!(c.tags.contains(&value.as_str()), "{}", c.name);
                }
            }
        }
    }

    #[test]
    fn canonical_without_head_version_is_a_clear_error() {
        let inputs = Inputs {
            head_ref: HEAD.into(),
            canonical: Some(v("1.0.0+1")),
            ..Inputs::default()
        };
        let e = resolve(
            &inputs,
            "/ci/head/compose.yml has no coop-cloud.<stack>.version label",
            || panic!("no tags needed"),
            || panic!("no main tip needed"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("1.0.0+1") && e.contains("compose.yml") && e.contains("--head-version"),
            "{e}"
        );
    }

    #[test]
    fn failing_lookups_are_errors_not_skips() {
        let inputs = Inputs {
            head_ref: HEAD.into(),
            head_version: Some(v("1.0.0+1")),
            canonical: Some(v("1.0.0+1")),
            ..Inputs::default()
        };
        let e = resolve(
            &inputs,
            "",
            || anyhow::bail!("fetch failed"),
            || unreachable!(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("published tags") && e.contains("fetch failed"),
            "{e}"
        );
        let inputs = Inputs {
            canonical: None,
            ..inputs
        };
        let e = resolve(
            &inputs,
            "",
            || unreachable!(),
            || anyhow::bail!("no origin"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("main branch") && e.contains("no origin"), "{e}");
    }

    #[test]
    fn json_shape_is_stable() {
        let b = Base {
            kind: Kind::Version,
            value: Some("1.0.0+1".into()),
            reason: "r".into(),
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"kind":"version","value":"1.0.0+1","reason":"r"}"#
        );
        assert_eq!(
            serde_json::to_string(&skip(REASON_HEAD_IS_MAIN)).unwrap(),
            r#"{"kind":"skip","value":null,"reason":"head == main tip"}"#
        );
        assert_eq!(
            serde_json::to_value(Kind::Ref).unwrap(),
            serde_json::json!("ref")
        );
    }

    #[test]
    fn commits_and_versions_compare_sensibly() {
        assert!(same_commit(MAIN, &MAIN[..7]));
        assert!(!same_commit(MAIN, &MAIN[..6]));
        assert!(!same_commit(MAIN, HEAD));
        assert!(same_commit("main", "main"));
        assert!(!same_commit("main", "mainline"));
        assert!(same_version(&v("1.0.0+v1.2"), &v("1.0.0+1.2")));
        assert!(!same_version(&v("1.0.0+1.2"), &v("1.0.1+1.2")));
    }
}
