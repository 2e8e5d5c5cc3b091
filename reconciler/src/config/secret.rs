//! Reading a configured [`Secret`]: a file, or a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`, what `LoadCredential=` provides). Secrets are read at use,
//! held in [`SecretString`] (whose `Debug` is redacted) and never put in argv, logs or errors.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Secret;

/// A secret value; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the secret file {path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "the secret is the systemd credential {name:?}, but $CREDENTIALS_DIRECTORY is not set \
         (run under the unit that loads it, or configure {{\"file\": \"/absolute/path\"}})"
    )]
    NoCredentialsDirectory { name: String },
}

/// Reads `secret`, looking up credentials in `$CREDENTIALS_DIRECTORY`.
pub fn read(secret: &Secret) -> Result<SecretString, SecretError> {
    match secret {
        Secret::File(path) => read_file(path),
        Secret::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .ok_or_else(|| SecretError::NoCredentialsDirectory { name: name.clone() })?;
            // The name was validated on config load (no '/', no '..').
            read_file(&Path::new(&dir).join(name))
        }
    }
}

/// Reads a secret file; one trailing newline (as editors and `echo` add) is not part of it.
pub fn read_file(path: &Path) -> Result<SecretString, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(SecretString(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_with_and_without_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        for (content, want) in [
            ("hunter2\n", "hunter2"),
            ("hunter2", "hunter2"),
            ("hunter2\r\n", "hunter2"),
            (" spaced \n\n", " spaced \n"),
        ] {
            std::fs::write(&p, content).unwrap();
            assert_eq!(read_file(&p).unwrap().expose(), want, "{content:?}");
        }
        std::fs::write(&p, "\n").unwrap();
        assert!(read_file(&p).unwrap_err().to_string().contains("is empty"));
        let e = read(&Secret::File(d.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
