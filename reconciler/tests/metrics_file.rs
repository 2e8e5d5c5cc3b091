//! The metrics file, written from a real state dir (state, run counters, a real snapshot,
//! alerts), parsed back with a Prometheus text-format parser.

use std::collections::HashMap;
use std::path::Path;

use ci_warm::config::Config;
use ci_warm::ops::metrics::{self, RunFact};
use ci_warm::upgrade::alert::{self, Kind, NewAlert};
use ci_warm::upgrade::state::{AppState, RunRecord};
use prometheus_parse::{Scrape, Value};

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn metrics_file_parses_and_carries_runs_snapshot_holds_and_disk() {
    let d = tempfile::tempdir().unwrap();
    let state_dir = d.path().join("state");
    let json = serde_json::json!({
        "state_dir": state_dir,
        "disk": {"docker_root": d.path().join("docker")},
        "apps": {
            "demo": {"recipe": "demo", "domain": "demo.example.org"},
            "proxy": {"recipe": "traefik", "preset": "traefik", "domain": "proxy.example.org"},
        },
    });
    let config = Config::parse(Path::new("config.json"), &json.to_string()).unwrap();

    let app_dir = state_dir.join("demo");
    let mut st = AppState::load(&app_dir).unwrap();
    st.last_good = Some("1.1.0+1.0.0".parse().unwrap());
    st.deployed = Some("1.1.0+1.0.0".into());
    st.alerted_holds.insert("held-major:2.0.0+2.0.0".into());
    st.last_run = Some(RunRecord {
        at: "2026-11-23T10:00:00Z".into(),
        outcome: "held".into(),
        detail: "held; stays on 1.1.0+1.0.0".into(),
    });
    st.save(&app_dir).unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), vec![0u8; 5000]).unwrap();
    ci_warm::live::snap::take(
        &app_dir,
        &[("data".into(), src.clone())],
        ci_warm::live::snap::Reserve {
            bytes: 0,
            percent: 0,
        },
    )
    .unwrap();
    alert::publish(
        &state_dir,
        Kind::HeldMajor,
        NewAlert {
            app: "demo".into(),
            message: "held".into(),
            attempted: Some("2.0.0+2.0.0".into()),
            ..NewAlert::default()
        },
    )
    .unwrap();

    let snapshot = ci_warm_snapshot::Summary {
        millis: 1500,
        bytes_copied: 5000,
        ..Default::default()
    };
    let fact = |app: &str, outcome: &str, exit: u8, snap: bool| RunFact {
        app: app.into(),
        outcome: outcome.into(),
        exit,
        snapshot: snap.then(|| snapshot.clone()),
    };
    let out = d.path().join("textfile/ci-warm.prom");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    metrics::after_reconcile(
        &config,
        Some(&out),
        &[
            fact("demo", "upgraded", 0, true),
            fact("proxy", "rolled-back", 4, false),
        ],
    );
    metrics::after_reconcile(
        &config,
        Some(&out),
        &[
            fact("demo", "held", 0, false),
            fact("proxy", "busy", 75, false),
        ],
    );

    let text = std::fs::read_to_string(&out).unwrap();
    eprintln!("{text}");
    assert!(text.ends_with('\n'));
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "every sample line parsed"
    );
    for s in &scrape.samples {
        assert!(s.metric.starts_with("ci_warm_"), "prefixed: {}", s.metric);
        assert!(scrape.docs.contains_key(&s.metric), "{} has HELP", s.metric);
        assert!(
            !matches!(s.value, Value::Untyped(_)),
            "{} has TYPE",
            s.metric
        );
        if s.metric.ends_with("_total") {
            assert!(matches!(s.value, Value::Counter(_)), "{}", s.metric);
        }
    }
    // Prometheus naming: snake case, counters and only counters end in `_total`, base units
    // (seconds, bytes) as the last word, never a scaled unit or a percentage.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line["# TYPE ".len()..].split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        for unit in ["seconds", "bytes"] {
            if name.contains(unit) {
                let base = name.strip_suffix("_total").unwrap_or(name);
                assert!(base.ends_with(&format!("_{unit}")), "unit last: {name}");
            }
        }
        for scaled in [
            "millis", "_ms", "minutes", "hours", "days", "kib", "mib", "gib", "kb", "mb", "gb",
            "percent", "ratio_",
        ] {
            assert!(!name.contains(scaled), "base units only: {name}");
        }
    }
    let get = |metric: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| value(&s.value))
    };
    let demo = [("app", "demo")];
    let proxy = [("app", "proxy")];
    assert_eq!(get("ci_warm_upgrades_total", &demo), Some(1.0));
    assert_eq!(get("ci_warm_rollbacks_total", &proxy), Some(1.0));
    assert_eq!(get("ci_warm_rollbacks_total", &demo), Some(0.0));
    assert_eq!(
        get(
            "ci_warm_runs_total",
            &[("app", "demo"), ("outcome", "held")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "ci_warm_runs_total",
            &[("app", "proxy"), ("outcome", "busy")]
        ),
        None,
        "a busy run did nothing and is not counted"
    );
    assert_eq!(get("ci_warm_last_run_exit_code", &demo), Some(0.0));
    assert_eq!(get("ci_warm_last_run_success", &proxy), Some(0.0));
    assert_eq!(
        get(
            "ci_warm_last_run_outcome",
            &[("app", "proxy"), ("outcome", "rolled-back")]
        ),
        Some(1.0)
    );
    assert!(get("ci_warm_last_run_timestamp_seconds", &demo).unwrap() > 1.7e9);
    assert_eq!(get("ci_warm_held_versions", &demo), Some(1.0));
    assert_eq!(get("ci_warm_snapshot_size_bytes", &demo), Some(5000.0));
    assert_eq!(get("ci_warm_snapshot_duration_seconds", &demo), Some(1.5));
    assert_eq!(get("ci_warm_snapshot_manifest_ok", &demo), Some(1.0));
    assert_eq!(get("ci_warm_pending_alerts", &demo), Some(1.0));
    assert_eq!(
        get(
            "ci_warm_app_info",
            &[
                ("app", "demo"),
                ("last_good", "1.1.0+1.0.0"),
                ("recipe", "demo")
            ]
        ),
        Some(1.0)
    );
    let state_path = state_dir.to_string_lossy().into_owned();
    assert!(get("ci_warm_filesystem_free_bytes", &[("path", &state_path)]).unwrap() > 0.0);
    assert!(get("ci_warm_filesystem_size_bytes", &[("path", &state_path)]).unwrap() > 0.0);
    let names: HashMap<&str, ()> = scrape
        .samples
        .iter()
        .map(|s| (s.metric.as_str(), ()))
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("ci-warm.prom")]);
}
