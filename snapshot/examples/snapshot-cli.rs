//! A minimal driver for the snapshot engine, used by the crash test and the benchmark.
//!
//! ```text
//! snapshot-cli take SRC PARENT [NAME]      # snapshot SRC as volume NAME (default "data")
//! snapshot-cli verify SNAPDIR              # exit 1 when there are problems
//! snapshot-cli restore SNAPDIR NAME TARGET
//! ```
//! Each prints one JSON line (the summary or the report).

use std::path::PathBuf;
use std::process::ExitCode;

use ci_warm_snapshot::{Reserve, TakeRequest, restore, take, verify};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match words.as_slice() {
        ["take", src, parent, rest @ ..] => take(&TakeRequest {
            parent: PathBuf::from(parent),
            sources: vec![(
                rest.first().unwrap_or(&"data").to_string(),
                PathBuf::from(src),
            )],
            reserve: Reserve::default(),
        })
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
                "usage: snapshot-cli take SRC PARENT [NAME] | verify SNAPDIR | restore SNAPDIR NAME TARGET"
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
