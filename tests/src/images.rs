//! The demo images: the static `demo-app` binary imported as `ci-warm-demo:<version>`, with no
//! base image, so no registry is ever needed. Re-imports only when the binary changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

pub const REPOSITORY: &str = "ci-warm-demo";
/// Upstream versions of the demo app; each gets an image.
pub const VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "2.0.0"];
const LABEL: &str = "org.ci-warm.demo-app.sha256";

pub fn image(version: &str) -> String {
    format!("{REPOSITORY}:{version}")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds `demo-app` statically (its own target dir, so the workspace's flags are untouched)
/// and returns the binary's path.
pub fn build_static_binary() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target = root.join("target/static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--quiet", "--release", "-p", "ci-warm-demo-app"]))
    .context("building the static demo app")?;
    Ok(target.join("release/demo-app"))
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Imports one image per demo version from `binary`; returns the images (re)built.
pub fn import_images(binary: &Path) -> anyhow::Result<Vec<String>> {
    let sum = sha256_file(binary)?;
    let dir = tempfile::tempdir().context("creating a temporary dir for the image")?;
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("data")).context("creating the image root")?;
    std::fs::copy(binary, rootfs.join("demo-app")).context("copying the demo binary")?;
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let mut built = Vec::new();
    for version in VERSIONS {
        let name = image(version);
        let current = Command::new("docker")
            .args([
                "image",
                "inspect",
                "-f",
                &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
                &name,
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if current.as_deref() == Some(sum.as_str()) {
            continue;
        }
        run(Command::new("docker")
            .arg("import")
            .args(["-c", "ENTRYPOINT [\"/demo-app\"]"])
            .args(["-c", &format!("ENV DEMO_VERSION={version}")])
            .args(["-c", &format!("LABEL {LABEL}={sum}")])
            .args(["-c", "EXPOSE 8080"])
            .arg(&tar)
            .arg(&name))
        .with_context(|| format!("importing {name}"))?;
        built.push(name);
    }
    Ok(built)
}

/// Builds the binary and the images; quick when nothing changed.
pub fn ensure_images() -> anyhow::Result<Vec<String>> {
    let binary = build_static_binary()?;
    import_images(&binary)
}
