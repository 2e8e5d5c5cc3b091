//! `<state_dir>/results/<recipe>/<start>-<mode>-<run>.json`: one file per quick or cold run that
//! ci-warm ran itself (the quick lane, the sweep), written atomically. The sweep orders recipes by
//! the newest cold result here ("least recently tested first").

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const RESULT_SCHEMA: u32 = 1;

/// How a run was tested: from scratch (cold) or by upgrading the canonical (quick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Cold,
    Quick,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Quick => "quick",
        }
    }
}

/// What a test run concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

/// One run's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub schema: u32,
    pub recipe: String,
    pub mode: Mode,
    pub result: Verdict,
    /// The recipe version the run started from (quick: the canonical's) or tested (cold).
    pub version: Option<String>,
    /// The recipe commit tested.
    pub commit: Option<String>,
    /// The ref a quick run upgraded to.
    pub r#ref: Option<String>,
    pub run: Option<String>,
    /// RFC 3339 UTC with microseconds, so that strings sort by time.
    pub started_at: String,
    pub finished_at: String,
    pub duration_secs: f64,
    /// Where the test command's output went, when ci-warm captured it.
    pub log: Option<PathBuf>,
    /// The step that failed (`restore`, `deploy-canonical`, `deploy-ref`, `test`, ...).
    pub failed_step: Option<String>,
    pub reason: Option<String>,
    /// The test command's exit status, when it ran.
    pub exit_code: Option<i32>,
    /// For a cold run: what the promotion did (`seeded`, `promoted`, `no-op: ...`).
    pub promotion: Option<String>,
}

pub fn recipe_dir(state_dir: &Path, recipe: &str) -> PathBuf {
    state_dir.join("results").join(recipe)
}

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A file-name-safe form of a time stamp: `20261123T194000.123456Z`.
fn compact(stamp: &str) -> String {
    stamp.chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

/// Run ids come from CI systems; only a safe subset reaches a file name.
pub fn safe_component(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.trim_start_matches('.').to_owned()
}

/// The base path (without extension) for a run's files.
pub fn base_path(
    state_dir: &Path,
    recipe: &str,
    started_at: &str,
    mode: Mode,
    run: Option<&str>,
) -> PathBuf {
    let mut name = format!("{}-{}", compact(started_at), mode.as_str());
    if let Some(r) = run.map(safe_component).filter(|r| !r.is_empty()) {
        name.push('-');
        name.push_str(&r);
    }
    recipe_dir(state_dir, recipe).join(name)
}

/// `base` + `suffix` (`with_extension` would cut at the time stamp's fraction dot).
pub fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes the result next to its log (`<base>.json`) and returns the path.
pub fn record(state_dir: &Path, result: &RunResult) -> anyhow::Result<PathBuf> {
    let dir = recipe_dir(state_dir, &result.recipe);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = base_path(
        state_dir,
        &result.recipe,
        &result.started_at,
        result.mode,
        result.run.as_deref(),
    );
    let path = with_suffix(&base, ".json");
    crate::platform::atomic::write_json(&path, result, 0o644).with_context(|| {
        format!(
            "recording the {} result of {}",
            result.mode.as_str(),
            result.recipe
        )
    })?;
    Ok(path)
}

/// Every result of a recipe, oldest first; unreadable files are skipped with a warning.
pub fn load_all(state_dir: &Path, recipe: &str) -> anyhow::Result<Vec<RunResult>> {
    let dir = recipe_dir(state_dir, recipe);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<RunResult>(&b)?))
        {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), "skipping an unreadable result: {e:#}")
            }
        }
    }
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    Ok(out)
}

/// When the recipe was last tested in `mode` (`None`: never).
pub fn last_tested(state_dir: &Path, recipe: &str, mode: Mode) -> anyhow::Result<Option<String>> {
    Ok(load_all(state_dir, recipe)?
        .into_iter()
        .filter(|r| r.mode == mode)
        .map(|r| r.started_at)
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(recipe: &str, mode: Mode, at: SystemTime, run: &str) -> RunResult {
        RunResult {
            schema: RESULT_SCHEMA,
            recipe: recipe.into(),
            mode,
            result: Verdict::Pass,
            version: Some("1.0.0+1.0.0".into()),
            commit: None,
            r#ref: None,
            run: Some(run.into()),
            started_at: timestamp(at),
            finished_at: timestamp(at),
            duration_secs: 0.0,
            log: None,
            failed_step: None,
            reason: None,
            exit_code: Some(0),
            promotion: None,
        }
    }

    #[test]
    fn records_and_finds_the_newest_per_mode() {
        let d = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(last_tested(d.path(), "demo", Mode::Cold).unwrap(), None);
        let p = record(d.path(), &result("demo", Mode::Cold, t0, "../evil run")).unwrap();
        assert!(p.starts_with(d.path().join("results/demo")), "{p:?}");
        assert!(
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("-cold-_evil_run.json")
        );
        let t1 = t0 + Duration::from_secs(60);
        record(d.path(), &result("demo", Mode::Quick, t1, "q")).unwrap();
        assert_eq!(
            last_tested(d.path(), "demo", Mode::Cold).unwrap(),
            Some(timestamp(t0))
        );
        assert_eq!(load_all(d.path(), "demo").unwrap().len(), 2);
    }

    #[test]
    fn safe_component_keeps_names_inside_the_directory() {
        assert_eq!(safe_component("gh-123_4.5"), "gh-123_4.5");
        assert_eq!(safe_component("a/b c"), "a_b_c");
        assert_eq!(safe_component("..."), "");
    }
}
