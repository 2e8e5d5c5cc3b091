//! HTTP probes of the health gate: reach an app the way its users do, through traefik, over
//! HTTPS, by its domain.
//!
//! `connect_to` sends the connection to an address of this host while the TLS server name
//! (SNI), the certificate check and the `Host` header all keep the URL's name (curl's
//! `--resolve`): a `Host` header alone cannot do that for `https`, because the handshake happens
//! before any header is sent. `ca_file` trusts a private CA on top of the built-in public roots;
//! `insecure` skips the certificate check, visibly (a warning on every probe).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::platform::text::redact_userinfo;

/// An HTTP probe of the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub url: String,
    pub status: StatusSet,
    pub body_contains: Option<String>,
    /// Host header to send (for a plain-`http` probe of a name-routed proxy).
    pub host: Option<String>,
    pub connect_to: Option<ConnectTo>,
    /// A PEM bundle trusted in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// The certificate is not checked at all.
    pub insecure: bool,
}

impl HttpProbe {
    /// A probe expecting `200` with nothing else set.
    pub fn get(url: impl Into<String>) -> Self {
        HttpProbe {
            url: url.into(),
            status: StatusSet::exact(200),
            body_contains: None,
            host: None,
            connect_to: None,
            ca_file: None,
            insecure: false,
        }
    }

    /// How the probe is named in a reason: the URL and whatever redirects or weakens it.
    pub fn describe(&self) -> String {
        // The config refuses inline credentials; this is the second line of defence, so a reason
        // (kept in state.json, alerts and `status`) never carries a password.
        let mut s = format!("probe {}", redact_userinfo(&self.url));
        let mut notes = Vec::new();
        if let Some(c) = &self.connect_to {
            notes.push(format!("via {c}"));
        }
        if let Some(h) = &self.host {
            notes.push(format!("Host: {h}"));
        }
        if self.insecure {
            notes.push("insecure".to_owned());
        }
        if !notes.is_empty() {
            s.push_str(&format!(" ({})", notes.join(", ")));
        }
        s
    }
}

/// The statuses a probe accepts: `200`, `[200, 302]` or `"200-499"` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    pub fn exact(code: u16) -> Self {
        StatusSet(vec![(code, code)])
    }

    pub fn range(low: u16, high: u16) -> Self {
        StatusSet(vec![(low, high)])
    }

    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }

    fn checked(parts: Vec<(u16, u16)>) -> Result<Self, String> {
        if parts.is_empty() {
            return Err("an empty list of statuses accepts nothing".to_owned());
        }
        for (lo, hi) in &parts {
            for code in [lo, hi] {
                if !(100..=599).contains(code) {
                    return Err(format!("{code} is not an HTTP status (100-599)"));
                }
            }
            if lo > hi {
                return Err(format!("the range {lo}-{hi} is empty"));
            }
        }
        Ok(StatusSet(parts))
    }

    /// `"200-499"`.
    fn parse_range(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a status range like \"200-499\"");
        let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        StatusSet::checked(vec![(lo, hi)])
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet::exact(200)
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(" or "))
    }
}

impl Serialize for StatusSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [(lo, hi)] if lo == hi => s.serialize_u16(*lo),
            [(lo, hi)] => s.serialize_str(&format!("{lo}-{hi}")),
            many if many.iter().all(|(lo, hi)| lo == hi) => {
                s.collect_seq(many.iter().map(|(lo, _)| *lo))
            }
            _ => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StatusSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a status (200), a list of statuses ([200, 302]) or a range (\"200-499\")",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StatusSet, E> {
                let code = u16::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not an HTTP status (100-599)")))?;
                StatusSet::checked(vec![(code, code)]).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusSet, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not an HTTP status (100-599)")))?;
                self.visit_u64(v)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StatusSet, E> {
                StatusSet::parse_range(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StatusSet, A::Error> {
                let mut parts = Vec::new();
                while let Some(code) = seq.next_element::<u16>()? {
                    parts.push((code, code));
                }
                StatusSet::checked(parts).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a probe's connection goes instead of the URL's host: an address of this host, with
/// the URL's port unless one is given (`"127.0.0.1"`, `"127.0.0.1:8443"`, `"[::1]:8443"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTo {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl std::str::FromStr for ConnectTo {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(ConnectTo { ip, port: None });
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ConnectTo {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        Err(format!(
            "{text:?} is not an IP address with an optional port (\"127.0.0.1\", \"127.0.0.1:8443\", \"[::1]:8443\")"
        ))
    }
}

impl fmt::Display for ConnectTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (ip, Some(port)) => write!(f, "{}", SocketAddr::new(ip, port)),
        }
    }
}

impl Serialize for ConnectTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ConnectTo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What is wrong with a probe as configured, before it ever runs: the key at fault and a
/// sentence with the fix. The config check refuses these, so a probe that could never pass
/// never rolls back an upgrade.
pub fn problems(probe: &HttpProbe) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let url = match reqwest::Url::parse(&probe.url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => u,
        Ok(_) => return vec![("url", format!("{:?} has no host", probe.url))],
        Err(e) => return vec![("url", format!("{:?} is not a URL: {e}", probe.url))],
    };
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            let m = format!(
                "{:?} must be an http:// or https:// URL, not {other}://",
                probe.url
            );
            return vec![("url", m)];
        }
    };
    let name = url.host_str().unwrap_or_default().to_owned();
    if https && probe.host.is_some() && probe.connect_to.is_none() {
        out.push((
            "host",
            format!(
                "\"host\" cannot redirect an https probe: the TLS handshake (server name and \
                 certificate check) happens before any header, with the URL's host {name:?}. Put \
                 the app's domain in the URL and send the connection here with \"connect_to\", \
                 e.g. \"url\": \"https://{}{}\", \"connect_to\": \"{name}\"",
                probe.host.as_deref().unwrap_or_default(),
                url.path()
            ),
        ));
    }
    if let Some(c) = &probe.connect_to {
        if url.domain().is_none() {
            out.push((
                "connect_to",
                format!(
                    "\"connect_to\" needs a domain in the URL (the name the TLS check and Host \
                     use), not {name:?}"
                ),
            ));
        }
        if let (Some(theirs), Some(ours)) = (url.port(), c.port)
            && theirs != ours
        {
            out.push((
                "connect_to",
                format!(
                    "the URL names port {theirs} and \"connect_to\" port {ours}: give the port \
                     in one place"
                ),
            ));
        }
    }
    if !https && probe.insecure {
        out.push((
            "insecure",
            "\"insecure\" only applies to https:// URLs".to_owned(),
        ));
    }
    if !https && probe.ca_file.is_some() {
        out.push((
            "ca_file",
            "\"ca_file\" only applies to https:// URLs".to_owned(),
        ));
    }
    if probe.insecure && probe.ca_file.is_some() {
        out.push((
            "insecure",
            "\"insecure\" skips the certificate check, so \"ca_file\" would never be used: \
             keep one"
                .to_owned(),
        ));
    }
    if let Some(path) = &probe.ca_file
        && let Err(e) = load_ca_bundle(path)
    {
        out.push(("ca_file", e));
    }
    out
}

/// The certificates of a PEM bundle, or why it cannot be used (named by path).
pub fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("ca_file {}: cannot read it: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "ca_file {}: not a PEM certificate bundle: {e}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The HTTP client for one probe: its address override, trust and timeouts. Redirects are not
/// followed, so a probe can expect a 30x.
pub fn client(probe: &HttpProbe, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(c) = &probe.connect_to {
        let url = reqwest::Url::parse(&probe.url)
            .map_err(|e| format!("{:?} is not a URL: {e}", probe.url))?;
        let Some(name) = url.domain() else {
            return Err(format!(
                "connect_to needs a domain in the URL {}",
                probe.url
            ));
        };
        // reqwest uses the URL's own port when it names one; ours otherwise.
        let port = c.port.or(url.port_or_known_default()).unwrap_or(443);
        b = b.resolve(name, SocketAddr::new(c.ip, port));
    }
    if let Some(path) = &probe.ca_file {
        for cert in load_ca_bundle(path)? {
            b = b.add_root_certificate(cert);
        }
    }
    if probe.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("building the HTTP client for {}: {e}", probe.describe()))
}

/// How one probe answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Ok,
    WrongStatus {
        got: u16,
    },
    BodyMismatch {
        status: u16,
    },
    /// Connection refused, timeout, TLS, ...: the error's text.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub probe: HttpProbe,
    pub outcome: ProbeOutcome,
}

impl ProbeResult {
    /// The reason this probe fails the gate, or `None` when it passed.
    pub fn failure(&self) -> Option<String> {
        let p = &self.probe;
        let name = p.describe();
        match &self.outcome {
            ProbeOutcome::Ok => None,
            ProbeOutcome::WrongStatus { got } => {
                Some(format!("{name}: status {got}, expected {}", p.status))
            }
            ProbeOutcome::BodyMismatch { status } => Some(format!(
                "{name}: status {status} but the body does not contain {:?}",
                p.body_contains.as_deref().unwrap_or_default()
            )),
            ProbeOutcome::Failed(e) => Some(format!("{name}: {}", redact_userinfo(e))),
        }
    }
}

/// The most of a response body a probe reads: enough for any health page, bounded against a
/// misbehaving app streaming forever.
const MAX_BODY: usize = 1 << 20;

/// A probe with its client, built once per gate and reused for every look.
pub struct Prepared {
    pub probe: HttpProbe,
    client: Result<reqwest::Client, String>,
}

impl Prepared {
    pub fn new(probe: &HttpProbe, timeout: Duration) -> Self {
        Prepared {
            client: client(probe, timeout),
            probe: probe.clone(),
        }
    }

    /// Runs the probe once.
    pub async fn run(&self) -> ProbeResult {
        if self.probe.insecure {
            tracing::warn!(url = %self.probe.url, "probe with insecure: true: the server's certificate is not checked");
        }
        let outcome = match &self.client {
            Err(e) => ProbeOutcome::Failed(e.clone()),
            Ok(client) => match probe_once(client, &self.probe).await {
                Ok(o) => o,
                Err(e) => ProbeOutcome::Failed(error_chain(&e)),
            },
        };
        ProbeResult {
            probe: self.probe.clone(),
            outcome,
        }
    }
}

async fn probe_once(
    client: &reqwest::Client,
    probe: &HttpProbe,
) -> Result<ProbeOutcome, reqwest::Error> {
    let mut req = client.get(&probe.url);
    if let Some(h) = &probe.host {
        req = req.header(reqwest::header::HOST, h);
    }
    let mut resp = req.send().await?;
    let status = resp.status().as_u16();
    if !probe.status.contains(status) {
        return Ok(ProbeOutcome::WrongStatus { got: status });
    }
    let Some(needle) = &probe.body_contains else {
        return Ok(ProbeOutcome::Ok);
    };
    let mut body: Vec<u8> = Vec::new();
    while body.len() < MAX_BODY {
        match resp.chunk().await? {
            Some(c) => body.extend_from_slice(&c),
            None => break,
        }
    }
    if String::from_utf8_lossy(&body).contains(needle.as_str()) {
        Ok(ProbeOutcome::Ok)
    } else {
        Ok(ProbeOutcome::BodyMismatch { status })
    }
}

/// reqwest's top-level message ("error sending request") hides the cause (the TLS check's
/// names, a refused connection): walk the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(json: &str) -> Result<StatusSet, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn statuses_are_a_code_a_list_or_a_range() {
        assert_eq!(statuses("204").unwrap(), StatusSet::exact(204));
        let list = statuses("[200, 302]").unwrap();
        assert!(list.contains(302) && list.contains(200) && !list.contains(301));
        assert_eq!(list.to_string(), "200 or 302");
        let below_500 = statuses("\"100-499\"").unwrap();
        assert!(below_500.contains(404) && !below_500.contains(500));
        for (json, value) in [
            ("204", "204"),
            ("[200,302]", "[200,302]"),
            ("\"100-499\"", "\"100-499\""),
        ] {
            let back = serde_json::to_string(&statuses(json).unwrap()).unwrap();
            assert_eq!(back, value);
        }
        for bad in ["99", "600", "[]", "\"500-400\"", "\"2xx\"", "-1", "70000"] {
            assert!(statuses(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn connect_to_is_an_address_with_an_optional_port() {
        let c: ConnectTo = "127.0.0.1".parse().unwrap();
        assert_eq!((c.ip.to_string(), c.port), ("127.0.0.1".into(), None));
        let c: ConnectTo = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(c.port, Some(8443));
        let c: ConnectTo = "[::1]:8443".parse().unwrap();
        assert_eq!(c.to_string(), "[::1]:8443");
        assert!("localhost".parse::<ConnectTo>().is_err());
        assert!("127.0.0.1:x".parse::<ConnectTo>().is_err());
    }

    #[test]
    fn a_host_header_on_https_is_refused_with_the_fix() {
        let mut p = HttpProbe::get("https://127.0.0.1/realms/master");
        p.host = Some("sso.ci.example.org".into());
        let found = problems(&p);
        assert_eq!(found.len(), 1, "{found:?}");
        let (key, message) = &found[0];
        assert_eq!(*key, "host");
        assert!(
            message.contains("\"url\": \"https://sso.ci.example.org/realms/master\"")
                && message.contains("\"connect_to\": \"127.0.0.1\""),
            "{message}"
        );
        // The same over plain http reaches a name-routed proxy and is fine.
        p.url = "http://127.0.0.1/realms/master".into();
        assert!(problems(&p).is_empty());
    }

    #[test]
    fn contradictions_are_refused() {
        let mut p = HttpProbe::get("https://127.0.0.1/");
        p.connect_to = Some("127.0.0.1".parse().unwrap());
        assert!(problems(&p)[0].1.contains("needs a domain in the URL"));
        let mut p = HttpProbe::get("https://a.test:8443/");
        p.connect_to = Some("127.0.0.1:9443".parse().unwrap());
        assert!(problems(&p)[0].1.contains("port 8443"));
        let mut p = HttpProbe::get("http://a.test/");
        p.insecure = true;
        assert_eq!(problems(&p)[0].0, "insecure");
        let mut p = HttpProbe::get("https://a.test/");
        p.ca_file = Some("/nonexistent/ca.pem".into());
        let found = problems(&p);
        assert_eq!(found[0].0, "ca_file");
        assert!(
            found[0]
                .1
                .contains("ca_file /nonexistent/ca.pem: cannot read it"),
            "{found:?}"
        );
        assert!(
            problems(&HttpProbe::get("ftp://a.test/"))[0]
                .1
                .contains("http:// or https://")
        );
        assert_eq!(problems(&HttpProbe::get("http://"))[0].0, "url");
    }

    #[test]
    fn a_probe_is_described_with_what_redirects_or_weakens_it() {
        let mut p = HttpProbe::get("https://a.test/");
        p.connect_to = Some("127.0.0.1:8443".parse().unwrap());
        p.insecure = true;
        assert_eq!(
            p.describe(),
            "probe https://a.test/ (via 127.0.0.1:8443, insecure)"
        );
    }
}
