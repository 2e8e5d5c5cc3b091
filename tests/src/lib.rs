//! The real-swarm test harness and the demo fixtures of ci-warm.
//!
//! - [`docker`]: connect (API negotiated), fail or skip when Docker is missing, and observe a
//!   stack through the API: convergence, service labels, volumes and their mountpoints;
//! - [`images`]: the static demo app packaged as local `FROM scratch` images, one per version;
//! - [`recipe`]: the demo recipe, a real git repository with release tags and notes;
//! - [`stack`]: unique stack names, a small `docker stack deploy` helper, and a guard that
//!   always removes the stack with its volumes;
//! - [`multinode`]: a throw-away multi-node swarm (extra dockerds in namespaces), torn down
//!   on drop;
//! - [`ports`]: free host ports;
//! - [`tls_proxy`]: a real TLS-terminating, SNI-routing proxy (nginx) in front of apps;
//! - [`abra_sim`]: the abra simulator (`abra-sim` binary) over the real engine.

/// The health gate's deadline in the swarm scenarios. Generous on purpose: a release that should
/// pass must never fail for want of time on a slow or busy machine (the scenario files run side
/// by side), and one that should fail is failed by swarm's own rollback or a settled state, which
/// ends the gate long before this.
pub const GATE_TIMEOUT_SECS: u64 = 180;

pub mod abra_sim;
pub mod deployers;
pub mod docker;
pub mod images;
pub mod multinode;
pub mod ports;
pub mod recipe;
pub mod stack;
pub mod state_files;
pub mod tls_proxy;

pub use ports::free_port;

/// Builds the workspace's binaries (debug) and returns the path of `bin`: a test of another
/// package does not get it built by cargo.
fn build_bin(bin: &str) -> Result<std::path::PathBuf, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or("no workspace root")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        // The same selection as `cargo test --workspace` (dev-dependencies and their features
        // included): a narrower `-p` resolves other features and rebuilds the whole dependency
        // graph, twice per test run.
        .args(["build", "--quiet", "--workspace", "--all-targets"])
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --workspace --all-targets: {status}"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join(bin))
}

/// The `ci-warm` binary of this workspace, built on first use.
pub fn ci_warm_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    match BUILT.get_or_init(|| build_bin("ci-warm")) {
        Ok(p) => p.clone(),
        Err(e) => panic!("building ci-warm: {e}"),
    }
}

/// The `abra-sim` binary of this crate (see [`abra_sim`]), built on demand: for tests of
/// other packages and for scripts (`ci-warm-fixtures abra-sim`). Tests of this crate can use
/// `env!("CARGO_BIN_EXE_abra-sim")`.
pub fn abra_sim_bin() -> anyhow::Result<std::path::PathBuf> {
    build_bin("abra-sim").map_err(anyhow::Error::msg)
}

/// Runs `ci-warm --config CONFIG ARGS...` and echoes its exit code and output on stderr, which
/// the test runner shows when a test fails.
pub fn run_ci_warm(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    run_ci_warm_with_env(config, args, &[])
}

/// [`run_ci_warm`] with more environment variables (e.g. the simulator's `ABRA_SIM_*`).
pub fn run_ci_warm_with_env(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Output {
    let out = std::process::Command::new(ci_warm_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running ci-warm {args:?}: {e}"));
    echoed(args, out)
}

/// Echoes a finished `ci-warm ARGS` (exit code and output) on stderr, which the test runner
/// shows when a test fails, and hands the output on.
pub fn echoed(args: &[&str], out: std::process::Output) -> std::process::Output {
    eprintln!(
        "ci-warm {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
