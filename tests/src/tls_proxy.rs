//! A real TLS-terminating, SNI-routing reverse proxy (Debian's nginx) in front of apps on this
//! host: what traefik does for every app on a CI host, so the health gate's probes are tested
//! through a real handshake, a real certificate check and real name routing.
//!
//! The proxy gets a private CA and one server certificate per name, made with the `openssl`
//! command for this run; a name it does not know is answered by a default server whose
//! certificate is for `default.invalid` (and which would answer 421), as traefik answers with its
//! default certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The name on the default server's certificate.
pub const DEFAULT_NAME: &str = "default.invalid";

pub struct TlsProxy {
    /// The loopback port the proxy listens on (HTTPS).
    pub port: u16,
    /// The CA that signed every server certificate (a PEM file for a probe's `ca_file`).
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
    nginx: Option<Child>,
}

impl TlsProxy {
    /// Starts nginx routing each `(name, upstream port)` to `http://127.0.0.1:<port>`.
    pub fn start(sites: &[(&str, u16)]) -> anyhow::Result<TlsProxy> {
        let dir = tempfile::tempdir().context("proxy directory")?;
        let ca_file = make_ca(dir.path())?;
        make_cert(dir.path(), DEFAULT_NAME)?;
        for (name, _) in sites {
            make_cert(dir.path(), name)?;
        }
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        // nginx binds the port itself, a moment after we chose it: another process may have
        // taken it in between, so a proxy that could not bind is started again on another.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), port, sites))?;
            let mut nginx = Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .spawn()
                .context("starting nginx (scripts/setup.sh installs Debian's nginx)")?;
            match wait_listening(&mut nginx, port, dir.path()) {
                Ok(()) => {
                    return Ok(TlsProxy {
                        port,
                        ca_file,
                        dir,
                        nginx: Some(nginx),
                    });
                }
                Err(e) => {
                    last_error = format!("{e:#}");
                    stop(nginx);
                }
            }
        }
        bail!("nginx did not start: {last_error}")
    }

    /// What nginx logged (for failure messages).
    pub fn error_log(&self) -> String {
        error_log(self.dir.path())
    }

    /// `127.0.0.1:<port>`: where a probe's `connect_to` sends its connection.
    pub fn connect_to(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(nginx) = self.nginx.take() {
            stop(nginx);
        }
    }
}

/// Waits until nginx accepts connections, or fails naming its error log.
fn wait_listening(nginx: &mut Child, port: u16, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = nginx.try_wait()? {
            bail!("nginx exited with {status}: {}", error_log(dir));
        }
        if Instant::now() >= deadline {
            bail!(
                "nginx did not listen on {port} within 60 s: {}",
                error_log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn error_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
}

/// SIGTERM to the master, which stops its workers (SIGKILL would orphan them), then reap it.
fn stop(mut nginx: Child) {
    if nginx.try_wait().ok().flatten().is_none() {
        let _ = Command::new("kill")
            .args(["-TERM", &nginx.id().to_string()])
            .status();
    }
    let _ = nginx.wait();
}

fn config(dir: &Path, port: u16, sites: &[(&str, u16)]) -> String {
    let d = dir.display();
    let tls = |name: &str| {
        format!("ssl_certificate {d}/{name}.pem;\n    ssl_certificate_key {d}/{name}.key;")
    };
    let mut servers = format!(
        "  server {{\n    listen 127.0.0.1:{port} ssl default_server;\n    server_name _;\n    {}\n    return 421;\n  }}\n",
        tls(DEFAULT_NAME)
    );
    for (name, upstream) in sites {
        servers.push_str(&format!(
            "  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {name};\n    {}\n    location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n      proxy_set_header Host $host;\n    }}\n  }}\n",
            tls(name)
        ));
    }
    // Root runs the tests; nginx would drop its workers to `nobody`, who cannot read the keys
    // in the test's private directory.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n{servers}}}\n"
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl (scripts/setup.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A CA for this run: `ca.pem` (returned) and `ca.key`.
fn make_ca(dir: &Path) -> anyhow::Result<PathBuf> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ci-warm test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    Ok(dir.join("ca.pem"))
}

/// `<name>.pem` and `<name>.key`, a server certificate for `name` signed by the run's CA.
fn make_cert(dir: &Path, name: &str) -> anyhow::Result<()> {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    )
}
