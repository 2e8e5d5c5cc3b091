//! The abra deployer against a fake `abra` that records its argv: the exact command lines for
//! deploy and chaos deploy, an undeploy of what the engine shows undeployed (no call), and how
//! failures are reported (the FATA line).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ci_warm::platform::deploy::abra::AbraDeployer;
use ci_warm::platform::deploy::{DeployError, DeployTarget, Deployer, Revision, placement};
use ci_warm::platform::docker::{
    BoxFuture, ContainerObs, DockerError, NetworkObs, ServiceObs, SwarmJanitor, SwarmView,
    VolumeObs,
};

/// A swarm in which the stack is already gone; counts how often the undeploy wait looked.
#[derive(Default)]
struct EmptySwarm {
    looks: AtomicUsize,
}

impl SwarmView for EmptySwarm {
    fn services<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<ServiceObs>, DockerError>> {
        self.looks.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(vec![]) })
    }
    fn volumes<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<VolumeObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn containers_using<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn stack_containers<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn networks<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<NetworkObs>, DockerError>> {
        Box::pin(async { Ok(vec![]) })
    }
}

impl SwarmJanitor for EmptySwarm {
    fn remove_stopped_container<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async { Ok(()) })
    }
    fn remove_network<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Writes a fake abra that appends one line per invocation (its args joined by `|`) to `log`,
/// prints `output`, and exits with `code`.
fn fake_abra(dir: &Path, log: &Path, output: &str, code: i32) -> PathBuf {
    let path = dir.join("abra");
    let script = format!(
        "#!/bin/sh\n\
         line=''\n\
         for a in \"$@\"; do line=\"$line|$a\"; done\n\
         printf '%s\\n' \"${{line#|}}\" >> '{}'\n\
         echo '{output}'\n\
         exit {code}\n",
        log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn target(dir: &Path, revision: Revision) -> DeployTarget {
    std::fs::write(dir.join("compose.yml"), "services:\n  app:\n    image: x\n").unwrap();
    std::fs::write(
        dir.join("demo.ci.example.org.env"),
        "TYPE=demo\nCOMPOSE_FILE=compose.yml\n",
    )
    .unwrap();
    DeployTarget {
        app: "demo".into(),
        domain: "demo.ci.example.org".into(),
        stack: "demo_ci_example_org".into(),
        checkout: dir.to_owned(),
        env_file: dir.join("demo.ci.example.org.env"),
        revision,
        pin: None,
    }
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn deploy_chaos_deploy_and_undeploy_run_the_exact_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv.log");
    let abra = fake_abra(dir.path(), &log, "ok", 0);
    let swarm = Arc::new(EmptySwarm::default());
    let deployer = AbraDeployer::new(swarm.clone(), abra);

    deployer
        .deploy(&target(dir.path(), Revision::Version("1.1.0+1.0.0".into())))
        .await
        .unwrap();
    deployer
        .deploy(&target(dir.path(), Revision::Chaos("0123abcd".into())))
        .await
        .unwrap();
    let before = swarm.looks.load(Ordering::SeqCst);
    // Not deployed (the engine shows no service): nothing asked of abra, the wait still runs.
    deployer
        .undeploy(&target(dir.path(), Revision::Version("1.1.0+1.0.0".into())))
        .await
        .unwrap();

    assert_eq!(
        log_lines(&log),
        [
            "app|deploy|demo.ci.example.org|1.1.0+1.0.0|-n|-o|-c",
            "app|deploy|demo.ci.example.org|-C|-n|-o|-c",
        ]
    );
    assert!(
        swarm.looks.load(Ordering::SeqCst) > before,
        "undeploy waits on the engine until the stack is gone"
    );
}

#[tokio::test]
async fn extra_deploy_args_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv.log");
    let abra = fake_abra(dir.path(), &log, "ok", 0);
    let mut deployer = AbraDeployer::new(Arc::new(EmptySwarm::default()), abra);
    deployer.extra_deploy_args = vec!["--no-domain-checks".into()];
    deployer
        .deploy(&target(dir.path(), Revision::Version("2.0.0+2.0".into())))
        .await
        .unwrap();
    assert_eq!(
        log_lines(&log),
        ["app|deploy|demo.ci.example.org|2.0.0+2.0|-n|-o|-c|--no-domain-checks"]
    );
}

#[tokio::test]
async fn a_failing_abra_is_an_error_naming_the_app_the_command_and_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv.log");
    let abra = fake_abra(
        dir.path(),
        &log,
        "FATA unable to deploy: image not found",
        1,
    );
    let swarm = Arc::new(EmptySwarm::default());
    let deployer = AbraDeployer::new(swarm.clone(), abra.clone());
    let err = deployer
        .deploy(&target(dir.path(), Revision::Version("9.9.9+1".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, DeployError::Abra { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("app demo"), "{msg}");
    assert!(
        msg.contains(&format!(
            "{} app deploy demo.ci.example.org 9.9.9+1",
            abra.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("FATA unable to deploy: image not found"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_abra_says_which_executable() {
    let dir = tempfile::tempdir().unwrap();
    let deployer = AbraDeployer::new(
        Arc::new(EmptySwarm::default()),
        dir.path().join("no-such-abra"),
    );
    let err = deployer
        .deploy(&target(dir.path(), Revision::Version("1.0.0+1".into())))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-abra") && msg.contains("app demo"),
        "{msg}"
    );
}

/// A stateful app's pin reaches abra the only way abra takes compose files: an entry in the env
/// file's `COMPOSE_FILE` naming an override outside the recipe tree (a non-chaos deploy refuses
/// untracked files in it). The recipe's own files are kept, a redeploy does not stack entries,
/// and an unpinned deploy drops the entry.
#[tokio::test]
async fn a_pinned_deploy_names_the_override_in_compose_file_outside_the_recipe_tree() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv.log");
    let abra = fake_abra(dir.path(), &log, "ok", 0);
    let deployer = AbraDeployer::new(Arc::new(EmptySwarm::default()), abra);
    let checkout = dir.path().join("abra-dir/recipes/demo");
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::write(
        checkout.join("compose.yml"),
        "services:\n  app:\n    image: x\n  db:\n    image: y\n",
    )
    .unwrap();
    std::fs::write(
        checkout.join("compose.smtp.yml"),
        "services:\n  app:\n    environment: [A=1]\n",
    )
    .unwrap();
    let env_file = dir.path().join("demo.ci.example.org.env");
    std::fs::write(
        &env_file,
        "TYPE=demo\nCOMPOSE_FILE=compose.yml:compose.smtp.yml\n",
    )
    .unwrap();
    let override_file = dir.path().join("state/demo").join(placement::OVERRIDE_NAME);
    let mut target = DeployTarget {
        app: "demo".into(),
        domain: "demo.ci.example.org".into(),
        stack: "demo_ci_example_org".into(),
        checkout: checkout.clone(),
        env_file: env_file.clone(),
        revision: Revision::Version("1.1.0+1.0.0".into()),
        pin: Some(placement::Pin {
            node_id: "n0de1d".into(),
            hostname: "ci1".into(),
            file: override_file.clone(),
        }),
    };
    let compose_file = || {
        std::fs::read_to_string(&env_file)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("COMPOSE_FILE=").map(str::to_owned))
            .unwrap()
    };
    for _ in 0..2 {
        deployer.deploy(&target).await.unwrap();
        let value = compose_file();
        let files: Vec<&str> = value.split(':').collect();
        assert_eq!(files.len(), 3, "{value}");
        assert_eq!(files[..2], ["compose.yml", "compose.smtp.yml"]);
        assert_eq!(
            std::fs::canonicalize(checkout.join(files[2])).unwrap(),
            std::fs::canonicalize(&override_file).unwrap(),
            "the entry names the override from the recipe tree"
        );
    }
    let o = std::fs::read_to_string(&override_file).unwrap();
    assert_eq!(
        o.matches("node.id==n0de1d").count(),
        2,
        "app and db pinned: {o}"
    );
    let mut in_tree: Vec<String> = std::fs::read_dir(&checkout)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_tree.sort();
    assert_eq!(
        in_tree,
        ["compose.smtp.yml", "compose.yml"],
        "nothing untracked added"
    );

    target.pin = None;
    deployer.deploy(&target).await.unwrap();
    assert_eq!(compose_file(), "compose.yml:compose.smtp.yml");
}
