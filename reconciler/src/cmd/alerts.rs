//! `ci-warm alerts list|ack|poll`: the alert relay for operators and the CI's builder loop.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::Global;
use crate::config::Config;
use crate::ops::relay::{self, Found};
use crate::platform::exit::{self, Exit};

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// New (unacknowledged) alerts, oldest first.
    List,
    /// Acknowledge alerts: move them to `alerts/seen/` (atomically, one rename each).
    Ack {
        /// Alert ids (the file names, with or without `.json`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Acknowledge every new alert.
        #[arg(long)]
        all: bool,
    },
    /// For the builder loop: print new alerts; archive each only once its consumer acknowledged
    /// it (`--ack-stdin`, or `alerts ack` later). One poller delivers at a time.
    Poll {
        /// After printing each alert, wait for its id on stdin (one line) before archiving it
        /// and printing the next; stdin closing stops the poll, the alert stays new.
        #[arg(long)]
        ack_stdin: bool,
        /// Keep polling until killed (needs `--ack-stdin`: without acknowledgements a
        /// follower could only lose alerts or repeat them forever).
        #[arg(long, requires = "ack_stdin")]
        follow: bool,
        /// Pause between two polls with `--follow`.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        interval_secs: u64,
    },
}

pub fn run(global: &Global, cmd: AlertsCmd) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let state_dir = &config.state_dir;
    match cmd {
        AlertsCmd::List => {
            let found = relay::list(state_dir)?;
            if global.json {
                let alerts: Vec<_> = found.iter().map(|f| &f.alert).collect();
                super::print_json(&alerts)?;
            } else if found.is_empty() {
                println!("no new alerts");
            } else {
                for f in &found {
                    println!("{}", line(f));
                }
            }
            Ok(exit::OK)
        }
        AlertsCmd::Ack { ids, all } => {
            let acked = if all {
                relay::ack_all(state_dir)?
            } else {
                relay::ack(state_dir, &ids).map_err(|e| match e {
                    relay::RelayError::BadId(_) | relay::RelayError::Unknown { .. } => {
                        anyhow::Error::new(Exit::new(exit::USAGE, e.to_string()))
                    }
                    other => other.into(),
                })?
            };
            if global.json {
                super::print_json(&acked)?;
            } else {
                for a in &acked {
                    let note = if a.moved {
                        ""
                    } else {
                        " (already acknowledged)"
                    };
                    println!("acknowledged {}{note}", a.id);
                }
            }
            Ok(exit::OK)
        }
        AlertsCmd::Poll {
            ack_stdin,
            follow,
            interval_secs,
        } => loop {
            if ack_stdin && !global.json {
                return Err(Exit::new(
                    exit::USAGE,
                    "--ack-stdin needs --json: the consumer acknowledges each alert by its id",
                )
                .into());
            }
            let mut out = std::io::stdout().lock();
            let mut stdin = std::io::stdin().lock();
            let mut read_ack = |f: &Found| read_ack(&mut stdin, &f.alert.id);
            let ack: Option<&mut relay::AckFn<'_>> =
                if ack_stdin { Some(&mut read_ack) } else { None };
            let n = relay::poll(
                state_dir,
                |f| {
                    if global.json {
                        serde_json::to_writer(&mut out, &f.alert).map_err(std::io::Error::other)?;
                        writeln!(out)?;
                    } else {
                        writeln!(out, "{}", line(f))?;
                    }
                    out.flush()
                },
                ack,
            )
            .context("polling alerts")?;
            tracing::debug!(delivered = n, "poll done");
            if !follow {
                return Ok(exit::OK);
            }
            drop(out);
            std::thread::sleep(Duration::from_secs(interval_secs));
        },
    }
}

/// Waits for the consumer's acknowledgement of alert `id`: one line on stdin holding the id
/// (with or without `.json`). End of input, a read error or another id leaves the alert new.
fn read_ack(stdin: &mut impl BufRead, id: &str) -> Result<(), relay::RelayError> {
    let not_acked = |why: String| relay::RelayError::NotAcked {
        id: id.to_owned(),
        why,
    };
    let mut line = String::new();
    match stdin.read_line(&mut line) {
        Ok(0) => Err(not_acked(
            "stdin ended: the consumer went away before acknowledging it".to_owned(),
        )),
        Ok(_) => {
            let got = line.trim();
            if got.strip_suffix(".json").unwrap_or(got) == id {
                Ok(())
            } else {
                Err(not_acked(format!(
                    "the consumer acknowledged {got:?} instead (one id per line, in order)"
                )))
            }
        }
        Err(e) => Err(not_acked(format!("reading stdin: {e}"))),
    }
}

fn line(f: &Found) -> String {
    let a = &f.alert;
    format!(
        "{}  {}  {}{}  {}",
        a.time,
        a.app,
        a.kind.as_str(),
        if a.recovered { "" } else { " (NOT recovered)" },
        a.message
    )
}
