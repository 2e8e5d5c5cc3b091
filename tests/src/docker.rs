//! Docker for the tests: present and a swarm manager, or a clear failure in CI.

use ci_warm::docker::Engine;

/// Whether a missing Docker must fail the test instead of skipping it.
pub fn docker_required() -> bool {
    ["CI", "CI_WARM_REQUIRE_DOCKER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// The engine, or `None` (the test returns early) when Docker is unreachable outside CI. With
/// `CI` or `CI_WARM_REQUIRE_DOCKER` set, an unreachable Docker or a node that is not a swarm
/// manager panics with the reason.
pub async fn require_docker() -> Option<Engine> {
    let why = match Engine::connect().await {
        Ok(engine) => match engine.docker().info().await {
            Ok(info)
                if info
                    .swarm
                    .as_ref()
                    .and_then(|s| s.control_available)
                    .unwrap_or(false) =>
            {
                return Some(engine);
            }
            Ok(_) => "this Docker engine is not a swarm manager (run scripts/setup.sh)".to_owned(),
            Err(e) => format!("Docker did not answer: {e}"),
        },
        Err(e) => e.to_string(),
    };
    if docker_required() {
        panic!("Docker is required (CI or CI_WARM_REQUIRE_DOCKER is set): {why}");
    }
    eprintln!("SKIPPED: Docker is not available: {why}");
    None
}
