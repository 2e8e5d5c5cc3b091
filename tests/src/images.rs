//! The demo images: the static `demo-app` binary imported as `ci-warm-demo:<version>`, with no
//! base image, so no registry is ever needed. Re-imports only when the binary changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

pub const REPOSITORY: &str = "ci-warm-demo";
/// Upstream versions of the demo app; each gets an image. The catalogue uses 1.0.0, 1.1.0 and
/// 2.0.0; the others are there for custom releases of tests.
pub const VERSIONS: [&str; 5] = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0"];
const LABEL: &str = "org.ci-warm.demo-app.sha256";
/// Bumped when what `import_images` puts into an image changes (not only the binary), so
/// images made by an older harness are re-imported.
const LAYOUT: &str = "2";

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

/// Whether an ELF executable asks for no program interpreter (no `PT_INTERP`), i.e. is
/// statically linked. A dynamic binary in a `FROM scratch` image fails with a baffling "no such
/// file or directory", so the import refuses it up front.
pub fn is_static_elf(bytes: &[u8]) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| -> anyhow::Result<u16> {
        let b = bytes.get(o..o + 2).context("truncated ELF header")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| -> anyhow::Result<u32> {
        let b = bytes.get(o..o + 4).context("truncated ELF header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| -> anyhow::Result<u64> {
        let b = bytes.get(o..o + 8).context("truncated ELF header")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    };
    let phoff = usize::try_from(u64_at(0x20)?).context("program header offset")?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !is_static_elf(&bytes).with_context(|| format!("reading {}", path.display()))? {
        bail!(
            "{} is dynamically linked; a scratch image needs a static binary \
             (RUSTFLAGS=\"-C target-feature=+crt-static\")",
            path.display()
        );
    }
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Imports one image per demo version from `binary`; returns the images (re)built.
pub fn import_images(binary: &Path) -> anyhow::Result<Vec<String>> {
    let sum = format!("{}-{LAYOUT}", sha256_file(binary)?);
    let dir = tempfile::tempdir().context("creating a temporary dir for the image")?;
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("data")).context("creating the image root")?;
    std::fs::copy(binary, rootfs.join("demo-app")).context("copying the demo binary")?;
    let tar = dir.path().join("rootfs.tar");
    // Owned by root whoever builds it: the app runs as root in the container.
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner"])
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
        let old_id = image_id(&name);
        run(Command::new("docker")
            .arg("import")
            .args(["-c", "ENTRYPOINT [\"/demo-app\"]"])
            .args(["-c", &format!("ENV DEMO_VERSION={version}")])
            .args(["-c", &format!("LABEL {LABEL}={sum}")])
            .args(["-c", "EXPOSE 8080"])
            .arg(&tar)
            .arg(&name))
        .with_context(|| format!("importing {name}"))?;
        // The replaced image would linger as `<none>`; one still used by a container stays.
        if let Some(old) = old_id.filter(|old| image_id(&name).as_ref() != Some(old)) {
            let _ = Command::new("docker").args(["image", "rm", &old]).output();
        }
        built.push(name);
    }
    if !built.is_empty() {
        // Earlier imports left untagged; prune spares images a container still uses.
        let _ = Command::new("docker")
            .args([
                "image",
                "prune",
                "-f",
                "--filter",
                &format!("label={LABEL}"),
            ])
            .output();
    }
    Ok(built)
}

fn image_id(name: &str) -> Option<String> {
    Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", name])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Builds the binary and the images; quick when nothing changed.
pub fn ensure_images() -> anyhow::Result<Vec<String>> {
    let binary = build_static_binary()?;
    import_images(&binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_binaries() {
        // Whatever runs this test is a dynamically linked executable on Debian and NixOS.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&exe).unwrap());
        assert!(is_static_elf(b"#!/bin/sh\n").is_err());
    }
}
