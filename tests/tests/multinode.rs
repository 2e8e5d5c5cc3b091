//! ci-warm on a real two-node swarm (a throw-away one, `ci_warm_tests::multinode`): warm data
//! never silently moves to a node that does not hold it (issue #18).

use ci_warm_tests::multinode::{PREFIX, Swarm};

/// The harness itself: two Ready nodes, and nothing of them left after the drop.
#[test]
fn harness_starts_two_nodes_and_leaves_nothing_behind() {
    let Some(swarm) = Swarm::require(2) else {
        return;
    };
    let nodes = swarm
        .manager()
        .docker_out(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
        .expect("node ls");
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    let root = swarm.root.clone();
    let id = swarm.id.clone();
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
}
