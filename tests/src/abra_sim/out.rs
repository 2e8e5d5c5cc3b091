//! abra's output: charmbracelet/log-style lines that start with a level word (`FATA`, `ERRO`,
//! `WARN`, `INFO`, `DEBU file:line` under `--debug`), contract §4.8. The stream of FATA lines
//! and of the others is a switch; both default to stdout.

use std::io::Write;
use std::panic::Location;

use super::switches::Stream;

#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub debug: bool,
    pub fata: Stream,
    pub rest: Stream,
}

fn emit(stream: Stream, line: &str) {
    // A closed pipe must not turn into a panic: the exit code is what callers judge.
    if matches!(stream, Stream::Stdout | Stream::Both) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }
    if matches!(stream, Stream::Stderr | Stream::Both) {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{line}");
    }
}

impl Out {
    pub fn info(&self, msg: &str) {
        emit(self.rest, &format!("INFO {msg}"));
    }

    pub fn warn(&self, msg: &str) {
        emit(self.rest, &format!("WARN {msg}"));
    }

    pub fn error(&self, msg: &str) {
        emit(self.rest, &format!("ERRO {msg}"));
    }

    /// `DEBU <file>:<line> msg`, the caller's place in the simulator's source (abra prints its
    /// own Go file and line there).
    #[track_caller]
    pub fn debug(&self, msg: &str) {
        if self.debug {
            let at = Location::caller();
            let file = at.file().rsplit('/').next().unwrap_or(at.file());
            emit(self.rest, &format!("DEBU {file}:{} {msg}", at.line()));
        }
    }

    /// The FATA line (one per line of a multi-line message); the caller then exits 1.
    pub fn fatal(&self, msg: &str) {
        for (i, l) in msg.trim().lines().enumerate() {
            if i == 0 {
                emit(self.fata, &format!("FATA {l}"));
            } else {
                emit(self.fata, &format!("     {l}"));
            }
        }
    }

    /// Plain output (tables, machine output): always stdout.
    pub fn print(&self, text: &str) {
        emit(Stream::Stdout, text.trim_end_matches('\n'));
    }
}
