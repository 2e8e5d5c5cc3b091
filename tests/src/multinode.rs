//! A throw-away multi-node Docker Swarm on the test machine (`shared/multinode-notes.md`): extra
//! `dockerd`s, each in its own network, mount and UTS namespace, joined by a bridge that lives in
//! a namespace of its own, on a private /24 that exists only inside those namespaces. Nothing is
//! added to the host's network namespace, and the host's own dockerd is never touched.
//!
//! Node 0 is the manager (where ci-warm runs in these tests), the others join as workers.
//! [`Swarm`] tears everything down when dropped, also when the test panics: the containers in
//! each daemon's cgroup, the daemons and their containerds (by pid), the namespaces (and with
//! them the veths and the bridge), the cgroup dirs and the data roots.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Prefix of every namespace, cgroup and directory of a throw-away swarm: scripts/test.sh's
/// leftover check looks for it.
pub const PREFIX: &str = "ciwt-mn";

/// The cgroup v1 controllers a daemon's `--cgroup-parent` shows up under.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long a node may take to answer after it was started, or to stop.
const DAEMON_DEADLINE: Duration = Duration::from_secs(60);

pub struct Node {
    /// `ciwt-mn-<id>-n1`: the network namespace, cgroup parent and hostname.
    pub name: String,
    pub dir: PathBuf,
    pub ip: String,
    /// The daemon itself (the launcher execs into dockerd, so this is dockerd's pid).
    daemon: Option<Child>,
    /// Inode of the daemon's mount namespace: every process left in it (containerd, shims)
    /// is ours to stop.
    mnt_ns: Option<u64>,
}

impl Node {
    /// The daemon's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("d.sock")
    }

    /// `DOCKER_HOST` for this node.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's data root: its volumes live under `<data root>/volumes`.
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `docker -H <this node>`.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(self.docker_host());
        c
    }

    /// Runs `docker -H <node> ARGS` and returns its trimmed stdout.
    pub fn docker_out(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.docker().args(args))
    }

    /// `program` inside this node's network namespace (for reaching its host-mode ports on
    /// 127.0.0.1), with `DOCKER_HOST` pointing at its daemon.
    pub fn command_in_netns(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("--")
            .arg(program)
            .env("DOCKER_HOST", self.docker_host());
        c
    }

    /// The swarm node id of this daemon.
    pub fn node_id(&self) -> anyhow::Result<String> {
        self.docker_out(&["info", "--format", "{{.Swarm.NodeID}}"])
    }
}

pub struct Swarm {
    pub id: String,
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    namespaces: Vec<String>,
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// What the harness needs from the machine; `Err` names what is missing.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a throw-away swarm needs root (network namespaces, mounts, a dockerd)");
    }
    for tool in ["dockerd", "ip", "unshare", "nsenter", "docker"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("{tool} is not installed");
        }
    }
    Ok(())
}

impl Swarm {
    /// A swarm of `n` nodes, or `None` (the test returns early) when this machine cannot run
    /// one; with `CI` or `CI_WARM_REQUIRE_DOCKER` set that is a failure instead, with the reason.
    pub fn require(n: usize) -> Option<Swarm> {
        let started = preflight().and_then(|()| Swarm::start(n));
        match started {
            Ok(s) => Some(s),
            Err(e) if crate::docker::docker_required() => {
                panic!("a throw-away {n}-node swarm is required but could not start: {e:#}")
            }
            Err(e) => {
                eprintln!("skipping: no throw-away swarm: {e:#}");
                None
            }
        }
    }

    /// Starts `n` daemons and makes node 0 the manager, the others workers. On an error the
    /// part already built is torn down (the half-built [`Swarm`] is dropped).
    pub fn start(n: usize) -> anyhow::Result<Swarm> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let root = PathBuf::from(format!("/tmp/{PREFIX}-{id}"));
        let mut swarm = Swarm {
            id: id.clone(),
            root: root.clone(),
            nodes: Vec::new(),
            namespaces: Vec::new(),
        };
        sweep_stale();
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("removing a stale {}", root.display()))?;
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        // Who owns the swarm: a later run sweeps it if this process dies without its Drop.
        std::fs::write(root.join("owner"), std::process::id().to_string())
            .context("writing the owner file")?;
        let bridge_ns = format!("{PREFIX}-{id}-br");
        ip(&["netns", "add", &bridge_ns])?;
        swarm.namespaces.push(bridge_ns.clone());
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let node = swarm.start_node(i, &bridge_ns)?;
            swarm.nodes.push(node);
        }
        let deadline = Instant::now() + DAEMON_DEADLINE;
        for node in &mut swarm.nodes {
            wait_daemon(node, deadline)?;
        }
        let manager = &swarm.nodes[0];
        manager.docker_out(&["swarm", "init", "--advertise-addr", &manager.ip])?;
        let token = manager.docker_out(&["swarm", "join-token", "-q", "worker"])?;
        let addr = format!("{}:2377", manager.ip);
        for w in &swarm.nodes[1..] {
            w.docker_out(&["swarm", "join", "--token", &token, &addr])?;
        }
        swarm.wait_ready(n, deadline)?;
        Ok(swarm)
    }

    fn start_node(&mut self, i: usize, bridge_ns: &str) -> anyhow::Result<Node> {
        let name = format!("{PREFIX}-{}-n{}", self.id, i + 1);
        let dir = self.root.join(format!("n{}", i + 1));
        let ip_addr = format!("192.168.249.{}", 11 + i);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        let port = format!("v{}", i + 1);
        ip(&[
            "-n", bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &name,
        ])?;
        ip(&["-n", bridge_ns, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ip_addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        for sub in ["cg", "data", "exec"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        // Its own config file: the host's /etc/docker/daemon.json is not this daemon's.
        std::fs::write(dir.join("daemon.json"), "{}\n").context("writing daemon.json")?;
        let d = dir.display();
        // A fresh sysfs (else dockerd sees and touches the host's interfaces of the same names)
        // hides /sys/fs/cgroup, so the cgroup tree is bound aside first and back after; the
        // tmpfs over /run/containerd hides the host's containerd so dockerd starts its own;
        // the hostname becomes the swarm node's hostname.
        let script = format!(
            "set -e
mount --rbind /sys/fs/cgroup {d}/cg
mount -t sysfs sysfs /sys
mount --rbind {d}/cg /sys/fs/cgroup
umount -l {d}/cg
if [ -d /run/containerd ]; then mount -t tmpfs tmpfs /run/containerd; fi
hostname {name}
exec dockerd --config-file {d}/daemon.json --data-root {d}/data --exec-root {d}/exec \
  -H unix://{d}/d.sock --pidfile {d}/d.pid --cgroup-parent /{name} \
  --exec-opt native.cgroupdriver=cgroupfs"
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).context("creating the log")?;
        let err = log.try_clone().context("cloning the log handle")?;
        let child = Command::new("unshare")
            .args(["--mount", "--uts", "--propagation", "slave", "--"])
            .arg("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .args(["--", "sh", "-c", &script])
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .context("starting dockerd in its namespaces")?;
        Ok(Node {
            name,
            dir,
            ip: ip_addr,
            daemon: Some(child),
            mnt_ns: None,
        })
    }

    fn wait_ready(&self, n: usize, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let ready = self.nodes[0]
                .docker_out(&["node", "ls", "--format", "{{.Status}}"])
                .map(|o| o.lines().filter(|l| *l == "Ready").count())
                .unwrap_or(0);
            if ready == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {ready} of {n} swarm nodes became Ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn worker(&self) -> &Node {
        &self.nodes[1]
    }

    /// Copies local images into every node (`docker save | docker -H <node> load`): no
    /// registry is reachable from the namespaces.
    pub fn load_images(&self, images: &[String]) -> anyhow::Result<()> {
        let tar = self.root.join("images.tar");
        run(Command::new("docker")
            .env_remove("DOCKER_HOST")
            .arg("save")
            .arg("-o")
            .arg(&tar)
            .args(images))?;
        for node in &self.nodes {
            run(node.docker().arg("load").arg("-i").arg(&tar))?;
        }
        std::fs::remove_file(&tar).with_context(|| format!("removing {}", tar.display()))
    }

    /// Tears everything down; errors are collected, every step is attempted.
    fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for node in &mut self.nodes {
            errors.extend(stop_node(node));
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "delete", &ns]) {
                errors.push(format!("{e:#}"));
            }
        }
        for node in &self.nodes {
            errors.extend(remove_cgroups(&node.name));
            errors.extend(unmount_below(&node.dir));
        }
        if self.root.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.root)
        {
            errors.push(format!("removing {}: {e}", self.root.display()));
        }
        errors
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let errors = self.teardown();
        if !errors.is_empty() {
            let msg = format!("tearing down swarm {}: {}", self.id, errors.join("; "));
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

fn wait_daemon(node: &mut Node, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if node
            .docker_out(&["version", "--format", "{{.Server.Version}}"])
            .is_ok()
        {
            let pid = node.daemon.as_ref().map(Child::id).context("no daemon")?;
            node.mnt_ns = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
                .map(|m| m.ino())
                .ok();
            return Ok(());
        }
        if let Some(child) = node.daemon.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(node.dir.join("dockerd.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            bail!("dockerd of {} exited ({status}): {tail}", node.name);
        }
        if Instant::now() > deadline {
            bail!(
                "dockerd of {} did not answer within {DAEMON_DEADLINE:?}",
                node.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of the processes in the node's cgroup (its containers), read from every controller.
fn cgroup_pids(name: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(controllers) = std::fs::read_dir(CGROUP_ROOT) else {
        return pids;
    };
    for c in controllers.flatten() {
        let dir = c.path().join(name);
        collect_procs(&dir, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), pids);
            }
        }
    }
}

/// Pids of the processes in the mount namespace `ino` (the daemon, its containerd, shims).
fn mount_ns_pids(ino: u64) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m.ino() == ino)
        })
        .collect()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we read from our own daemon's cgroup or namespace.
    unsafe {
        libc::kill(pid, sig);
    }
}

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;

/// Stops a node: its containers first (an app ignoring SIGTERM would cost dockerd's grace),
/// then dockerd (it stops its containerd), then whatever is left in its mount namespace.
fn stop_node(node: &mut Node) -> Vec<String> {
    let mut errors = Vec::new();
    for pid in cgroup_pids(&node.name) {
        kill(pid, SIGKILL);
    }
    if let Some(mut child) = node.daemon.take() {
        kill(child.id() as i32, SIGTERM);
        let deadline = Instant::now() + DAEMON_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    errors.push(format!("dockerd of {} ignored SIGTERM; killed", node.name));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Err(e) => {
                    errors.push(format!("waiting for dockerd of {}: {e}", node.name));
                    break;
                }
            }
        }
    }
    if let Some(ino) = node.mnt_ns {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = mount_ns_pids(ino);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                errors.push(format!(
                    "processes of {} would not stop: {left:?}",
                    node.name
                ));
                break;
            }
            for pid in left {
                kill(pid, SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Container processes were killed first; anything that raced into the cgroup since goes too.
    for pid in cgroup_pids(&node.name) {
        kill(pid, SIGKILL);
    }
    errors
}

/// Removes the node's cgroup dirs under every controller, deepest first (a cgroup dir can only
/// be removed once empty, and its processes may take a moment to be reaped).
fn remove_cgroups(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let Ok(controllers) = std::fs::read_dir(CGROUP_ROOT) else {
        return errors;
    };
    for c in controllers.flatten() {
        let dir = c.path().join(name);
        if !dir.exists() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match remove_cgroup_tree(&dir) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    errors.push(format!("removing cgroup {}: {e}", dir.display()));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    errors
}

fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Mounts below `dir` as the host sees them: none are expected (the daemon's mounts live and
/// die in its own mount namespace), but one left would make the data root impossible to remove.
fn unmount_below(dir: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
        .into_iter()
        .filter_map(|p| {
            run(Command::new("umount").arg("-l").arg(p))
                .err()
                .map(|e| format!("{e:#}"))
        })
        .collect()
}

/// Tears down the swarms of test processes that died without running their Drop (killed by a
/// timeout, say): their daemons by the pids in their pidfiles (only if that process still runs
/// dockerd on that swarm's socket), then namespaces, cgroups and directories.
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let root = e.path();
        let owner = std::fs::read_to_string(root.join("owner"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if owner.is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        eprintln!(
            "sweeping the throw-away swarm {} of a dead test process",
            root.display()
        );
        let Ok(nodes) = std::fs::read_dir(&root) else {
            continue;
        };
        for n in nodes.flatten().filter(|n| n.path().is_dir()) {
            let dir = n.path();
            let node_name = format!("{PREFIX}-{id}-{}", n.file_name().to_string_lossy());
            for pid in cgroup_pids(&node_name) {
                kill(pid, SIGKILL);
            }
            let pid = std::fs::read_to_string(dir.join("d.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
                    .unwrap_or(false);
                let mnt = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino());
                if ours {
                    kill(pid, SIGKILL);
                    if let Ok(ino) = mnt {
                        for p in mount_ns_pids(ino) {
                            kill(p, SIGKILL);
                        }
                    }
                }
            }
            let _ = ip(&["netns", "delete", &node_name]);
            remove_cgroups(&node_name);
            unmount_below(&dir);
        }
        let _ = ip(&["netns", "delete", &format!("{PREFIX}-{id}-br")]);
        if let Err(e) = std::fs::remove_dir_all(&root) {
            eprintln!("could not remove {}: {e}", root.display());
        }
    }
}
