//! A minimal driver for the snapshot engine, used by the crash test and the benchmark.
//!
//! ```text
//! snapshot-cli take SRC PARENT [NAME] [--pause-at POINT]
//!                                          # snapshot SRC as volume NAME (default "data")
//! snapshot-cli verify SNAPDIR              # exit 1 when there are problems
//! snapshot-cli restore SNAPDIR NAME TARGET
//! ```
//! Each prints one JSON line (the summary or the report).
//!
//! `--pause-at` stops a take for good at a chosen point, so a test can kill it exactly there:
//! `entries:N` once N files are in the temporary tree (the other copy workers may add more,
//! but nothing is published while one is stopped in the progress call), `phase:NAME` at a
//! publish step (`tree-built`, `manifest-written`, `flushed`, `exchanged`,
//! `removing-previous` (once the first part of the previous snapshot is removed),
//! `published`). It prints `planned FILES` once the take knows how many files it handles,
//! then `paused POINT` when it stops; a point beyond the take's files prints
//! `unreachable POINT` and exits 3.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ci_warm_snapshot::{
    Phase, Progress, Reserve, TakeRequest, restore, take_with_progress, verify,
};

enum Point {
    Entries(u64),
    Phase(String),
}

/// Stops the calling engine thread forever at `at`.
struct Pause {
    at: Option<Point>,
    label: String,
    files: AtomicU64,
    paused: AtomicBool,
    /// `SNAPSHOT_CLI_TIMINGS` set: when each step of a take was reached, on stderr.
    timings: Option<std::time::Instant>,
}

impl Pause {
    fn stop(&self) {
        if self.paused.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "paused {}", self.label);
        let _ = out.flush();
        drop(out);
        // Blocks this engine thread, and with it the take, until the test kills the process.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl Progress for Pause {
    fn planned(&self, files: u64, _bytes: u64) {
        if let Some(t0) = self.timings {
            eprintln!("{:>8.3} s  planned", t0.elapsed().as_secs_f64());
        }
        if self.at.is_none() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "planned {files}");
        if let Some(Point::Entries(n)) = self.at
            && (n == 0 || n > files)
        {
            let _ = writeln!(out, "unreachable {}", self.label);
            let _ = out.flush();
            std::process::exit(3);
        }
        let _ = out.flush();
    }
    fn advanced(&self, files: u64, _bytes: u64) {
        let before = self.files.fetch_add(files, Ordering::SeqCst);
        if let Some(Point::Entries(n)) = self.at
            && before < n
            && before + files >= n
        {
            self.stop();
        }
    }
    fn phase(&self, phase: Phase) {
        if let Some(t0) = self.timings
            && !matches!(phase, Phase::RemovingPrevious { .. })
        {
            eprintln!("{:>8.3} s  {}", t0.elapsed().as_secs_f64(), phase.name());
        }
        if let Some(Point::Phase(name)) = &self.at
            && name == phase.name()
        {
            self.stop();
        }
    }
}

fn point(s: &str) -> Option<Point> {
    match s.split_once(':')? {
        ("entries", n) => n.parse().ok().map(Point::Entries),
        ("phase", name) => Some(Point::Phase(name.to_owned())),
        _ => None,
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut pause = Pause {
        at: None,
        label: String::new(),
        files: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        timings: std::env::var_os("SNAPSHOT_CLI_TIMINGS").map(|_| std::time::Instant::now()),
    };
    if let Some(i) = args.iter().position(|a| a == "--pause-at") {
        let Some(p) = args.get(i + 1).and_then(|s| point(s)) else {
            eprintln!("--pause-at entries:N | phase:NAME");
            return ExitCode::from(2);
        };
        pause.label = args[i + 1].clone();
        pause.at = Some(p);
        args.drain(i..i + 2);
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match words.as_slice() {
        ["take", src, parent, rest @ ..] => take_with_progress(
            &TakeRequest {
                parent: PathBuf::from(parent),
                sources: vec![(
                    rest.first().unwrap_or(&"data").to_string(),
                    PathBuf::from(src),
                )],
                reserve: Reserve::default(),
            },
            &pause,
        )
        .map(|s| (serde_json::to_string(&s), true)),
        ["verify", dir] => verify(&PathBuf::from(dir)).map(|r| {
            let ok = r.problems.is_empty();
            let secs = r.millis.max(1) as f64 / 1000.0;
            eprintln!(
                "verified {} entries, {} bytes in {secs:.3} s ({:.2} GB/s), {} problem(s)",
                r.entries,
                r.bytes_hashed,
                r.bytes_hashed as f64 / secs / 1e9,
                r.problems.len()
            );
            (serde_json::to_string(&r), ok)
        }),
        ["restore", dir, name, target] => {
            restore(&PathBuf::from(dir), name, &PathBuf::from(target))
                .map(|s| (serde_json::to_string(&s), true))
        }
        _ => {
            eprintln!(
                "usage: snapshot-cli take SRC PARENT [NAME] [--pause-at entries:N|phase:NAME] | verify SNAPDIR | restore SNAPDIR NAME TARGET"
            );
            return ExitCode::from(2);
        }
    };
    match out {
        Ok((json, ok)) => {
            println!("{}", json.unwrap_or_default());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
