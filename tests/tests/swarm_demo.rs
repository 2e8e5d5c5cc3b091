//! The foundation on the real swarm: the demo recipe's first version deploys with
//! `docker stack deploy`, converges (the app healthy, the one-shot job complete), carries its
//! version label, and keeps its marker in a volume found through the Docker API; the guard
//! leaves nothing behind.

use std::time::{Duration, Instant};

use ci_warm_tests::docker::{self, require_docker};
use ci_warm_tests::images;
use ci_warm_tests::recipe::DemoRecipe;
use ci_warm_tests::stack::TestStack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_recipe_deploys_converges_and_keeps_its_marker() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let start = Instant::now();
    // Blocking (cargo, docker import): off the async workers.
    tokio::task::spawn_blocking(images::ensure_images)
        .await
        .expect("image task")
        .expect("demo images");
    let images_took = start.elapsed();
    let name;
    {
        let st = TestStack::new("swarm_demo");
        name = st.name.clone();
        let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some("1.0.0+1.0.0"))
            .expect("demo recipe");
        st.deploy(&recipe.dir).expect("stack deploy");

        let state = st
            .wait_converged(&docker, Duration::from_secs(180))
            .await
            .expect("converged");
        let names: Vec<&str> = state.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [format!("{name}_app"), format!("{name}_migrate")],
            "{state:?}"
        );
        assert!(state[1].one_shot && state[1].complete >= 1, "{state:?}");
        let converged_after = start.elapsed();

        assert_eq!(
            st.deployed_version(&docker)
                .await
                .expect("labels")
                .as_deref(),
            Some("1.0.0+1.0.0")
        );

        let data = st.volume_dir(&docker, "data").await.expect("data volume");
        let marker = std::fs::read_to_string(data.join("marker")).expect("marker in the volume");
        assert!(marker.contains("1.0.0"), "marker: {marker:?}");
        let log = std::fs::read_to_string(data.join("versions.log")).expect("versions.log");
        assert_eq!(log, "1.0.0+1.0.0\n");

        // A task that swarm reports running may not listen yet: poll the first request.
        let body = st
            .wait_for("/health", 200, Duration::from_secs(20))
            .expect("GET /health");
        assert_eq!(body, "ok\n");
        let (status, body) = st.get("/marker").expect("GET /marker");
        assert_eq!((status, body.as_str()), (200, marker.as_str()));
        eprintln!(
            "timing: images {images_took:?}, deployed and converged {:?}",
            converged_after - images_took
        );
    }
    // The guard dropped: the stack, its containers, volumes and networks are gone.
    let left = docker::stack_leftovers(&docker, &name)
        .await
        .expect("leftovers");
    assert!(left.is_empty(), "stack {name} left {left:?} behind");
    eprintln!("timing: total {:?} (incl. removal)", start.elapsed());
}

/// The guard also cleans up when the test body panics half-way through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_cleans_up_after_a_panic() {
    let Some(docker) = require_docker().await else {
        return;
    };
    tokio::task::spawn_blocking(images::ensure_images)
        .await
        .expect("image task")
        .expect("demo images");
    let st = TestStack::new("swarm_guard_panic");
    let name = st.name.clone();
    let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some("1.0.0+1.0.0"))
        .expect("demo recipe");
    st.deploy(&recipe.dir).expect("stack deploy");
    st.wait_converged(&docker, Duration::from_secs(180))
        .await
        .expect("converged");
    let panicked = std::thread::spawn(move || {
        let _st = st;
        panic!("a test failing with its stack deployed");
    })
    .join();
    assert!(panicked.is_err());
    let left = docker::stack_leftovers(&docker, &name)
        .await
        .expect("leftovers");
    assert!(left.is_empty(), "stack {name} left {left:?} behind");
}
