//! What `ci-warm status` and the metrics file report per app: versions, holds, failures, the
//! last run, the snapshot and pending alerts, read from the state dir; plus, on request, the
//! app's health right now (one observation through the Docker API, no waiting).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ci_warm_snapshot::manifest::{self, Manifest};
use serde::Serialize;

use crate::config::Config;
use crate::config::spec::{self, AppPlan};
use crate::live::snap;
use crate::ops::relay;
use crate::platform::deploy::Revision;
use crate::platform::docker::{NodeObs, TaskState};
use crate::upgrade::alert::Kind;
use crate::upgrade::health::{self, Expected, Verdict};
use crate::upgrade::probe::{HttpProbe, Prepared};
use crate::upgrade::state::{AppState, Intent, PinnedHold, RunRecord};
use crate::upgrade::version::Version;

pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema: u32,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub state_dir: PathBuf,
    pub apps: Vec<AppStatus>,
    /// New alerts of every app (and host-wide ones such as `disk-low`).
    pub pending_alerts: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub app: String,
    /// `false` for an app that has state on disk but is no longer in the config.
    pub configured: bool,
    pub recipe: Option<String>,
    pub stack: Option<String>,
    pub stateful: Option<bool>,
    pub deployed: Option<String>,
    pub last_good: Option<String>,
    pub health: HealthNow,
    /// Hostnames of the swarm nodes the app's tasks run on now (observed with the health;
    /// empty when not observed or not running). A stateful app's must be ci-warm's node.
    pub nodes: Vec<String>,
    /// Versions held by the safety gate and not (yet) approved.
    pub held: Vec<Held>,
    /// A canonical whose own gate holds its registry version: what it holds instead, and why
    /// (`canonical list` shows the same). Filled in by the caller that reads the registry.
    pub canonical_hold: Option<PinnedHold>,
    /// Versions that failed their gate and are skipped until approved.
    pub failed: Vec<FailedVersion>,
    /// Pre-releases the last reconcile skipped (the app does not allow pre-releases); not
    /// holds: approving one does not make it a candidate.
    pub skipped_prerelease: Vec<String>,
    pub approvals: Vec<String>,
    /// Set while a run is in progress, or after a run was killed (the next run rolls back).
    pub intent: Option<Intent>,
    pub last_run: Option<RunRecord>,
    pub snapshot: Option<SnapshotStatus>,
    /// Ids of the app's new (unacknowledged) alerts, oldest first.
    pub pending_alerts: Vec<String>,
    /// URLs of the app's probes that skip the certificate check (`insecure: true`).
    pub insecure_probes: Vec<String>,
    /// Set when the app's state could not be read; the other fields are then empty.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "state", content = "reason")]
pub enum HealthNow {
    Healthy,
    Unhealthy(String),
    /// Docker could not be asked, or the app was never deployed by ci-warm.
    Unknown(String),
    /// `--no-health`, or the metrics file (which must not wait on the network).
    NotChecked,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Held {
    pub version: String,
    /// `held-major` or `held-manual-migration` (the alert kind).
    pub kind: String,
    /// The hold alert's message when it is still on disk, else a generic reason.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedVersion {
    pub version: String,
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotStatus {
    pub path: PathBuf,
    /// Unix seconds when the snapshot was taken.
    pub created: Option<u64>,
    pub age_secs: Option<u64>,
    /// Content bytes of its regular files, each hardlinked file counted once.
    pub bytes: u64,
    pub files: u64,
    pub volumes: Vec<String>,
    pub verified: SnapshotCheck,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotCheck {
    /// `manifest` (the manifest parses, its digest matches, every volume tree exists) or
    /// `full` (every file rehashed, every entry's metadata compared: `status --verify`).
    pub depth: &'static str,
    pub ok: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Observe each app's health now through Docker.
    pub health: bool,
    /// Rehash every snapshot (slow on big snapshots).
    pub verify: bool,
}

/// The status of every configured app, then of every app with state on disk but no config.
pub fn collect(config: &Config, opts: Options) -> anyhow::Result<Status> {
    let state_dir = &config.state_dir;
    let plans = spec::plans(config);
    let pending = relay::list(state_dir)?;
    let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &pending {
        by_app
            .entry(f.alert.app.clone())
            .or_default()
            .push(f.alert.id.clone());
    }
    let hold_messages = hold_messages(state_dir)?;
    let mut apps: Vec<AppStatus> = plans
        .iter()
        .map(|p| app_status(config, Some(p), &p.spec.name, &by_app, &hold_messages, opts))
        .collect();
    for name in unconfigured_app_dirs(state_dir, &plans)? {
        apps.push(app_status(
            config,
            None,
            &name,
            &by_app,
            &hold_messages,
            opts,
        ));
    }
    if opts.health {
        observe_health(&plans, &mut apps);
    }
    Ok(Status {
        schema: STATUS_SCHEMA,
        generated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        state_dir: state_dir.clone(),
        apps,
        pending_alerts: pending.len(),
    })
}

/// Directories under the state dir that hold an app's state or snapshot but match no plan.
pub fn unconfigured_app_dirs(state_dir: &Path, plans: &[AppPlan]) -> anyhow::Result<Vec<String>> {
    let rd = match std::fs::read_dir(state_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("listing the state dir {}", state_dir.display()));
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry =
            entry.with_context(|| format!("listing the state dir {}", state_dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == "alerts" || crate::config::names::check("app", &name).is_err() {
            continue;
        }
        let p = entry.path();
        let is_app = p.is_dir()
            && (p.join("state.json").exists()
                || p.join("snapshot").exists()
                || p.join("legacy-snapshot").exists());
        if is_app && !plans.iter().any(|pl| pl.spec.name == name) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn app_status(
    config: &Config,
    plan: Option<&AppPlan>,
    name: &str,
    pending: &BTreeMap<String, Vec<String>>,
    hold_messages: &BTreeMap<(String, String), String>,
    opts: Options,
) -> AppStatus {
    let app_dir = config.state_dir.join(name);
    let mut st = AppStatus {
        app: name.to_owned(),
        configured: plan.is_some(),
        recipe: plan.map(|p| p.spec.recipe.clone()),
        stack: plan.map(|p| p.stack.clone()),
        stateful: plan.map(|p| p.spec.stateful),
        deployed: None,
        last_good: None,
        health: HealthNow::NotChecked,
        nodes: Vec::new(),
        held: Vec::new(),
        canonical_hold: None,
        failed: Vec::new(),
        skipped_prerelease: Vec::new(),
        approvals: Vec::new(),
        intent: None,
        last_run: None,
        snapshot: None,
        pending_alerts: pending.get(name).cloned().unwrap_or_default(),
        insecure_probes: plan.map_or_else(Vec::new, |p| {
            p.probes
                .iter()
                .filter(|p| p.insecure)
                .map(|p| p.url.clone())
                .collect()
        }),
        error: None,
    };
    let state = match AppState::load(&app_dir) {
        Ok(s) => s,
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
    };
    st.deployed = state.deployed.clone();
    st.last_good = state.last_good.as_ref().map(ToString::to_string);
    st.held = held(&state, plan, name, hold_messages);
    st.failed = state
        .failed
        .iter()
        .map(|(v, f)| FailedVersion {
            version: v.clone(),
            at: f.at.clone(),
            reason: f.reason.clone(),
        })
        .collect();
    st.skipped_prerelease = state.skipped_prerelease.iter().cloned().collect();
    st.approvals = state.approvals.iter().cloned().collect();
    st.intent = state.intent.clone();
    st.last_run = state.last_run.clone();
    st.snapshot = snapshot_status(&snap::snapshot_dir(&app_dir), opts.verify);
    st
}

/// Holds that still stand: above last_good and not approved (by command or config).
fn held(
    state: &AppState,
    plan: Option<&AppPlan>,
    app: &str,
    messages: &BTreeMap<(String, String), String>,
) -> Vec<Held> {
    let approved = plan.map(|p| p.spec.approved.clone()).unwrap_or_default();
    state
        .standing_holds(&approved)
        .into_iter()
        .map(|h| Held {
            version: h.version.to_string(),
            reason: messages
                .get(&(app.to_owned(), h.key.clone()))
                .cloned()
                .unwrap_or_else(|| h.reason(state.last_good.as_ref())),
            kind: h.kind,
        })
        .collect()
}

/// The messages of hold alerts still on disk (new or seen), by (app, hold key).
fn hold_messages(state_dir: &Path) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let mut out = BTreeMap::new();
    for dir in [
        crate::upgrade::alert::alerts_dir(state_dir),
        relay::seen_dir(state_dir),
    ] {
        for f in relay::read_dir_alerts_where(&dir, |id| id.contains("-held-"))? {
            let a = f.alert;
            if matches!(a.kind, Kind::HeldMajor | Kind::HeldManualMigration)
                && let Some(v) = &a.attempted
            {
                out.insert(
                    (a.app.clone(), format!("{}:{v}", a.kind.as_str())),
                    a.message,
                );
            }
        }
    }
    Ok(out)
}

/// Size, age and integrity of a snapshot directory; `None` when there is none.
pub fn snapshot_status(dir: &Path, full: bool) -> Option<SnapshotStatus> {
    let manifest_path = dir.join(manifest::FILE);
    let meta = std::fs::metadata(&manifest_path).ok()?;
    let m = match Manifest::load(dir) {
        Ok(m) => m,
        Err(e) => {
            return Some(SnapshotStatus {
                path: dir.to_owned(),
                created: Some(meta.mtime().max(0) as u64),
                age_secs: age(meta.mtime().max(0) as u64),
                bytes: 0,
                files: 0,
                volumes: Vec::new(),
                verified: SnapshotCheck {
                    depth: "manifest",
                    ok: false,
                    problems: vec![e.to_string()],
                },
            });
        }
    };
    let created = m
        .created
        .parse::<u64>()
        .ok()
        .or_else(|| humantime::parse_rfc3339_weak(&m.created).ok().map(unix))
        .unwrap_or(meta.mtime().max(0) as u64);
    let (mut bytes, mut files) = (0u64, 0u64);
    for v in &m.volumes {
        for e in &v.entries {
            if e.kind == manifest::Kind::File && e.link_of.is_none() {
                bytes += e.size;
                files += 1;
            }
        }
    }
    let verified = if full {
        match ci_warm_snapshot::verify(dir) {
            Ok(r) => SnapshotCheck {
                depth: "full",
                ok: r.problems.is_empty(),
                problems: r.problems.iter().map(ToString::to_string).collect(),
            },
            Err(e) => SnapshotCheck {
                depth: "full",
                ok: false,
                problems: vec![e.to_string()],
            },
        }
    } else {
        let mut problems = Vec::new();
        if manifest::digest(&m.volumes) != m.digest {
            problems.push("the manifest's digest does not match its entries".to_owned());
        }
        for v in &m.volumes {
            let tree = dir.join(manifest::VOLUMES).join(&v.name);
            if !tree.is_dir() {
                problems.push(format!("volume tree {} is missing", tree.display()));
            }
        }
        SnapshotCheck {
            depth: "manifest",
            ok: problems.is_empty(),
            problems,
        }
    };
    Some(SnapshotStatus {
        path: dir.to_owned(),
        created: Some(created),
        age_secs: age(created),
        bytes,
        files,
        volumes: m.volumes.iter().map(|v| v.name.clone()).collect(),
        verified,
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn age(created: u64) -> Option<u64> {
    unix(SystemTime::now()).checked_sub(created)
}

/// One look at each configured app's stack and probes, all apps on one Docker connection.
fn observe_health(plans: &[AppPlan], apps: &mut [AppStatus]) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            for a in apps.iter_mut() {
                a.health = HealthNow::Unknown(format!("cannot start the async runtime: {e}"));
            }
            return;
        }
    };
    rt.block_on(async {
        let engine = match crate::platform::docker::Engine::connect().await {
            Ok(e) => e,
            Err(e) => {
                for a in apps.iter_mut() {
                    a.health = HealthNow::Unknown(format!("Docker is unreachable: {e}"));
                }
                return;
            }
        };
        use crate::platform::docker::SwarmView;
        // Where the data lives (this engine's node) and what the nodes are called: without
        // them the placement check and the node column are left out, not the health.
        let home = engine.local_node().await.ok().map(|l| l.node);
        let nodes = engine.nodes().await.unwrap_or_default();
        for a in apps.iter_mut() {
            let Some(plan) = plans.iter().find(|p| p.spec.name == a.app) else {
                continue;
            };
            let home = home.as_ref().filter(|_| plan.spec.stateful);
            (a.health, a.nodes) = match &a.deployed {
                None => (
                    HealthNow::Unknown("never deployed by ci-warm".to_owned()),
                    Vec::new(),
                ),
                Some(deployed) => health_of(&engine, plan, deployed, home, &nodes).await,
            };
        }
    });
}

/// The app's health now, and the hostnames of the nodes its live tasks run on.
async fn health_of(
    engine: &crate::platform::docker::Engine,
    plan: &AppPlan,
    deployed: &str,
    home: Option<&NodeObs>,
    nodes: &[NodeObs],
) -> (HealthNow, Vec<String>) {
    use crate::platform::docker::SwarmView;
    let revision = if deployed.parse::<Version>().is_ok() {
        Revision::Version(deployed.to_owned())
    } else {
        Revision::Chaos(deployed.to_owned())
    };
    let expected = Expected {
        stack: plan.stack.clone(),
        revision,
        home: home.cloned(),
    };
    let services = match engine.services(&plan.stack).await {
        Ok(s) => s,
        Err(e) => {
            return (
                HealthNow::Unknown(format!("observing stack {}: {e}", plan.stack)),
                Vec::new(),
            );
        }
    };
    let mut on: Vec<String> = services
        .iter()
        .flat_map(|s| &s.tasks)
        .filter(|t| t.desired_state == TaskState::Running && !t.state.is_terminal())
        .filter_map(|t| t.node_id.as_deref())
        .map(|id| {
            nodes
                .iter()
                .find(|n| n.id == id)
                .map_or_else(|| id.to_owned(), |n| n.hostname.clone())
        })
        .collect();
    on.sort();
    on.dedup();
    let mut results = Vec::new();
    for p in &plan.probes {
        let probe = Prepared::new(&HttpProbe::from(p), Duration::from_secs(5));
        results.push(probe.run().await);
    }
    let health = match health::decide_on_nodes(&expected, &services, nodes, &results) {
        Verdict::Healthy => HealthNow::Healthy,
        Verdict::Unhealthy { reason } => HealthNow::Unhealthy(reason),
    };
    (health, on)
}

/// `5s`, `3m`, `2h`, `4d`: a compact age for the table.
pub fn short_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `1.5 GiB` style sizes for the table.
pub fn short_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::state::Failure;

    fn config(state_dir: &Path) -> Config {
        let json = serde_json::json!({
            "state_dir": state_dir,
            "apps": {"demo": {"recipe": "demo", "domain": "demo.example.org"}},
        });
        Config::parse(Path::new("test.json"), &json.to_string()).unwrap()
    }

    #[test]
    fn reports_state_holds_failures_snapshot_and_alerts() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path());
        let app_dir = d.path().join("demo");
        let mut s = AppState::load(&app_dir).unwrap();
        s.last_good = Some("1.1.0+1.0.0".parse().unwrap());
        s.deployed = Some("1.1.0+1.0.0".into());
        s.alerted_holds.insert("held-major:2.0.0+2.0.0".into());
        s.alerted_holds.insert("held-major:1.0.5+1.0.0".into()); // superseded
        s.alerted_holds
            .insert("held-manual-migration:1.3.0+1.1.0".into());
        s.approvals.insert("1.3.0+1.1.0".into()); // approved: no longer held
        s.failed.insert(
            "1.2.0+1.0.0".into(),
            Failure {
                at: "2026-11-22T00:00:00Z".into(),
                reason: "probe failed".into(),
            },
        );
        s.save(&app_dir).unwrap();
        crate::upgrade::alert::publish(
            d.path(),
            Kind::HeldMajor,
            crate::upgrade::alert::NewAlert {
                app: "demo".into(),
                message: "demo 2.0.0+2.0.0 is held (major bump from 1.1.0+1.0.0)".into(),
                attempted: Some("2.0.0+2.0.0".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), vec![7u8; 1000]).unwrap();
        std::fs::write(src.path().join("b"), vec![8u8; 24]).unwrap();
        std::fs::hard_link(src.path().join("a"), src.path().join("a2")).unwrap();
        snap::take(
            &app_dir,
            &[("data".into(), src.path().to_owned())],
            snap::Reserve {
                bytes: 0,
                percent: 0,
            },
        )
        .unwrap();
        // Left behind by a removed app: reported as unconfigured.
        AppState::load(&d.path().join("old"))
            .unwrap()
            .save(&d.path().join("old"))
            .unwrap();

        let st = collect(&cfg, Options::default()).unwrap();
        assert_eq!(st.pending_alerts, 1);
        assert_eq!(st.apps.len(), 2);
        let a = &st.apps[0];
        assert_eq!(a.app, "demo");
        assert!(a.configured);
        assert_eq!(a.last_good.as_deref(), Some("1.1.0+1.0.0"));
        assert_eq!(a.held.len(), 1, "{:?}", a.held);
        assert_eq!(a.held[0].version, "2.0.0+2.0.0");
        assert!(a.held[0].reason.contains("major bump from"));
        assert_eq!(a.failed[0].version, "1.2.0+1.0.0");
        assert_eq!(a.pending_alerts.len(), 1);
        assert_eq!(a.health, HealthNow::NotChecked);
        let sn = a.snapshot.as_ref().unwrap();
        assert_eq!((sn.bytes, sn.files), (1024, 2), "a hardlink counts once");
        assert!(sn.verified.ok && sn.verified.depth == "manifest");
        assert!(sn.age_secs.unwrap() < 60);
        assert_eq!(st.apps[1].app, "old");
        assert!(!st.apps[1].configured);

        let full = collect(
            &cfg,
            Options {
                health: false,
                verify: true,
            },
        )
        .unwrap();
        let v = &full.apps[0].snapshot.as_ref().unwrap().verified;
        assert!(v.ok && v.depth == "full");
        let snap_file = app_dir.join("snapshot/volumes/data/b");
        std::fs::write(&snap_file, vec![9u8; 24]).unwrap();
        let bad = collect(
            &cfg,
            Options {
                health: false,
                verify: true,
            },
        )
        .unwrap();
        assert!(!bad.apps[0].snapshot.as_ref().unwrap().verified.ok);
    }

    #[test]
    fn corrupt_state_is_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path());
        std::fs::create_dir_all(d.path().join("demo")).unwrap();
        std::fs::write(d.path().join("demo/state.json"), b"{").unwrap();
        let st = collect(&cfg, Options::default()).unwrap();
        assert!(st.apps[0].error.as_deref().unwrap().contains("corrupt"));
    }

    #[test]
    fn short_formats() {
        assert_eq!(short_age(5), "5s");
        assert_eq!(short_age(600), "10m");
        assert_eq!(short_bytes(1536), "1.5 KiB");
        assert_eq!(short_bytes(12), "12 B");
    }
}
