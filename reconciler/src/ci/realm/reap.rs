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
