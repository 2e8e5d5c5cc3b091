//! The demo recipe: a Co-op Cloud-style recipe as a real git repository.
//!
//! Each release is a commit that rewrites `compose.yml` (image, mode, version label) and adds
//! `release/<tag>`, tagged with the recipe tag. Tests publish releases one at a time to play
//! "upstream released a new version".

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// One release of the demo recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The recipe tag, e.g. `1.1.0+1.0.0`.
    pub tag: String,
    /// The demo image version (`ci-warm-demo:<image>`).
    pub image: String,
    /// `DEMO_MODE` of the app service.
    pub mode: String,
    /// The text of `release/<tag>`.
    pub notes: String,
}

impl Release {
    /// A custom release: `mode` is the app's `DEMO_MODE` (`ok`, `crash`, `never-healthy`,
    /// `slow:<secs>`), `image` one of [`crate::images::VERSIONS`].
    pub fn new(tag: &str, image: &str, mode: &str, notes: &str) -> Release {
        Release {
            tag: tag.to_owned(),
            image: image.to_owned(),
            mode: mode.to_owned(),
            notes: notes.to_owned(),
        }
    }
}

/// The standard catalogue, oldest first.
pub fn catalogue() -> Vec<Release> {
    vec![
        Release::new(
            "1.0.0+1.0.0",
            "1.0.0",
            "ok",
            "First release of the demo recipe.\n",
        ),
        Release::new(
            "1.1.0+1.0.0",
            "1.0.0",
            "ok",
            "Adds a healthcheck interval tweak.\n",
        ),
        Release::new(
            "1.2.0+1.0.0",
            "1.0.0",
            "never-healthy",
            "Refactors the start-up (this one is broken: it never becomes healthy).\n",
        ),
        Release::new(
            "1.3.0+1.1.0",
            "1.1.0",
            "ok",
            "Upgrades the app to 1.1.0.\n\nManual migration required: run `demo-app migrate` before upgrading.\n",
        ),
        Release::new(
            "2.0.0+2.0.0",
            "2.0.0",
            "ok",
            "Major upgrade of the app to 2.0.0.\n",
        ),
    ]
}

/// The catalogue release with this tag.
pub fn release(tag: &str) -> anyhow::Result<Release> {
    catalogue()
        .into_iter()
        .find(|r| r.tag == tag)
        .with_context(|| format!("{tag} is not in the demo catalogue"))
}

/// The compose file of a release. Labels are in list form: compose interpolates `${...}` in
/// values but not in mapping keys.
pub fn compose(release: &Release) -> String {
    format!(
        r#"version: "3.8"
services:
  app:
    image: ci-warm-demo:{image}
    environment:
      - DEMO_MODE={mode}
      - RECIPE_VERSION={tag}
      - PORT=8080
      - DATA_DIR=/data
    volumes:
      - data:/data
    ports:
      - target: 8080
        published: ${{PORT}}
        protocol: tcp
        mode: host
    healthcheck:
      test: ["CMD", "/demo-app", "healthcheck"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 2s
    stop_grace_period: 2s
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.version={tag}"
      update_config:
        failure_action: rollback
        monitor: 5s
      restart_policy:
        condition: on-failure
        max_attempts: 3
        # A broken release is given up by swarm (and so by the gate) in seconds, not ~20 s.
        delay: 1s
  migrate:
    image: ci-warm-demo:{image}
    command: ["oneshot"]
    environment:
      - RECIPE_VERSION={tag}
    deploy:
      endpoint_mode: dnsrr
      restart_policy:
        condition: none
      # A finished one-shot would otherwise count as a failed update and pause it.
      update_config:
        failure_action: continue
volumes:
  data:
"#,
        image = release.image,
        mode = release.mode,
        tag = release.tag,
    )
}

pub const ENV_SAMPLE: &str =
    "TYPE=demo\nDOMAIN=demo.example.org\nPORT=18080\nCOMPOSE_FILE=compose.yml\n";

/// A demo recipe repository on disk.
#[derive(Debug, Clone)]
pub struct DemoRecipe {
    pub dir: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "ci-warm fixtures")
        .env("GIT_AUTHOR_EMAIL", "fixtures@ci-warm.invalid")
        .env("GIT_COMMITTER_NAME", "ci-warm fixtures")
        .env("GIT_COMMITTER_EMAIL", "fixtures@ci-warm.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?} in {}", dir.display()))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {} failed: {} {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            // git commit says "nothing to commit" on stdout
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl DemoRecipe {
    /// Creates an empty recipe repository (README and `.env.sample`, no release yet).
    pub fn create(dir: &Path) -> anyhow::Result<DemoRecipe> {
        if dir.join(".git").exists() {
            bail!("{} already holds a git repository", dir.display());
        }
        std::fs::create_dir_all(dir.join("release"))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(".env.sample"), ENV_SAMPLE).context("writing .env.sample")?;
        std::fs::write(
            dir.join("README.md"),
            "# demo\n\nThe ci-warm demo recipe (generated by ci-warm-fixtures).\n",
        )
        .context("writing README.md")?;
        git(dir, &["init", "--quiet"])?;
        git(dir, &["add", "-A"])?;
        git(dir, &["commit", "--quiet", "-m", "demo recipe skeleton"])?;
        Ok(DemoRecipe {
            dir: dir.to_owned(),
        })
    }

    /// Opens an existing demo recipe.
    pub fn open(dir: &Path) -> anyhow::Result<DemoRecipe> {
        if !dir.join(".git").exists() {
            bail!("{} is not a demo recipe (no .git)", dir.display());
        }
        Ok(DemoRecipe {
            dir: dir.to_owned(),
        })
    }

    /// Creates the recipe with the catalogue up to and including `upto` (all when `None`).
    pub fn with_catalogue(dir: &Path, upto: Option<&str>) -> anyhow::Result<DemoRecipe> {
        if let Some(u) = upto {
            release(u)?;
        }
        let recipe = DemoRecipe::create(dir)?;
        for r in catalogue() {
            recipe.publish(&r)?;
            if Some(r.tag.as_str()) == upto {
                break;
            }
        }
        Ok(recipe)
    }

    /// Creates the recipe with exactly these releases, published in order (custom releases,
    /// e.g. a `1.4.0+1.1.0` in mode `crash` or `slow:5`, included).
    pub fn with_releases(dir: &Path, releases: &[Release]) -> anyhow::Result<DemoRecipe> {
        let recipe = DemoRecipe::create(dir)?;
        for r in releases {
            recipe.publish(r)?;
        }
        Ok(recipe)
    }

    /// The catalogue release after the newest tag of this recipe, if any is left.
    pub fn next_in_catalogue(&self) -> anyhow::Result<Option<Release>> {
        let tags = self.tags()?;
        let cat = catalogue();
        let last = cat.iter().rposition(|r| tags.contains(&r.tag));
        Ok(cat.into_iter().nth(last.map_or(0, |i| i + 1)))
    }

    /// Commits and tags one release.
    pub fn publish(&self, release: &Release) -> anyhow::Result<()> {
        if self.tags()?.contains(&release.tag) {
            bail!("{} already has tag {}", self.dir.display(), release.tag);
        }
        std::fs::write(self.dir.join("compose.yml"), compose(release))
            .context("writing compose.yml")?;
        std::fs::write(self.dir.join("release").join(&release.tag), &release.notes)
            .context("writing the release note")?;
        git(&self.dir, &["add", "-A"])?;
        git(
            &self.dir,
            &[
                "commit",
                "--quiet",
                "-m",
                &format!("release {}", release.tag),
            ],
        )?;
        // Annotated, as real recipes tag releases: abra's lint (R014) refuses lightweight tags.
        git(
            &self.dir,
            &[
                "tag",
                "-a",
                "-m",
                &format!("release {}", release.tag),
                &release.tag,
            ],
        )?;
        Ok(())
    }

    /// Commits arbitrary files (e.g. a custom `compose.yml` and `.env.sample`) and tags the
    /// commit `tag`, annotated when `annotated` (abra's lint rule R014 wants annotated tags;
    /// [`DemoRecipe::publish`] makes annotated ones too). For tests that need a release the
    /// catalogue has not got (a dropped service, secrets, a long start_period).
    pub fn publish_files(
        &self,
        tag: &str,
        files: &[(&str, &str)],
        annotated: bool,
    ) -> anyhow::Result<()> {
        if self.tags()?.contains(&tag.to_owned()) {
            bail!("{} already has tag {tag}", self.dir.display());
        }
        for (path, text) in files {
            let p = self.dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        git(&self.dir, &["add", "-A"])?;
        git(
            &self.dir,
            &[
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                &format!("release {tag}"),
            ],
        )?;
        if annotated {
            git(
                &self.dir,
                &["tag", "-a", "-m", &format!("release {tag}"), tag],
            )?;
        } else {
            git(&self.dir, &["tag", tag])?;
        }
        Ok(())
    }

    /// The recipe's tags, in git's (lexical) order.
    pub fn tags(&self) -> anyhow::Result<Vec<String>> {
        Ok(git(&self.dir, &["tag", "--list"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The repository URL ci-warm's config points at.
    pub fn url(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_publishes_tags_notes_and_compose() {
        let d = tempfile::tempdir().unwrap();
        let r = DemoRecipe::with_catalogue(&d.path().join("demo"), Some("1.2.0+1.0.0")).unwrap();
        assert_eq!(
            r.tags().unwrap(),
            ["1.0.0+1.0.0", "1.1.0+1.0.0", "1.2.0+1.0.0"]
        );
        let compose = std::fs::read_to_string(r.dir.join("compose.yml")).unwrap();
        assert!(
            compose.contains("coop-cloud.${STACK_NAME}.version=1.2.0+1.0.0"),
            "{compose}"
        );
        assert!(compose.contains("DEMO_MODE=never-healthy"));
        assert!(compose.contains("mode: host") && compose.contains("endpoint_mode: dnsrr"));
        r.publish(&release("1.3.0+1.1.0").unwrap()).unwrap();
        let note = git(&r.dir, &["show", "1.3.0+1.1.0:release/1.3.0+1.1.0"]).unwrap();
        assert!(note.contains("Manual migration required"));
        let old = git(&r.dir, &["show", "1.0.0+1.0.0:compose.yml"]).unwrap();
        assert!(old.contains("version=1.0.0+1.0.0") && old.contains("DEMO_MODE=ok"));
        assert!(r.dir.join(".env.sample").exists());
    }

    #[test]
    fn custom_releases_and_the_next_catalogue_release() {
        let d = tempfile::tempdir().unwrap();
        let r = DemoRecipe::with_releases(
            &d.path().join("demo"),
            &[
                release("1.0.0+1.0.0").unwrap(),
                Release::new("1.0.1+1.0.0", "1.0.0", "slow:3", "Slow start.\n"),
            ],
        )
        .unwrap();
        assert_eq!(r.tags().unwrap(), ["1.0.0+1.0.0", "1.0.1+1.0.0"]);
        let compose = std::fs::read_to_string(r.dir.join("compose.yml")).unwrap();
        assert!(compose.contains("DEMO_MODE=slow:3"), "{compose}");
        assert_eq!(
            r.next_in_catalogue().unwrap().map(|r| r.tag),
            Some("1.1.0+1.0.0".to_owned())
        );
        // A tag cannot be published twice.
        assert!(r.publish(&release("1.0.0+1.0.0").unwrap()).is_err());
        let all = DemoRecipe::with_catalogue(&d.path().join("all"), None).unwrap();
        assert_eq!(all.tags().unwrap().len(), catalogue().len());
        assert_eq!(all.next_in_catalogue().unwrap(), None);
    }

    #[test]
    fn unknown_tag_and_existing_repo_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(DemoRecipe::with_catalogue(&d.path().join("x"), Some("9.9.9+9")).is_err());
        DemoRecipe::create(&d.path().join("y")).unwrap();
        assert!(DemoRecipe::create(&d.path().join("y")).is_err());
    }
}
