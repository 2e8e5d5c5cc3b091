//! Per-run Keycloak realms on the warm keycloak (DESIGN.md, "Canonicals and CI integration").
//!
//! A CI run gets its own realm `<prefix>-<run>` with one confidential client and one test user,
//! so concurrent runs never share (or clobber) SSO state. ci-warm marks the realms it creates
//! with realm attributes (`ci-warm.run`, `ci-warm.created`); `reap` and `delete` only ever touch
//! marked realms, and `master` never. The realm, its client and its user are created by a single
//! `POST /admin/realms`, so a realm exists complete or not at all; two runs never collide because
//! their names differ, and a reused run id is refused by keycloak's 409 instead of overwritten.

mod admin;
mod reap;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use admin::{Admin, AdminError, Created, RealmRep};
pub use reap::{Kept, LiveSource, ReapPlan, live_runs, plan as plan_reap};

use crate::config::names::{self, NameError};
use crate::config::secret::SecretString;
use crate::platform::atomic;

/// The realm that holds keycloak's own admins; never deleted.
pub const MASTER: &str = "master";
/// Realm attribute: the run a per-run realm belongs to (also what marks it as ci-warm's).
pub const MARK_RUN: &str = "ci-warm.run";
/// Realm attribute: creation time, seconds since the Unix epoch.
pub const MARK_CREATED: &str = "ci-warm.created";
/// Version of the credentials file's layout (docs/cli.md).
pub const CREDENTIALS_SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RealmError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("refusing to touch the master realm: it holds keycloak's own admins")]
    Master,
    #[error(
        "realm {realm} exists already (run id reused?); delete it first with `ci-warm realm \
         delete --realm {realm}`"
    )]
    Exists { realm: String },
    #[error(
        "realm {realm} was not created by ci-warm (it has no {MARK_RUN} attribute); refusing to \
         delete it"
    )]
    NotPerRun { realm: String },
    #[error("cannot read random bytes for the realm's secrets from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
    /// The credentials file cannot be written: found before the realm is created.
    #[error("cannot write the credentials file: {source}; no realm was created")]
    Output {
        #[source]
        source: atomic::AtomicWriteError,
    },
    /// Writing failed after the realm was created; `cleanup` says what became of the realm.
    #[error("writing the credentials of realm {realm}: {source}; {cleanup}")]
    Credentials {
        realm: String,
        #[source]
        source: atomic::AtomicWriteError,
        cleanup: String,
    },
}

/// The realm name of a run: `<prefix>-<run>`, both parts validated so a run id can neither
/// escape the admin API's URL path nor pass for `master`.
pub fn realm_name(prefix: &str, run: &str) -> Result<String, NameError> {
    names::check("realm prefix", prefix)?;
    names::check("run id", run)?;
    let name = format!("{prefix}-{run}");
    names::check("realm", &name)?;
    Ok(name)
}

/// What `create` makes.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub prefix: String,
    pub run: String,
    pub client_id: String,
    pub username: String,
}

/// The credentials file's content (mode 0600; its layout is documented in docs/cli.md).
#[derive(Clone, Serialize)]
pub struct Credentials {
    pub schema: u32,
    pub url: String,
    pub realm: String,
    /// OIDC issuer: `<url>/realms/<realm>`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub run: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// Creates the run's realm and writes its credentials to `output` (mode 0600). The file is
/// prepared first (its directory exists and takes a new private file, and nothing is at
/// `output` yet), so a bad `-o` creates no realm; if writing still fails once the realm exists,
/// the realm is deleted again (best effort, and the error says whether it was), so no realm
/// exists that nobody can log into.
pub async fn create(
    admin: &Admin,
    req: &CreateRequest,
    output: &Path,
    now: SystemTime,
) -> Result<Credentials, RealmError> {
    let realm = realm_name(&req.prefix, &req.run)?;
    names::check("client id", &req.client_id)?;
    names::check("user name", &req.username)?;
    let creds = Credentials {
        schema: CREDENTIALS_SCHEMA,
        url: admin.url().to_owned(),
        issuer: format!("{}/realms/{realm}", admin.url()),
        realm: realm.clone(),
        client_id: req.client_id.clone(),
        client_secret: random_token()?.expose().to_owned(),
        username: req.username.clone(),
        password: random_token()?.expose().to_owned(),
        run: req.run.clone(),
        created_at: humantime::format_rfc3339_seconds(now).to_string(),
    };
    let created = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rep = serde_json::json!({
        "realm": realm,
        "enabled": true,
        "displayName": format!("ci-warm run {}", req.run),
        "attributes": {
            MARK_RUN: req.run,
            MARK_CREATED: created.to_string(),
        },
        "clients": [{
            "clientId": req.client_id,
            "enabled": true,
            "publicClient": false,
            "clientAuthenticatorType": "client-secret",
            "secret": creds.client_secret,
            "standardFlowEnabled": true,
            "directAccessGrantsEnabled": true,
            "serviceAccountsEnabled": true,
            "redirectUris": ["*"],
            "webOrigins": ["*"],
        }],
        "users": [{
            "username": req.username,
            "enabled": true,
            "email": format!("{}@{realm}.invalid", req.username),
            "emailVerified": true,
            "firstName": "CI",
            "lastName": format!("run {}", req.run),
            "credentials": [{"type": "password", "value": creds.password, "temporary": false}],
        }],
    });
    let staged = match Staged::new(output) {
        Ok(s) => s,
        // A reused run id usually comes with its old credentials file: name the real problem.
        Err(_) if admin.realm(&realm).await?.is_some() => {
            return Err(RealmError::Exists { realm });
        }
        Err(source) => return Err(RealmError::Output { source }),
    };
    match admin.create_realm(&rep).await? {
        Created::Created => {}
        Created::Exists => return Err(RealmError::Exists { realm }),
    }
    if let Err(source) = staged.commit(&creds) {
        let cleanup = match admin.delete_realm(&realm).await {
            Ok(_) => "the realm was deleted again".to_owned(),
            Err(e) => {
                tracing::warn!(%realm, "cannot delete the realm after failing to write its credentials: {e}");
                format!(
                    "deleting the realm again failed too ({e}): delete it with `ci-warm realm \
                     delete --realm {realm}`"
                )
            }
        };
        return Err(RealmError::Credentials {
            realm,
            source,
            cleanup,
        });
    }
    tracing::info!(%realm, path = %output.display(), "created per-run realm");
    Ok(creds)
}

/// What `delete` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deleted {
    Deleted,
    AlreadyGone,
}

/// Deletes a per-run realm; a realm that does not exist is already deleted.
pub async fn delete(admin: &Admin, realm: &str) -> Result<Deleted, RealmError> {
    if realm == MASTER {
        return Err(RealmError::Master);
    }
    names::check("realm", realm)?;
    let Some(rep) = admin.realm(realm).await? else {
        return Ok(Deleted::AlreadyGone);
    };
    if rep.attribute(MARK_RUN).is_none() {
        return Err(RealmError::NotPerRun {
            realm: realm.to_owned(),
        });
    }
    Ok(if admin.delete_realm(realm).await? {
        Deleted::Deleted
    } else {
        Deleted::AlreadyGone
    })
}

/// What `reap` did: the plan, and the realms it failed to delete.
#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    pub deleted: Vec<String>,
    pub kept: Vec<Kept>,
    pub ignored: Vec<String>,
    pub failed: Vec<Failed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub realm: String,
    pub error: String,
}

/// Deletes the per-run realms of dead runs older than `grace`; one failed delete does not stop
/// the others.
pub async fn reap(
    admin: &Admin,
    live: &BTreeSet<String>,
    grace: Duration,
    now: SystemTime,
) -> Result<Reaped, RealmError> {
    let realms = admin.realms().await?;
    let plan = plan_reap(&realms, live, grace, now);
    let mut out = Reaped {
        deleted: Vec::new(),
        kept: plan.kept,
        ignored: plan.ignored,
        failed: Vec::new(),
    };
    for realm in plan.delete {
        match admin.delete_realm(&realm).await {
            Ok(_) => {
                tracing::info!(%realm, "reaped per-run realm");
                out.deleted.push(realm);
            }
            Err(e) => {
                tracing::warn!(%realm, "cannot reap realm: {e}");
                out.failed.push(Failed {
                    realm,
                    error: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// 32 random bytes, hex: a client secret or a user password.
fn random_token() -> Result<SecretString, RealmError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(RealmError::Random)?;
    Ok(SecretString::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

/// A private file being written to `path` the way `crate::platform::atomic` does (temporary
/// file, fsync, publish), except that the temporary file gets an unpredictable name and is
/// created exclusively: `atomic::write`'s temporary name is predictable, which is fine in
/// ci-warm's own state dir but not in a CI workspace other users can write to, where it could
/// be raced with a world-readable file or a symlink. Created with mode 0600, the file is never
/// readable by anyone else; it is published with a hard link, which never replaces what
/// appeared at `path` meanwhile. Dropped uncommitted, it removes its temporary file.
struct Staged {
    path: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
}

impl Staged {
    /// Checks that `path` is free and that its directory takes a new private file.
    fn new(path: &Path) -> Result<Staged, atomic::AtomicWriteError> {
        use std::fs::{OpenOptions, Permissions};
        use std::io;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        let err = |op: &'static str| {
            let path = path.to_owned();
            move |source| atomic::AtomicWriteError { path, op, source }
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "it names no file"))
            .map_err(err("naming the file"))?;
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(err("checking that the name is free")(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "something exists there already (credentials are never written over \
                     another file); remove it or choose another --output",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("checking that the name is free")(e)),
        }
        let nonce = random_token()
            .map_err(|e| io::Error::other(e.to_string()))
            .map_err(err("naming the temporary file"))?;
        let tmp = dir.join(format!(
            "{}{}.{}.{}",
            atomic::TMP_PREFIX,
            name.to_string_lossy(),
            std::process::id(),
            &nonce.expose()[..16]
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("creating a file in its directory"))?;
        let staged = Staged {
            path: path.to_owned(),
            dir,
            tmp,
            file: Some(file),
        };
        // The umask can only have narrowed 0600; make it exactly 0600 for the owner.
        if let Some(f) = &staged.file {
            f.set_permissions(Permissions::from_mode(0o600))
                .map_err(err("setting mode 0600"))?;
        }
        Ok(staged)
    }

    /// Writes `value` as JSON and publishes the file at its path.
    fn commit<T: Serialize>(mut self, value: &T) -> Result<(), atomic::AtomicWriteError> {
        use std::io::{self, Write};

        let path = self.path.clone();
        let err = |op: &'static str| {
            let path = path.clone();
            move |source| atomic::AtomicWriteError { path, op, source }
        };
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(io::Error::other)
            .map_err(err("serializing"))?;
        bytes.push(b'\n');
        let mut f = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already committed"))
            .map_err(err("writing"))?;
        f.write_all(&bytes).map_err(err("writing"))?;
        f.sync_all().map_err(err("fsyncing the file"))?;
        std::fs::hard_link(&self.tmp, &self.path).map_err(err("publishing"))?;
        atomic::sync_dir(&self.dir).map_err(err("fsyncing the directory"))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Published or not, the temporary name goes.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Where `create` writes the credentials when not told: `<realm>.credentials.json` in the
/// current directory (the CI run's workspace).
pub fn default_output(realm: &str) -> PathBuf {
    PathBuf::from(format!("{realm}.credentials.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_names_are_validated() {
        assert_eq!(realm_name("demo", "1234").unwrap(), "demo-1234");
        assert_eq!(realm_name("ci", "run.7-a_b").unwrap(), "ci-run.7-a_b");
        for (prefix, run) in [
            ("demo", "../master"),
            ("demo", "a/b"),
            ("demo", ""),
            ("demo", "..x"),
            ("demo", "Upper"),
            ("demo", "a b"),
            ("demo", "%2e%2e"),
            ("", "1"),
            ("../x", "1"),
        ] {
            assert!(realm_name(prefix, run).is_err(), "{prefix:?} {run:?}");
        }
        let long = "a".repeat(60);
        let e = realm_name("demo", &long).unwrap_err().to_string();
        assert!(e.contains("realm") && e.contains("64"), "{e}");
    }

    #[test]
    fn tokens_are_random_and_long() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
