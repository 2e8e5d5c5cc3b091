//! The foundation on the real swarm: the demo recipe's first version deploys with
//! `docker stack deploy`, converges, carries its version label, and keeps its marker in a
//! volume found through the Docker API; the guard leaves nothing behind.

use std::time::Duration;

use ci_warm::docker::SwarmView;
use ci_warm_tests::docker::require_docker;
use ci_warm_tests::recipe::DemoRecipe;
use ci_warm_tests::stack::TestStack;
use ci_warm_tests::{images, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_recipe_deploys_converges_and_keeps_its_marker() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let engine = ci_warm::docker::Engine::new(docker);
    images::ensure_images().expect("demo images");
    let name;
    {
        let st = TestStack::new("swarm_demo");
        name = st.name.clone();
        let recipe = DemoRecipe::with_catalogue(&st.path().join("recipe"), Some("1.0.0+1.0.0"))
            .expect("demo recipe");
        st.deploy(&recipe.dir).expect("stack deploy");

        st.wait_for("/health", 200, Duration::from_secs(60))
            .expect("healthy");
        // Converged: the app runs its one replica, the one-shot job completed.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let services = loop {
            let services = engine.services(&st.name).await.expect("services");
            let app_running = services.iter().any(|s| {
                s.name == format!("{}_app", st.name)
                    && s.tasks
                        .iter()
                        .any(|t| t.state == ci_warm::docker::TaskState::Running)
            });
            let job_done = services.iter().any(|s| {
                s.name == format!("{}_migrate", st.name)
                    && s.tasks
                        .iter()
                        .any(|t| t.state == ci_warm::docker::TaskState::Complete)
            });
            if app_running && job_done {
                break services;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stack did not converge: {services:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };

        let app = services
            .iter()
            .find(|s| s.name == format!("{}_app", st.name))
            .expect("app service");
        assert_eq!(
            app.labels
                .get(&format!("coop-cloud.{}.version", st.name))
                .map(String::as_str),
            Some("1.0.0+1.0.0"),
            "version label on {}: {:?}",
            app.name,
            app.labels
        );

        let volumes = engine.volumes(&st.name).await.expect("volumes");
        let data = volumes
            .iter()
            .find(|v| v.name == format!("{}_data", st.name))
            .unwrap_or_else(|| panic!("data volume among {volumes:?}"));
        let marker = std::fs::read_to_string(std::path::Path::new(&data.mountpoint).join("marker"))
            .expect("marker in the volume");
        assert_eq!(marker, "created by 1.0.0+1.0.0\n");
        let (status, body) = st.get("/marker").expect("GET /marker");
        assert_eq!((status, body.as_str()), (200, marker.as_str()));
    }
    // The guard removed the stack, its containers, volumes and networks.
    assert!(
        stack::remove_stack(&name).is_empty(),
        "stack {name} left something behind"
    );
    assert!(engine.volumes(&name).await.expect("volumes").is_empty());
}
