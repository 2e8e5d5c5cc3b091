//! ci-warm on a real two-node swarm (a throw-away one, `ci_warm_tests::multinode`): warm data
//! never silently moves to a node that does not hold it (issue #18).
//!
//! ci-warm runs as on a CI host: on the manager node (its `DOCKER_HOST` is that daemon's socket,
//! its probes reach the node's host-mode ports from inside the node's network namespace), and
//! reads the volumes' mountpoints under that daemon's data root through the Docker API.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use ci_warm_tests::both_deployers;
use ci_warm_tests::deployers::Kind;
use ci_warm_tests::multinode::{Node, PREFIX, Swarm};
use ci_warm_tests::recipe::{self, DemoRecipe, Release};
use ci_warm_tests::stack::TestStack;
use ci_warm_tests::state_files;
use ci_warm_tests::{ci_warm_bin, images};

const V100: &str = "1.0.0+1.0.0";
const V110: &str = "1.1.0+1.0.0";
const MARKER: &str = "created by 1.0.0+1.0.0\n";
/// Generous: the machine is shared with other builds and swarm tests.
const DEADLINE: Duration = Duration::from_secs(180);

struct World {
    // Field order is drop order: the test's files go before the swarm is torn down.
    st: TestStack,
    recipe: DemoRecipe,
    config: PathBuf,
    state_dir: PathBuf,
    swarm: Swarm,
}

impl World {
    fn new(kind: Kind, test: &str, upto: &str) -> Option<World> {
        let swarm = Swarm::require(2)?;
        images::ensure_images().expect("demo images");
        // The releases these tests deploy all run the 1.0.0 image.
        let tags = [images::image("1.0.0")];
        swarm
            .load_images(&tags)
            .expect("loading the demo images into the nodes");
        let st = TestStack::new(test);
        let recipe =
            DemoRecipe::with_catalogue(&st.path().join("recipe"), Some(upto)).expect("demo recipe");
        let state_dir = st.path().join("state");
        let config = st.path().join("config.json");
        let probes = serde_json::json!([{"url": format!("http://127.0.0.1:{}/health", st.port)}]);
        let app = kind.demo_app(&st, &recipe.url(), true, V100, probes, &[]);
        let json = serde_json::json!({
            "state_dir": state_dir,
            "deployer": kind.deployer(&st),
            "health": {"timeout_secs": 20, "interval_ms": 500},
            "snapshot": {"reserve_bytes": 0, "reserve_percent": 0},
            "apps": {"demo": app},
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&json).expect("json")).expect("config");
        Some(World {
            st,
            recipe,
            config,
            state_dir,
            swarm,
        })
    }

    fn manager(&self) -> &Node {
        self.swarm.manager()
    }

    fn worker(&self) -> &Node {
        self.swarm.worker()
    }

    /// `ci-warm ARGS` on the manager node.
    fn ci_warm(&self, args: &[&str]) -> Output {
        let out = self
            .manager()
            .command_in_netns(&ci_warm_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running ci-warm");
        ci_warm_tests::echoed(args, out)
    }

    fn reconcile(&self) -> i32 {
        self.ci_warm(&["reconcile", "demo"])
            .status
            .code()
            .unwrap_or(-1)
    }

    fn state(&self) -> Value {
        state_files::app_state(&self.state_dir, "demo")
    }

    fn last_good(&self) -> String {
        self.state()["last_good"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn alerts(&self) -> Vec<Value> {
        state_files::alerts(&self.state_dir)
    }

    /// The data volume's directory on the manager, from its daemon (under its data root).
    fn volume_dir(&self) -> PathBuf {
        let p = self
            .manager()
            .docker_out(&[
                "volume",
                "inspect",
                "-f",
                "{{.Mountpoint}}",
                &format!("{}_data", self.st.name),
            ])
            .expect("the data volume is on the manager");
        let p = PathBuf::from(p);
        assert!(
            p.starts_with(self.manager().data_root()),
            "{} is under the manager's data root",
            p.display()
        );
        p
    }

    fn volume_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.volume_dir().join(name)).ok()
    }

    /// Whether a node holds any volume of the stack.
    fn has_volume(&self, node: &Node) -> bool {
        node.docker_out(&["volume", "ls", "-q"])
            .expect("volume ls")
            .lines()
            .any(|v| v.starts_with(&self.st.name))
    }

    /// `(task id, node hostname)` of the app service's running tasks, as the manager sees them.
    fn app_tasks(&self) -> Vec<(String, String)> {
        let out = self
            .manager()
            .docker_out(&[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.ID}} {{.Node}} {{.CurrentState}}",
                &format!("{}_app", self.st.name),
            ])
            .expect("service ps");
        out.lines()
            .filter(|l| l.contains("Running"))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    }

    /// Waits until the app service runs exactly one task and returns it.
    fn running_task(&self) -> (String, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let tasks = self.app_tasks();
            if let [one] = tasks.as_slice() {
                return one.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the app never ran one task: {tasks:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The app service's placement constraints.
    fn constraints(&self) -> String {
        self.manager()
            .docker_out(&[
                "service",
                "inspect",
                "-f",
                "{{json .Spec.TaskTemplate.Placement.Constraints}}",
                &format!("{}_app", self.st.name),
            ])
            .expect("service inspect")
    }

    fn status(&self) -> Value {
        let out = self.ci_warm(&["--json", "status"]);
        assert!(out.status.success(), "status");
        serde_json::from_slice(&out.stdout).expect("status --json")
    }
}

fn hostname(node: &Node) -> String {
    node.docker_out(&["info", "--format", "{{.Name}}"])
        .expect("docker info")
}

/// A release whose compose file forces the app service onto `node` (a hostname).
fn forced_onto(node: &str) -> (Release, String) {
    let release = Release::new(
        "1.2.0+1.0.0",
        "1.0.0",
        "ok",
        &format!("Runs on {node} only.\n"),
    );
    let compose = recipe::compose(&release).replacen(
        "    deploy:\n      endpoint_mode: dnsrr\n",
        &format!(
            "    deploy:\n      endpoint_mode: dnsrr\n      placement:\n        constraints:\n          - node.hostname == {node}\n"
        ),
        1,
    );
    assert!(compose.contains("placement"), "the app service is forced");
    (release, compose)
}

both_deployers!(upgrade_lands_home_and_a_release_forced_away_is_rolled_back_with_its_data => upgrade_and_forced_release_stack, upgrade_and_forced_release_abra);

/// One swarm, two scenarios (a swarm costs seconds to start and stop): a stateful upgrade lands
/// on ci-warm's node with its data; then a release whose compose file forces the app onto the
/// worker is refused by the gate and rolled back with its data, never having started there.
async fn upgrade_lands_home_and_a_release_forced_away_is_rolled_back_with_its_data(kind: Kind) {
    let Some(w) = World::new(kind, "mn_upgrade", V110) else {
        return;
    };
    let home = hostname(w.manager());
    let away = hostname(w.worker());
    let home_id = w.manager().node_id().expect("node id");
    assert_eq!(w.reconcile(), 0, "bootstrap");
    assert_eq!(w.running_task().1, home, "bootstrapped on ci-warm's node");
    assert!(
        w.constraints().contains(&format!("node.id=={home_id}")),
        "pinned: {}",
        w.constraints()
    );
    assert_eq!(w.reconcile(), 0, "upgrade");
    assert_eq!(w.last_good(), V110);
    assert_eq!(w.running_task().1, home, "upgraded on ci-warm's node");
    assert_eq!(
        w.volume_file("marker").as_deref(),
        Some(MARKER),
        "data kept"
    );
    let status = w.status();
    assert_eq!(status["apps"][0]["nodes"], serde_json::json!([home]));
    assert_eq!(status["apps"][0]["health"]["state"], "healthy");

    std::fs::write(w.volume_dir().join("precious"), "warm data\n").expect("write data");
    let (release, compose) = forced_onto(&away);
    w.recipe
        .publish_files(
            &release.tag,
            &[
                ("compose.yml", &compose),
                (&format!("release/{}", release.tag), &release.notes),
            ],
            true,
        )
        .expect("publish");
    assert_eq!(
        w.reconcile(),
        4,
        "refused by the gate, rolled back, recovered"
    );
    assert_eq!(w.last_good(), V110);
    let alerts = w.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "rolled-back");
    assert_eq!(alerts[0]["recovered"], true);
    assert_eq!(alerts[0]["attempted"], release.tag);
    assert!(
        alerts[0]["error"][0]
            .as_str()
            .unwrap_or_default()
            .contains("scheduling constraints not satisfied"),
        "the gate says why: {}",
        alerts[0]["error"]
    );
    assert_eq!(w.running_task().1, home, "back on ci-warm's node");
    assert_eq!(
        w.volume_file("precious").as_deref(),
        Some("warm data\n"),
        "the data came back with the version"
    );
    assert!(
        !w.has_volume(w.worker()),
        "the app never started on an empty volume on the worker"
    );
}

/// One swarm, three scenarios: draining the worker leaves the warm app alone; an app moved to
/// the worker by hand is flagged by `status` (the gate's placement check) naming the service and
/// both nodes; a snapshot/restore round trip on the manager's data while the worker exists. Then the
/// swarm is torn down and nothing of it may be left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_move_by_hand_and_snapshot_round_trip_with_a_worker() {
    let Some(w) = World::new(Kind::Stack, "mn_drain", V100) else {
        return;
    };
    let home = hostname(w.manager());
    let away = hostname(w.worker());
    let home_id = w.manager().node_id().expect("node id");
    assert_eq!(w.reconcile(), 0, "bootstrap");
    let before = w.running_task();
    w.manager()
        .docker_out(&["node", "update", "--availability", "drain", &away])
        .expect("drain");
    assert_eq!(w.reconcile(), 0, "nothing to do");
    assert_eq!(w.running_task(), before, "the same task runs on, untouched");
    w.manager()
        .docker_out(&["node", "update", "--availability", "active", &away])
        .expect("activate");

    // The app moved off ci-warm's node by hand.
    let service = format!("{}_app", w.st.name);
    w.manager()
        .docker_out(&[
            "service",
            "update",
            "--detach",
            "--constraint-rm",
            &format!("node.id=={home_id}"),
            "--constraint-add",
            &format!("node.hostname=={away}"),
            &service,
        ])
        .expect("service update");
    let deadline = Instant::now() + DEADLINE;
    let reason = loop {
        let s = w.status();
        let app = &s["apps"][0];
        if app["nodes"] == serde_json::json!([away]) && app["health"]["state"] == "unhealthy" {
            break app["health"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        assert!(Instant::now() < deadline, "never seen on the worker: {app}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        reason.contains(&format!("service {service} runs on node {away}"))
            && reason.contains(&format!("is on node {home}")),
        "the reason names the service and both nodes: {reason}"
    );

    // A snapshot/restore round trip on the manager's data root (the worker holds no copy).
    let dir = w.volume_dir();
    std::fs::write(dir.join("precious"), "warm data\n").expect("write data");
    w.manager()
        .docker_out(&["stack", "rm", &w.st.name])
        .expect("stack rm");
    wait_unused(w.manager(), &format!("{}_data", w.st.name));
    assert!(w.ci_warm(&["snapshot", "take", "demo"]).status.success());
    std::fs::write(dir.join("precious"), "overwritten\n").expect("clobber");
    std::fs::remove_file(dir.join("marker")).expect("remove marker");
    assert!(w.ci_warm(&["snapshot", "restore", "demo"]).status.success());
    assert_eq!(w.volume_file("precious").as_deref(), Some("warm data\n"));
    assert_eq!(w.volume_file("marker").as_deref(), Some(MARKER));

    // Teardown leaves nothing: data roots, namespaces, cgroups.
    let World { swarm, st, .. } = w;
    drop(st);
    let (root, id) = (swarm.root.clone(), swarm.id.clone());
    drop(swarm);
    assert!(!root.exists(), "data roots removed");
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !netns.contains(&format!("{PREFIX}-{id}-")),
        "namespaces removed: {netns}"
    );
    for n in ["n1", "n2"] {
        assert!(!Path::new(&format!("/sys/fs/cgroup/pids/{PREFIX}-{id}-{n}")).exists());
    }
}

/// Waits until no container on the node uses the volume (`stack rm` returns before that).
fn wait_unused(node: &Node, volume: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let users = node
            .docker_out(&["ps", "-aq", "--filter", &format!("volume={volume}")])
            .expect("docker ps");
        if users.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{volume} stays in use");
        std::thread::sleep(Duration::from_millis(200));
    }
}
