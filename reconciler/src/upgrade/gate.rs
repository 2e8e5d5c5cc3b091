//! The safety gate: which published version an app may move to on its own, and which versions
//! wait for a person (DESIGN.md, "Versions and the safety gate").
//!
//! Everything here is a pure function of its inputs, so the rules are tested exhaustively
//! without git or Docker. The caller (the reconciler) fetches releases, remembers which holds it
//! already alerted (by [`Hold::key`]) and which versions failed their health gate.
//!
//! # Rules
//!
//! A candidate `V > last_good` passes iff all of:
//! - it is not a major bump ([`is_major`]) from its *base*;
//! - no release note of a version in `(base, V]` contains a manual-migration phrase;
//! - it did not fail its health gate before, unless `V` itself is approved.
//!
//! The base is `last_good`, or the newest approved version in `(last_good, V]` if there is one.
//! So approving `A` means "a person accepted everything up to and including `A`": it releases
//! both kinds of hold for `A` (the major jump and the notes of `A` and of every version before
//! it), and versions after `A` are judged as if `A` were already deployed. Approving a version
//! that only carries a note (say `1.3.0`) therefore also releases that note for `1.4.0`.
//!
//! The gate picks the newest passing version, so safe minors keep flowing while a major waits.
//! Every held version newer than the pick (or than `last_good` when nothing passes) is reported
//! once per run as a [`Hold`]; a version held for both reasons is one hold of kind `Major` that
//! also carries the notes.
//!
//! # Bootstrap
//!
//! Without a `last_good` there is no data to migrate and no version to be "major" from, so the
//! gate picks the newest version that has not failed before (the caller lets a configured
//! `initial_version` override it) and reports no holds.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::upgrade::version::{Version, is_major};

/// One published version and its release note, if the recipe has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: Version,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePolicy {
    /// Matched case-insensitively, with runs of whitespace treated as one space so a phrase
    /// wrapped across lines in a note still counts.
    pub manual_migration_phrases: Vec<String>,
    /// Released by `ci-warm approve` or by config.
    pub approved: BTreeSet<Version>,
    /// Failed their health gate before; skipped until approved.
    pub failed: BTreeSet<Version>,
    /// Whether pre-release tags (`-rc1`, `-beta.2`, ...) may be chosen; off by default, so a
    /// pre-release is never taken by surprise.
    pub allow_prerelease: bool,
}

impl Default for GatePolicy {
    fn default() -> GatePolicy {
        GatePolicy {
            manual_migration_phrases: default_phrases(),
            approved: BTreeSet::new(),
            failed: BTreeSet::new(),
            allow_prerelease: false,
        }
    }
}

/// Phrases Co-op Cloud recipe maintainers use when an upgrade needs a person. Deliberately
/// broad: a false hold costs one approval, a missed one can cost the data.
pub fn default_phrases() -> Vec<String> {
    [
        "manual migration",
        "manual intervention",
        "migration required",
        "migration is required",
        "breaking change",
        "must be run manually",
        "requires manual",
        "manual upgrade",
        "manual steps",
        "manually migrate",
        "manual action",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HoldKind {
    Major,
    ManualMigration,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Major => "major",
            HoldKind::ManualMigration => "manual-migration",
        }
    }
}

/// A release note that asks for a manual migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteMatch {
    /// The version whose note it is (may be older than the held version).
    pub version: Version,
    /// The configured phrase that matched, as configured.
    pub phrase: String,
    /// The whole note.
    pub text: String,
}

/// A version newer than what the gate picked that waits for `ci-warm approve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub version: Version,
    /// `Major` when the version is a major bump (whatever its notes say), else `ManualMigration`.
    pub kind: HoldKind,
    /// The version it is a major bump from, when it is one.
    pub major_from: Option<Version>,
    /// The notes in the gated range that ask for a manual migration, oldest first.
    pub migrations: Vec<NoteMatch>,
}

impl Hold {
    /// Stable identity for "already alerted" bookkeeping, e.g. `held-major:2.0.0+2.0.0`; matches
    /// the alert kind names.
    pub fn key(&self) -> String {
        format!("held-{}:{}", self.kind.as_str(), self.version)
    }

    /// One line for a person.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if let Some(from) = &self.major_from {
            parts.push(format!("major bump from {from}"));
        }
        for m in &self.migrations {
            parts.push(format!("release notes of {} say {:?}", m.version, m.phrase));
        }
        parts.join("; ")
    }

    /// The triggering release notes, for the alert; `None` for a plain major bump.
    pub fn notes(&self) -> Option<String> {
        match self.migrations.as_slice() {
            [] => None,
            [one] => Some(one.text.clone()),
            many => {
                let mut out = String::new();
                for m in many {
                    let _ = writeln!(out, "--- {} ---\n{}", m.version, m.text.trim_end());
                }
                Some(out)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GateDecision {
    /// The version to move to: newer than `last_good` (or the bootstrap version); `None` means
    /// stay where you are.
    pub target: Option<Version>,
    /// Held versions newer than the target (or `last_good`), oldest first.
    pub holds: Vec<Hold>,
    /// Versions newer than the target that were skipped because they failed before.
    pub skipped_failed: Vec<Version>,
    /// Pre-releases newer than the target (or `last_good`), skipped because the app does not
    /// allow pre-releases. Skipped, not held: approving one does not make it a candidate.
    pub skipped_prerelease: Vec<Version>,
    /// Why a pinned version was refused (e.g. a downgrade); only [`decide_pinned`] sets it.
    pub refused: Option<String>,
}

/// The first configured phrase found in `notes`, case-insensitively.
pub fn manual_migration_phrase<'p>(notes: &str, phrases: &'p [String]) -> Option<&'p str> {
    let hay = normalize(notes);
    phrases.iter().map(String::as_str).find(|p| {
        let needle = normalize(p);
        // An empty phrase would hold every release that has a note.
        !needle.is_empty() && hay.contains(&needle)
    })
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Sorted, one entry per version; notes of duplicate entries are concatenated so that no note
/// is lost whichever order the caller listed them in.
fn normalize_releases(releases: &[Release]) -> Vec<Release> {
    let mut sorted: Vec<Release> = releases.to_vec();
    sorted.sort_by(|a, b| a.version.cmp(&b.version));
    let mut out: Vec<Release> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if last.version == r.version => {
                last.notes = match (last.notes.take(), r.notes) {
                    (Some(a), Some(b)) if a != b => Some(format!("{a}\n\n{b}")),
                    (a, b) => a.or(b),
                };
            }
            _ => out.push(r),
        }
    }
    out
}

enum Verdict {
    Pass,
    Failed,
    Held(Hold),
}

/// Judges `candidate` (> `last_good`) against the releases in `(last_good, candidate]`.
fn judge(
    last_good: &Version,
    candidate: &Version,
    releases: &[Release],
    policy: &GatePolicy,
) -> Verdict {
    let approved = |v: &Version| policy.approved.contains(v);
    if policy.failed.contains(candidate) && !approved(candidate) {
        return Verdict::Failed;
    }
    let base = releases
        .iter()
        .map(|r| &r.version)
        .filter(|v| *v > last_good && *v <= candidate && approved(v))
        .max()
        .unwrap_or(last_good);
    let major_from = (base != candidate && is_major(base, candidate)).then(|| base.clone());
    let migrations: Vec<NoteMatch> = releases
        .iter()
        .filter(|r| &r.version > base && &r.version <= candidate)
        .filter_map(|r| {
            let text = r.notes.as_deref()?;
            let phrase = manual_migration_phrase(text, &policy.manual_migration_phrases)?;
            Some(NoteMatch {
                version: r.version.clone(),
                phrase: phrase.to_owned(),
                text: text.to_owned(),
            })
        })
        .collect();
    if major_from.is_none() && migrations.is_empty() {
        return Verdict::Pass;
    }
    Verdict::Held(Hold {
        version: candidate.clone(),
        kind: if major_from.is_some() {
            HoldKind::Major
        } else {
            HoldKind::ManualMigration
        },
        major_from,
        migrations,
    })
}

/// The gate for an app that follows the newest safe release.
pub fn decide(
    last_good: Option<&Version>,
    releases: &[Release],
    policy: &GatePolicy,
) -> GateDecision {
    let releases = normalize_releases(releases);
    let Some(last_good) = last_good else {
        return bootstrap(&releases, policy);
    };
    let mut verdicts: Vec<(Version, Verdict)> = releases
        .iter()
        .filter(|r| &r.version > last_good)
        .filter(|r| policy.allow_prerelease || !r.version.is_prerelease())
        .map(|r| {
            (
                r.version.clone(),
                judge(last_good, &r.version, &releases, policy),
            )
        })
        .collect();
    let target = verdicts
        .iter()
        .rev()
        .find(|(_, v)| matches!(v, Verdict::Pass))
        .map(|(version, _)| version.clone());
    // Only what is newer than the pick is still waiting; older holds are superseded by it.
    if let Some(t) = &target {
        verdicts.retain(|(v, _)| v > t);
    }
    let mut decision = GateDecision {
        skipped_prerelease: skipped_prereleases(
            &releases,
            target.as_ref().unwrap_or(last_good),
            policy,
        ),
        target,
        ..GateDecision::default()
    };
    for (version, verdict) in verdicts {
        match verdict {
            Verdict::Pass => {}
            Verdict::Failed => decision.skipped_failed.push(version),
            Verdict::Held(hold) => decision.holds.push(hold),
        }
    }
    tracing::debug!(
        %last_good,
        target = ?decision.target.as_ref().map(ToString::to_string),
        holds = decision.holds.len(),
        skipped_failed = decision.skipped_failed.len(),
        "gate decided"
    );
    decision
}

/// The pre-releases above `floor` that the policy keeps out of reach.
fn skipped_prereleases(releases: &[Release], floor: &Version, policy: &GatePolicy) -> Vec<Version> {
    releases
        .iter()
        .map(|r| &r.version)
        .filter(|v| !policy.allow_prerelease && v.is_prerelease() && *v > floor)
        .cloned()
        .collect()
}

fn bootstrap(releases: &[Release], policy: &GatePolicy) -> GateDecision {
    let all = releases;
    let releases: Vec<Release> = releases
        .iter()
        .filter(|r| policy.allow_prerelease || !r.version.is_prerelease())
        .cloned()
        .collect();
    let releases = releases.as_slice();
    let usable = |v: &Version| !policy.failed.contains(v) || policy.approved.contains(v);
    let target = releases
        .iter()
        .rev()
        .map(|r| &r.version)
        .find(|v| usable(v))
        .cloned();
    let skipped_failed = releases
        .iter()
        .map(|r| &r.version)
        .filter(|v| !usable(v) && target.as_ref().is_none_or(|t| *v > t))
        .cloned()
        .collect();
    let skipped_prerelease = all
        .iter()
        .map(|r| &r.version)
        .filter(|v| {
            !policy.allow_prerelease && v.is_prerelease() && target.as_ref().is_none_or(|t| *v > t)
        })
        .cloned()
        .collect();
    GateDecision {
        target,
        skipped_failed,
        skipped_prerelease,
        ..GateDecision::default()
    }
}

/// The gate for an app pinned to one version (a canonical tracking its registry entry): move to
/// `wanted` if it is newer than `last_good` and passes the same checks as [`decide`] would
/// apply to it; stay if it is already deployed; refuse anything else with a reason.
pub fn decide_pinned(
    last_good: Option<&Version>,
    wanted: &Version,
    releases: &[Release],
    policy: &GatePolicy,
) -> GateDecision {
    let releases = normalize_releases(releases);
    let refuse = |why: String| {
        tracing::warn!(wanted = %wanted, "pinned version refused: {why}");
        GateDecision {
            refused: Some(why),
            ..GateDecision::default()
        }
    };
    if last_good == Some(wanted) {
        return GateDecision::default();
    }
    if let Some(lg) = last_good
        && wanted < lg
    {
        return refuse(format!(
            "{wanted} is older than the deployed {lg}; a downgrade could run old code on data \
             that a newer version already migrated"
        ));
    }
    if !releases.iter().any(|r| &r.version == wanted) {
        return refuse(format!(
            "{wanted} is not a published version (no such tag in the recipe)"
        ));
    }
    if wanted.is_prerelease() && !policy.allow_prerelease {
        return GateDecision {
            refused: Some(format!(
                "{wanted} is a pre-release and allow_prerelease is not set"
            )),
            skipped_prerelease: vec![wanted.clone()],
            ..GateDecision::default()
        };
    }
    let Some(lg) = last_good else {
        let failed = policy.failed.contains(wanted) && !policy.approved.contains(wanted);
        return if failed {
            GateDecision {
                skipped_failed: vec![wanted.clone()],
                ..GateDecision::default()
            }
        } else {
            GateDecision {
                target: Some(wanted.clone()),
                ..GateDecision::default()
            }
        };
    };
    match judge(lg, wanted, &releases, policy) {
        Verdict::Pass => GateDecision {
            target: Some(wanted.clone()),
            ..GateDecision::default()
        },
        Verdict::Failed => GateDecision {
            skipped_failed: vec![wanted.clone()],
            ..GateDecision::default()
        },
        Verdict::Held(hold) => GateDecision {
            holds: vec![hold],
            ..GateDecision::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn rel(list: &[(&str, Option<&str>)]) -> Vec<Release> {
        list.iter()
            .map(|(ver, notes)| Release {
                version: v(ver),
                notes: notes.map(str::to_owned),
            })
            .collect()
    }

    fn set(list: &[&str]) -> BTreeSet<Version> {
        list.iter().map(|s| v(s)).collect()
    }

    fn policy(approved: &[&str], failed: &[&str]) -> GatePolicy {
        GatePolicy {
            approved: set(approved),
            failed: set(failed),
            ..GatePolicy::default()
        }
    }

    /// `(target, [hold keys], [skipped failed])` for compact table assertions.
    fn summary(d: &GateDecision) -> (Option<String>, Vec<String>, Vec<String>) {
        (
            d.target.as_ref().map(ToString::to_string),
            d.holds.iter().map(Hold::key).collect(),
            d.skipped_failed.iter().map(ToString::to_string).collect(),
        )
    }

    const MIGRATE: &str = "Manual migration required: run `app migrate` before starting.";

    fn catalogue() -> Vec<Release> {
        rel(&[
            ("1.0.0+1.0.0", None),
            ("1.1.0+1.0.0", Some("Bump the image.")),
            ("1.2.0+1.0.0", None),
            ("1.3.0+1.1.0", Some(MIGRATE)),
            ("1.4.0+1.1.0", None),
            ("2.0.0+2.0.0", None),
            ("2.1.0+2.0.0", None),
        ])
    }

    struct Case {
        name: &'static str,
        last_good: Option<&'static str>,
        releases: Vec<Release>,
        approved: &'static [&'static str],
        failed: &'static [&'static str],
        target: Option<&'static str>,
        holds: &'static [&'static str],
        skipped: &'static [&'static str],
    }

    #[test]
    fn decide_table() {
        let cases = vec![
            Case {
                name: "safe minors taken, manual migration and major held",
                last_good: Some("1.0.0+1.0.0"),
                releases: catalogue(),
                approved: &[],
                failed: &[],
                target: Some("1.2.0+1.0.0"),
                holds: &[
                    "held-manual-migration:1.3.0+1.1.0",
                    "held-manual-migration:1.4.0+1.1.0",
                    "held-major:2.0.0+2.0.0",
                    "held-major:2.1.0+2.0.0",
                ],
                skipped: &[],
            },
            Case {
                name: "nothing newer",
                last_good: Some("2.1.0+2.0.0"),
                releases: catalogue(),
                approved: &[],
                failed: &[],
                target: None,
                holds: &[],
                skipped: &[],
            },
            Case {
                name: "held with nothing passing: holds are relative to last_good",
                last_good: Some("1.2.0+1.0.0"),
                releases: catalogue(),
                approved: &[],
                failed: &[],
                target: None,
                holds: &[
                    "held-manual-migration:1.3.0+1.1.0",
                    "held-manual-migration:1.4.0+1.1.0",
                    "held-major:2.0.0+2.0.0",
                    "held-major:2.1.0+2.0.0",
                ],
                skipped: &[],
            },
            Case {
                name: "approving the noted version releases its note for later minors too",
                last_good: Some("1.2.0+1.0.0"),
                releases: catalogue(),
                approved: &["1.3.0+1.1.0"],
                failed: &[],
                target: Some("1.4.0+1.1.0"),
                holds: &["held-major:2.0.0+2.0.0", "held-major:2.1.0+2.0.0"],
                skipped: &[],
            },
            Case {
                name: "approving a major releases the major and the intermediate notes",
                last_good: Some("1.2.0+1.0.0"),
                releases: catalogue(),
                approved: &["2.0.0+2.0.0"],
                failed: &[],
                target: Some("2.1.0+2.0.0"),
                holds: &[],
                skipped: &[],
            },
            Case {
                name: "approval older than last_good is irrelevant",
                last_good: Some("1.2.0+1.0.0"),
                releases: catalogue(),
                approved: &["1.1.0+1.0.0"],
                failed: &[],
                target: None,
                holds: &[
                    "held-manual-migration:1.3.0+1.1.0",
                    "held-manual-migration:1.4.0+1.1.0",
                    "held-major:2.0.0+2.0.0",
                    "held-major:2.1.0+2.0.0",
                ],
                skipped: &[],
            },
            Case {
                name: "failed version skipped, newer safe one taken",
                last_good: Some("1.0.0+1.0.0"),
                releases: rel(&[
                    ("1.0.0+1.0.0", None),
                    ("1.1.0+1.0.0", None),
                    ("1.2.0+1.0.0", None),
                ]),
                approved: &[],
                failed: &["1.2.0+1.0.0"],
                target: Some("1.1.0+1.0.0"),
                holds: &[],
                skipped: &["1.2.0+1.0.0"],
            },
            Case {
                name: "failed newest skipped, a newer release moves on",
                last_good: Some("1.1.0+1.0.0"),
                releases: rel(&[
                    ("1.1.0+1.0.0", None),
                    ("1.2.0+1.0.0", None),
                    ("1.2.1+1.0.0", None),
                ]),
                approved: &[],
                failed: &["1.2.0+1.0.0"],
                target: Some("1.2.1+1.0.0"),
                holds: &[],
                skipped: &[],
            },
            Case {
                name: "only a failed version: stay, report it",
                last_good: Some("1.1.0+1.0.0"),
                releases: rel(&[("1.1.0+1.0.0", None), ("1.2.0+1.0.0", None)]),
                approved: &[],
                failed: &["1.2.0+1.0.0"],
                target: None,
                holds: &[],
                skipped: &["1.2.0+1.0.0"],
            },
            Case {
                name: "approved failed version is retried",
                last_good: Some("1.1.0+1.0.0"),
                releases: rel(&[("1.1.0+1.0.0", None), ("1.2.0+1.0.0", None)]),
                approved: &["1.2.0+1.0.0"],
                failed: &["1.2.0+1.0.0"],
                target: Some("1.2.0+1.0.0"),
                holds: &[],
                skipped: &[],
            },
            Case {
                name: "upstream major held, recipe minor",
                last_good: Some("3.4.0+26.6.2"),
                releases: rel(&[
                    ("3.4.0+26.6.2", None),
                    ("3.4.1+26.6.3", None),
                    ("3.5.0+27.0.0", None),
                ]),
                approved: &[],
                failed: &[],
                target: Some("3.4.1+26.6.3"),
                holds: &["held-major:3.5.0+27.0.0"],
                skipped: &[],
            },
            Case {
                name: "unparseable upstream change held",
                last_good: Some("1.0.0+1.0"),
                releases: rel(&[("1.0.0+1.0", None), ("1.1.0+latest", None)]),
                approved: &[],
                failed: &[],
                target: None,
                holds: &["held-major:1.1.0+latest"],
                skipped: &[],
            },
            Case {
                name: "unsorted and duplicated input",
                last_good: Some("1.0.0+1.0"),
                releases: rel(&[
                    ("1.10.0+1.0", None),
                    ("1.2.0+1.0", None),
                    ("1.9.0+1.0", None),
                    ("1.10.0+1.0", Some("BREAKING CHANGE: config moved")),
                    ("1.0.0+1.0", None),
                ]),
                approved: &[],
                failed: &[],
                target: Some("1.9.0+1.0"),
                holds: &["held-manual-migration:1.10.0+1.0"],
                skipped: &[],
            },
            Case {
                name: "last_good no longer published",
                last_good: Some("1.0.5+1.0"),
                releases: rel(&[("1.0.0+1.0", None), ("1.1.0+1.0", None)]),
                approved: &[],
                failed: &[],
                target: Some("1.1.0+1.0"),
                holds: &[],
                skipped: &[],
            },
            Case {
                name: "note on a version at or before last_good is history",
                last_good: Some("1.3.0+1.1.0"),
                releases: catalogue(),
                approved: &[],
                failed: &[],
                target: Some("1.4.0+1.1.0"),
                holds: &["held-major:2.0.0+2.0.0", "held-major:2.1.0+2.0.0"],
                skipped: &[],
            },
            Case {
                name: "failed and held: reported as failed, not as a hold",
                last_good: Some("1.2.0+1.0.0"),
                releases: catalogue(),
                approved: &[],
                failed: &["2.0.0+2.0.0"],
                target: None,
                holds: &[
                    "held-manual-migration:1.3.0+1.1.0",
                    "held-manual-migration:1.4.0+1.1.0",
                    "held-major:2.1.0+2.0.0",
                ],
                skipped: &["2.0.0+2.0.0"],
            },
            Case {
                name: "bootstrap picks the newest, no holds",
                last_good: None,
                releases: catalogue(),
                approved: &[],
                failed: &[],
                target: Some("2.1.0+2.0.0"),
                holds: &[],
                skipped: &[],
            },
            Case {
                name: "bootstrap skips a version that failed",
                last_good: None,
                releases: catalogue(),
                approved: &[],
                failed: &["2.1.0+2.0.0"],
                target: Some("2.0.0+2.0.0"),
                holds: &[],
                skipped: &["2.1.0+2.0.0"],
            },
            Case {
                name: "bootstrap with no releases",
                last_good: None,
                releases: vec![],
                approved: &[],
                failed: &[],
                target: None,
                holds: &[],
                skipped: &[],
            },
        ];
        for c in cases {
            let p = policy(c.approved, c.failed);
            let d = decide(c.last_good.map(v).as_ref(), &c.releases, &p);
            let want = (
                c.target.map(str::to_owned),
                c.holds.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                c.skipped
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect::<Vec<_>>(),
            );
            assert_eq!(summary(&d), want, "case: {}", c.name);
            assert_eq!(d.refused, None, "case: {}", c.name);
        }
    }

    #[test]
    fn hold_carries_notes_phrase_and_reason() {
        let d = decide(
            Some(&v("1.2.0+1.0.0")),
            &catalogue(),
            &GatePolicy::default(),
        );
        let manual = &d.holds[0];
        assert_eq!(manual.kind, HoldKind::ManualMigration);
        assert_eq!(manual.major_from, None);
        assert_eq!(manual.migrations.len(), 1);
        assert_eq!(manual.migrations[0].phrase, "manual migration");
        assert_eq!(manual.notes().as_deref(), Some(MIGRATE));
        assert_eq!(
            manual.reason(),
            "release notes of 1.3.0+1.1.0 say \"manual migration\""
        );

        // The major also saw the intermediate note: one hold, both reasons.
        let major = &d.holds[2];
        assert_eq!(major.key(), "held-major:2.0.0+2.0.0");
        assert_eq!(major.major_from, Some(v("1.2.0+1.0.0")));
        assert_eq!(major.migrations[0].version, v("1.3.0+1.1.0"));
        assert!(
            major
                .reason()
                .starts_with("major bump from 1.2.0+1.0.0; release notes of 1.3.0")
        );

        let plain = decide(
            Some(&v("1.0.0+1.0")),
            &rel(&[("2.0.0+1.0", None)]),
            &GatePolicy::default(),
        );
        assert_eq!(plain.holds[0].notes(), None);
    }

    #[test]
    fn several_notes_are_all_reported() {
        let releases = rel(&[
            ("1.0.0+1", None),
            ("1.1.0+1", Some("Manual intervention: rotate keys")),
            ("1.2.0+1", Some("requires MANUAL\nmigration of the db")),
        ]);
        let d = decide(Some(&v("1.0.0+1")), &releases, &GatePolicy::default());
        let last = d.holds.last().unwrap();
        assert_eq!(last.version, v("1.2.0+1"));
        assert_eq!(last.migrations.len(), 2);
        let notes = last.notes().unwrap();
        assert!(
            notes.contains("--- 1.1.0+1 ---\nManual intervention"),
            "{notes}"
        );
        assert!(
            notes.contains("--- 1.2.0+1 ---\nrequires MANUAL"),
            "{notes}"
        );
    }

    #[test]
    fn phrase_matching() {
        let p = default_phrases();
        let cases = [
            ("Manual Migration needed", Some("manual migration")),
            ("manual\n  migration", Some("manual migration")),
            (
                "This is a BREAKING CHANGES release",
                Some("breaking change"),
            ),
            (
                "The script must be run manually.",
                Some("must be run manually"),
            ),
            ("Bump to 1.2, nothing to do", None),
            ("", None),
        ];
        for (notes, want) in cases {
            assert_eq!(manual_migration_phrase(notes, &p), want, "{notes:?}");
        }
        let custom = vec![String::new(), "  ".into(), "Run OCC".into()];
        assert_eq!(
            manual_migration_phrase("anything", &custom),
            None,
            "empty phrases never match"
        );
        assert_eq!(
            manual_migration_phrase("please run occ upgrade", &custom),
            Some("Run OCC")
        );
    }

    #[test]
    fn pre_releases_are_skipped_unless_allowed() {
        let releases = rel(&[
            ("1.0.0+1.0", None),
            ("1.1.0+1.1", None),
            ("1.2.0+1.2-rc1", None),
            ("1.2.1+1.2.0-beta.2", None),
        ]);
        let strict = GatePolicy::default();
        let d = decide(Some(&v("1.0.0+1.0")), &releases, &strict);
        assert_eq!(d.target, Some(v("1.1.0+1.1")));
        assert!(d.holds.is_empty(), "a skipped pre-release is not a hold");
        assert_eq!(
            d.skipped_prerelease,
            vec![v("1.2.0+1.2-rc1"), v("1.2.1+1.2.0-beta.2")]
        );
        // Approving a pre-release does not make it a candidate either.
        let approved = GatePolicy {
            approved: set(&["1.2.0+1.2-rc1"]),
            ..GatePolicy::default()
        };
        let d = decide(Some(&v("1.1.0+1.1")), &releases, &approved);
        assert_eq!(d.target, None);
        assert_eq!(d.skipped_prerelease.len(), 2);
        // Bootstrap never starts on a pre-release either.
        let d = decide(None, &releases, &strict);
        assert_eq!(d.target, Some(v("1.1.0+1.1")));
        assert_eq!(d.skipped_prerelease.len(), 2);
        let only_rc = rel(&[("1.0.0+1.0-rc1", None)]);
        assert_eq!(decide(None, &only_rc, &strict).target, None);
        // Opted in: pre-releases are ordinary candidates.
        let open = GatePolicy {
            allow_prerelease: true,
            ..GatePolicy::default()
        };
        let d = decide(Some(&v("1.0.0+1.0")), &releases, &open);
        assert_eq!(d.target, Some(v("1.2.1+1.2.0-beta.2")));
        assert!(d.skipped_prerelease.is_empty());
        // Pinned to a pre-release (a canonical): refused without the opt-in.
        let d = decide_pinned(
            Some(&v("1.1.0+1.1")),
            &v("1.2.0+1.2-rc1"),
            &releases,
            &strict,
        );
        assert_eq!(d.target, None);
        assert!(d.refused.unwrap().contains("pre-release"));
        let d = decide_pinned(Some(&v("1.1.0+1.1")), &v("1.2.0+1.2-rc1"), &releases, &open);
        assert_eq!(d.target, Some(v("1.2.0+1.2-rc1")));
    }

    #[test]
    fn zero_minor_bump_is_held_as_major() {
        let releases = rel(&[
            ("0.1.0+1.0", None),
            ("0.1.1+1.0", None),
            ("0.2.0+1.0", None),
        ]);
        let d = decide(Some(&v("0.1.0+1.0")), &releases, &GatePolicy::default());
        assert_eq!(d.target, Some(v("0.1.1+1.0")));
        assert_eq!(d.holds.len(), 1);
        assert_eq!(d.holds[0].key(), "held-major:0.2.0+1.0");
    }

    #[test]
    fn custom_phrases_replace_the_defaults() {
        let releases = rel(&[("1.0.0+1", None), ("1.1.0+1", Some("manual migration"))]);
        let p = GatePolicy {
            manual_migration_phrases: vec!["rebuild the index".into()],
            ..GatePolicy::default()
        };
        let d = decide(Some(&v("1.0.0+1")), &releases, &p);
        assert_eq!(d.target, Some(v("1.1.0+1")));
        assert!(d.holds.is_empty());
    }

    #[test]
    fn duplicate_release_notes_are_merged_not_lost() {
        let releases = rel(&[
            ("1.0.0+1", None),
            ("1.1.0+1", Some("Changelog only")),
            ("1.1.0+1", Some("manual upgrade of the schema")),
        ]);
        let d = decide(Some(&v("1.0.0+1")), &releases, &GatePolicy::default());
        assert_eq!(d.target, None);
        assert_eq!(d.holds[0].migrations[0].phrase, "manual upgrade");
    }

    #[test]
    fn hold_keys_are_stable_and_distinct() {
        let d1 = decide(
            Some(&v("1.0.0+1.0.0")),
            &catalogue(),
            &GatePolicy::default(),
        );
        let d2 = decide(
            Some(&v("1.0.0+1.0.0")),
            &catalogue(),
            &GatePolicy::default(),
        );
        let k1: Vec<String> = d1.holds.iter().map(Hold::key).collect();
        let k2: Vec<String> = d2.holds.iter().map(Hold::key).collect();
        assert_eq!(k1, k2);
        let unique: BTreeSet<&String> = k1.iter().collect();
        assert_eq!(unique.len(), k1.len());
    }

    #[test]
    fn pinned_table() {
        // (name, last_good, wanted, approved, failed, target, holds, skipped, refused contains)
        type Row = (
            &'static str,
            Option<&'static str>,
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            Option<&'static str>,
            &'static [&'static str],
            &'static [&'static str],
            Option<&'static str>,
        );
        let rows: &[Row] = &[
            (
                "safe upgrade",
                Some("1.0.0+1.0.0"),
                "1.2.0+1.0.0",
                &[],
                &[],
                Some("1.2.0+1.0.0"),
                &[],
                &[],
                None,
            ),
            (
                "already there",
                Some("1.2.0+1.0.0"),
                "1.2.0+1.0.0",
                &[],
                &[],
                None,
                &[],
                &[],
                None,
            ),
            (
                "downgrade refused",
                Some("1.2.0+1.0.0"),
                "1.1.0+1.0.0",
                &[],
                &[],
                None,
                &[],
                &[],
                Some("downgrade"),
            ),
            (
                "unknown version refused",
                Some("1.0.0+1.0.0"),
                "1.1.5+1.0.0",
                &[],
                &[],
                None,
                &[],
                &[],
                Some("not a published version"),
            ),
            (
                "manual migration in between holds",
                Some("1.2.0+1.0.0"),
                "1.4.0+1.1.0",
                &[],
                &[],
                None,
                &["held-manual-migration:1.4.0+1.1.0"],
                &[],
                None,
            ),
            (
                "major holds",
                Some("1.4.0+1.1.0"),
                "2.0.0+2.0.0",
                &[],
                &[],
                None,
                &["held-major:2.0.0+2.0.0"],
                &[],
                None,
            ),
            (
                "approved major",
                Some("1.0.0+1.0.0"),
                "2.1.0+2.0.0",
                &["2.1.0+2.0.0"],
                &[],
                Some("2.1.0+2.0.0"),
                &[],
                &[],
                None,
            ),
            (
                "failed skipped",
                Some("1.0.0+1.0.0"),
                "1.2.0+1.0.0",
                &[],
                &["1.2.0+1.0.0"],
                None,
                &[],
                &["1.2.0+1.0.0"],
                None,
            ),
            (
                "bootstrap",
                None,
                "2.0.0+2.0.0",
                &[],
                &[],
                Some("2.0.0+2.0.0"),
                &[],
                &[],
                None,
            ),
            (
                "bootstrap failed",
                None,
                "2.0.0+2.0.0",
                &[],
                &["2.0.0+2.0.0"],
                None,
                &[],
                &["2.0.0+2.0.0"],
                None,
            ),
            (
                "bootstrap unknown",
                None,
                "9.0.0+1",
                &[],
                &[],
                None,
                &[],
                &[],
                Some("not a published version"),
            ),
        ];
        for (name, lg, wanted, approved, failed, target, holds, skipped, refused) in rows {
            let d = decide_pinned(
                lg.map(v).as_ref(),
                &v(wanted),
                &catalogue(),
                &policy(approved, failed),
            );
            let want = (
                target.map(str::to_owned),
                holds.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                skipped.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            );
            assert_eq!(summary(&d), want, "case: {name}");
            match (refused, &d.refused) {
                (None, None) => {}
                (Some(w), Some(got)) => assert!(got.contains(w), "case {name}: {got}"),
                (w, got) => panic!("case {name}: refused {got:?}, want {w:?}"),
            }
        }
    }
}
