//! The real-swarm test harness and the demo fixtures of ci-warm.
//!
//! - [`docker`]: connect (API negotiated), and fail or skip when Docker is missing;
//! - [`images`]: the static demo app packaged as local `FROM scratch` images, one per version;
//! - [`recipe`]: the demo recipe, a real git repository with release tags and notes;
//! - [`stack`]: unique stack names and a guard that always removes stacks and volumes.

pub mod docker;
pub mod images;
pub mod recipe;
pub mod stack;

/// A free TCP port on the loopback interface, for a stack's host-mode published port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
