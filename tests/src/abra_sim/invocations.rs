//! The invocation log (`ABRA_SIM_LOG`): one JSON line per call with argv, `ABRA_DIR`, the
//! working directory and the exit code, so tests can assert what ci-warm called.

use std::io::Write;
use std::path::Path;

pub fn append(path: &Path, argv: &[String], exit: i32) {
    let line = serde_json::json!({
        "argv": argv,
        "abra_dir": std::env::var("ABRA_DIR").ok(),
        "cwd": std::env::current_dir().ok().map(|d| d.display().to_string()),
        "exit": exit,
    });
    // One write of one line with O_APPEND: concurrent simulators never interleave.
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = result {
        eprintln!(
            "abra-sim: writing the invocation log {}: {e}",
            path.display()
        );
    }
}
