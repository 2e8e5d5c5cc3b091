//! Progress of a snapshot take or restore: a bar on a terminal, plain log lines otherwise (a
//! systemd journal or a CI log gets a line every few seconds instead of control codes).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ci_warm_snapshot::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain reporter logs.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A bar when stderr is a terminal, log lines otherwise.
pub fn for_stderr(what: &str) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar::new(what))
    } else {
        Box::new(Lines::new(what))
    }
}

struct Bar(ProgressBar);

impl Bar {
    fn new(what: &str) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        Bar(bar)
    }
}

impl Progress for Bar {
    fn planned(&self, _files: u64, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advanced(&self, _files: u64, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

struct Lines {
    what: String,
    files: AtomicU64,
    bytes: AtomicU64,
    planned: Mutex<(u64, u64)>,
    last: Mutex<Instant>,
}

impl Lines {
    fn new(what: &str) -> Lines {
        Lines {
            what: what.to_owned(),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            planned: Mutex::new((0, 0)),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Progress for Lines {
    fn planned(&self, files: u64, bytes: u64) {
        if let Ok(mut p) = self.planned.lock() {
            *p = (files, bytes);
        }
        tracing::info!(files, bytes, "{}: starting", self.what);
    }

    fn advanced(&self, files: u64, bytes: u64) {
        let done_files = self.files.fetch_add(files, Ordering::Relaxed) + files;
        let done_bytes = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        // try_lock: workers never wait on each other for a log line.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        let (total_files, total_bytes) = self.planned.lock().map(|p| *p).unwrap_or((0, 0));
        tracing::info!(
            files = done_files,
            total_files,
            bytes = done_bytes,
            total_bytes,
            "{}: in progress",
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_across_threads() {
        let p = Lines::new("test");
        p.planned(100, 1000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        p.advanced(1, 10);
                    }
                });
            }
        });
        assert_eq!(p.files.load(Ordering::Relaxed), 100);
        assert_eq!(p.bytes.load(Ordering::Relaxed), 1000);
    }
}
