//! Runs an external command (the quick lane's test, the sweep's cold run) under a time limit.
//!
//! A hung test would otherwise hold the canonical's lock, and keep a PR's ref deployed on the
//! canonical's data, for ever; a hung cold run would stop the nightly sweep. The command runs in
//! its own process group so that, at the deadline, its whole tree is stopped (TERM, then KILL
//! after a grace period), not only the direct child.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a command gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub enum Finished {
    Exited(ExitStatus),
    /// The limit passed; the command's process group was stopped.
    TimedOut(Duration),
}

/// Spawns `cmd` in a new process group and waits for it, at most `limit` (None: no limit).
/// `what` names the command in errors ("the test command").
pub fn run(cmd: &mut Command, limit: Option<Duration>, what: &str) -> anyhow::Result<Finished> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {what} {program:?}"))?;
    let Some(limit) = limit else {
        let status = child
            .wait()
            .with_context(|| format!("waiting for {what} {program:?}"))?;
        return Ok(Finished::Exited(status));
    };
    let deadline = crate::platform::deadline::after(Instant::now(), limit);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what} {program:?}"))?
        {
            return Ok(Finished::Exited(status));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    tracing::warn!(command = %program, "{what} did not finish within {limit:?}; stopping it");
    // The child is its own group leader, so its pid is the group id. The group is signalled
    // while the (unreaped) leader still exists, so the id cannot have been reused.
    let group = Pid::from_raw(
        i32::try_from(child.id()).with_context(|| format!("the pid of {what} is out of range"))?,
    );
    let _ = killpg(group, Signal::SIGTERM);
    let grace_end = crate::platform::deadline::after(Instant::now(), GRACE);
    loop {
        let exited = child
            .try_wait()
            .with_context(|| format!("waiting for {what} {program:?}"))?
            .is_some();
        if exited || Instant::now() >= grace_end {
            break;
        }
        std::thread::sleep(POLL);
    }
    // Whatever of the tree is still there (the leader may have exited on TERM and left children).
    let _ = killpg(group, Signal::SIGKILL);
    child
        .wait()
        .with_context(|| format!("reaping {what} {program:?}"))?;
    Ok(Finished::TimedOut(limit))
}

/// A limit in seconds from the CLI or config, where 0 means none.
pub fn limit(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_passed_through() {
        let r = run(Command::new("sh").args(["-c", "exit 3"]), limit(5), "t").unwrap();
        assert!(
            matches!(r, Finished::Exited(s) if s.code() == Some(3)),
            "{r:?}"
        );
        let r = run(&mut Command::new("true"), None, "t").unwrap();
        assert!(matches!(r, Finished::Exited(s) if s.success()), "{r:?}");
    }

    #[test]
    fn a_hung_command_and_its_children_are_stopped_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let pid_file = d.path().join("grandchild");
        // The shell ignores TERM and its background child would outlive it: only stopping the
        // whole group ends both.
        let script = format!(
            "trap '' TERM; sleep 300 & echo $! > {}; wait",
            pid_file.display()
        );
        let started = Instant::now();
        let r = run(Command::new("sh").args(["-c", &script]), limit(1), "t").unwrap();
        assert!(
            matches!(r, Finished::TimedOut(l) if l == Duration::from_secs(1)),
            "{r:?}"
        );
        // Not a speed limit: a run that waited for the command took its whole 300 s.
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "waited for the hung command: {:?}",
            started.elapsed()
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie about to be reaped by init).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let gone = stat.is_empty()
                || stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z'));
            if gone {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} survived: {stat}"
            );
            std::thread::sleep(POLL);
        }
    }

    #[test]
    fn zero_means_no_limit() {
        assert_eq!(limit(0), None);
        assert_eq!(limit(7), Some(Duration::from_secs(7)));
    }
}
