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

/// The `ci-warm` binary of this workspace, built on first use (a test of another package does
/// not get it built by cargo).
pub fn ci_warm_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(std::path::Path::to_path_buf)
            .ok_or("no workspace root")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "ci-warm", "--bin", "ci-warm"])
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build -p ci-warm: {status}"));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(target.join("debug/ci-warm"))
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("building ci-warm: {e}"),
    }
}
