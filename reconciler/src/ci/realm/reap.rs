//! Which realms `realm reap` deletes: per-run realms (marked by ci-warm when it created them)
//! whose run is not live and that are older than the grace period. Anything else is kept:
//! `master`, realms ci-warm did not create, realms of live runs, young realms, and realms whose
//! age cannot be read (deleting a realm a run may still use is worse than keeping one too long).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::admin::RealmRep;
use super::{MARK_CREATED, MARK_RUN, MASTER};
use crate::config::names;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub realm: String,
    pub run: String,
    /// `live`, `young` or `unknown-age`.
    pub why: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReapPlan {
    /// Per-run realms to delete.
    pub delete: Vec<String>,
    /// Per-run realms kept, with the reason.
    pub kept: Vec<Kept>,
    /// Realms that are not per-run realms (never touched).
    pub ignored: Vec<String>,
}

/// Decides for every realm in `realms`.
pub fn plan(
    realms: &[RealmRep],
    live: &BTreeSet<String>,
    grace: Duration,
    now: SystemTime,
) -> ReapPlan {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = ReapPlan::default();
    for r in realms {
        // A name ci-warm could not have created (`x/../master`, `a%2Fb`) would not name one
        // realm once pasted into the admin URL, so it is never deleted whatever its marks.
        let run = match r.attribute(MARK_RUN) {
            Some(run) if r.realm != MASTER && names::check("realm", &r.realm).is_ok() => {
                run.to_owned()
            }
            _ => {
                out.ignored.push(r.realm.clone());
                continue;
            }
        };
        let keep = |why| Kept {
            realm: r.realm.clone(),
            run: run.clone(),
            why,
        };
        if live.contains(&run) {
            out.kept.push(keep("live"));
            continue;
        }
        match r
            .attribute(MARK_CREATED)
            .and_then(|s| s.parse::<u64>().ok())
        {
            None => out.kept.push(keep("unknown-age")),
            // A creation time in the future (clock skew) counts as young.
            Some(created) if now_secs.saturating_sub(created) < grace.as_secs() => {
                out.kept.push(keep("young"));
            }
            Some(_) => out.delete.push(r.realm.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(realm: &str, attrs: &[(&str, &str)]) -> RealmRep {
        RealmRep {
            realm: realm.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect(),
        }
    }

    #[test]
    fn keeps_live_young_unknown_and_foreign_realms() {
        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        let old = "10000";
        let young = "99000";
        let realms = vec![
            rep("master", &[(MARK_RUN, "0"), (MARK_CREATED, old)]),
            rep("company-sso", &[]),
            rep("demo-1", &[(MARK_RUN, "1"), (MARK_CREATED, old)]),
            rep("demo-2", &[(MARK_RUN, "2"), (MARK_CREATED, old)]),
            rep("demo-3", &[(MARK_RUN, "3"), (MARK_CREATED, young)]),
            rep("demo-4", &[(MARK_RUN, "4")]),
            rep("demo-5", &[(MARK_RUN, "5"), (MARK_CREATED, "yesterday")]),
            rep("demo-6", &[(MARK_RUN, "6"), (MARK_CREATED, "200000")]),
            rep("other-7", &[(MARK_RUN, "7"), (MARK_CREATED, "96400")]),
            rep("x/../master", &[(MARK_RUN, "8"), (MARK_CREATED, old)]),
            rep("Demo 9", &[(MARK_RUN, "9"), (MARK_CREATED, old)]),
        ];
        let live: BTreeSet<String> = ["2".to_string()].into();
        let p = plan(&realms, &live, Duration::from_secs(3600), now);
        assert_eq!(p.delete, ["demo-1", "other-7"]);
        let kept: Vec<(&str, &str)> = p.kept.iter().map(|k| (k.realm.as_str(), k.why)).collect();
        assert_eq!(
            kept,
            [
                ("demo-2", "live"),
                ("demo-3", "young"),
                ("demo-4", "unknown-age"),
                ("demo-5", "unknown-age"),
                ("demo-6", "young"),
            ]
        );
        assert_eq!(
            p.ignored,
            ["master", "company-sso", "x/../master", "Demo 9"]
        );
    }

    #[test]
    fn zero_grace_reaps_every_dead_run() {
        let now = UNIX_EPOCH + Duration::from_secs(50);
        let realms = vec![rep("x-1", &[(MARK_RUN, "1"), (MARK_CREATED, "50")])];
        let p = plan(&realms, &BTreeSet::new(), Duration::ZERO, now);
        assert_eq!(p.delete, ["x-1"]);
    }
}

/// Where live run ids come from (config `keycloak.live_runs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSource {
    /// The value of this label on any service of a running stack.
    StackLabel(String),
    /// The run id captured by `{run}` in a stack name.
    StackPattern(String),
}

/// The run ids of live runs, from every running stack's name and its services' labels
/// (`(stack, labels)` per service). Values that are not valid run ids are ignored (they could
/// not name a realm ci-warm created).
pub fn live_runs(
    source: &LiveSource,
    services: &[(String, std::collections::BTreeMap<String, String>)],
) -> BTreeSet<String> {
    let found = services.iter().filter_map(|(stack, labels)| match source {
        LiveSource::StackLabel(key) => labels.get(key).map(|v| v.trim().to_owned()),
        LiveSource::StackPattern(p) => run_in_stack_name(p, stack),
    });
    found
        .filter(|run| names::check("run id", run).is_ok())
        .collect()
}

/// The `{run}` part of `stack` under `pattern`: `PREFIX{run}SUFFIX` matches exactly, and
/// `PREFIX{run}SEP*` takes the run up to the first `SEP` (to the end when `SEP` is empty).
pub fn run_in_stack_name(pattern: &str, stack: &str) -> Option<String> {
    let (prefix, rest) = pattern.split_once("{run}")?;
    let tail = stack.strip_prefix(prefix)?;
    let run = match rest.strip_suffix('*') {
        Some("") => tail,
        Some(sep) => &tail[..tail.find(sep)?],
        None => tail.strip_suffix(rest)?,
    };
    (!run.is_empty()).then(|| run.to_owned())
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn run_ids_from_stack_names() {
        let m = |p, s| run_in_stack_name(p, s);
        assert_eq!(
            m("ci-{run}_*", "ci-1234_demo_example_org"),
            Some("1234".into())
        );
        assert_eq!(m("ci-{run}_*", "ci-1234"), None);
        assert_eq!(m("ci-{run}_*", "warm-demo_x"), None);
        assert_eq!(m("ci-{run}", "ci-77"), Some("77".into()));
        assert_eq!(m("{run}_ci", "r9_ci"), Some("r9".into()));
        assert_eq!(m("{run}_ci", "r9_cix"), None);
        assert_eq!(m("run-{run}*", "run-abc"), Some("abc".into()));
        assert_eq!(m("ci-{run}", "ci-"), None);
    }

    #[test]
    fn live_runs_from_labels_or_names() {
        let svc = |stack: &str, labels: &[(&str, &str)]| {
            (
                stack.to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let services = vec![
            svc("ci-12_demo", &[("ci.run", "12")]),
            svc("ci-13_demo", &[("ci.run", " 13 ")]),
            svc("warm-demo", &[]),
            svc("ci-x_demo", &[("ci.run", "../master")]),
        ];
        let by_label = live_runs(&LiveSource::StackLabel("ci.run".into()), &services);
        assert_eq!(by_label, ["12", "13"].map(str::to_owned).into());
        let by_name = live_runs(&LiveSource::StackPattern("ci-{run}_*".into()), &services);
        assert_eq!(by_name, ["12", "13", "x"].map(str::to_owned).into());
    }
}
