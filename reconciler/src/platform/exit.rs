//! Process exit codes: a contract with systemd units and CI scripts (documented in docs/cli.md).

/// Success, or nothing to do.
pub const OK: u8 = 0;
/// An error not covered by a more specific code (I/O, Docker unreachable, ...).
pub const FAILURE: u8 = 1;
/// Bad command line or invalid config.
pub const USAGE: u8 = 2;
/// An upgrade failed and the app was rolled back to its last good version and data.
pub const ROLLED_BACK: u8 = 4;
/// An upgrade failed and the app could not be recovered; a person is needed.
pub const NOT_RECOVERED: u8 = 5;
/// `quick` found no canonical to upgrade from (not enrolled, or no known-good yet): run the
/// cold lane instead (sysexits' EX_UNAVAILABLE).
pub const NO_CANONICAL: u8 = 69;
/// Another ci-warm process holds the app's lock (sysexits' EX_TEMPFAIL).
pub const BUSY: u8 = 75;

/// An error that already knows the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: message.into(),
        }
    }
}

/// The exit code for an error chain: the first layer that knows one wins.
pub fn code_for(err: &anyhow::Error) -> u8 {
    code_with(err, |_| None)
}

/// As [`code_for`], with `known` asked first about each layer: for error types of the layers
/// above this one (the config's), which this module cannot name.
pub fn code_with(
    err: &anyhow::Error,
    known: impl Fn(&(dyn std::error::Error + 'static)) -> Option<u8>,
) -> u8 {
    for cause in err.chain() {
        if let Some(code) = known(cause) {
            return code;
        }
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return e.code;
        }
        if let Some(super::lock::LockError::Busy { .. }) = cause.downcast_ref() {
            return BUSY;
        }
    }
    FAILURE
}
