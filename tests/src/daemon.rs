//! A private containerd: its own socket, root and state directory, namespace and busybox image,
//! so that tests never touch a system containerd; and the teardown that leaves nothing behind.
//!
//! The daemon is run by the `strata-testenv supervise` process (see [`crate::Harness`]): the
//! supervisor tears everything down when its stdin closes, that is when the test process ends
//! however it ends (success, panic, abort, SIGKILL).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cmd::{self, poll};
use crate::image::ImageBuilder;

/// Prefix of every private daemon's directories, namespace and cgroups.
pub const PREFIX: &str = "strata-test-";
/// The busybox image every test runs.
pub const BUSYBOX_IMAGE: &str = "localhost/strata-test/busybox:latest";

/// How to start the daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonOptions {
    /// Directory holding `containerd-shim-strata-v2` (put first on containerd's PATH).
    pub shim_dir: Option<PathBuf>,
    /// When set, the CRI plugin is enabled and this TOML is appended to the config; it must
    /// hold the whole `[plugins."io.containerd.grpc.v1.cri"]` section (see
    /// [`default_cri_section`]: `restrict_oom_score_adj = true` is needed on this machine).
    pub cri_config: Option<String>,
    /// Further TOML appended to containerd's config.
    pub extra_config: Option<String>,
}

/// Where a running daemon is; what the supervisor reports once it is ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// `strata-test-<supervisor pid>`: also the containerd namespace the tests use.
    pub name: String,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub namespace: String,
    pub image: String,
    pub log: PathBuf,
    pub config: PathBuf,
    pub containerd_pid: u32,
}

impl DaemonInfo {
    /// The paths a daemon named `name` uses.
    pub fn for_name(name: &str) -> DaemonInfo {
        let state = PathBuf::from("/run").join(name);
        DaemonInfo {
            name: name.to_string(),
            socket: state.join("containerd.sock"),
            root: PathBuf::from("/var/lib").join(name),
            log: state.join("containerd.log"),
            config: state.join("config.toml"),
            state,
            namespace: name.to_string(),
            image: BUSYBOX_IMAGE.to_string(),
            containerd_pid: 0,
        }
    }

    /// `ctr` on this daemon's socket and namespace.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.socket).arg("-n").arg(&self.namespace);
        c
    }
}

/// A `[plugins."io.containerd.grpc.v1.cri"]` section that works on this machine, for
/// [`DaemonOptions::cri_config`]. Callers add runtimes (`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME]`) after it.
pub fn default_cri_section(cni_conf_dir: &Path, cni_bin_dir: &Path, sandbox_image: &str) -> String {
    format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{}"
    bin_dir = "{}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
"#,
        cni_conf_dir.display(),
        cni_bin_dir.display()
    )
}

fn config_toml(info: &DaemonInfo, opts: &DaemonOptions) -> String {
    let mut disabled = vec![
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    ];
    if opts.cri_config.is_none() {
        disabled.push("io.containerd.grpc.v1.cri");
    }
    let disabled: Vec<String> = disabled.iter().map(|p| format!("\"{p}\"")).collect();
    let mut s = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "{level}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#,
        root = info.root.display(),
        state = info.state.display(),
        sock = info.socket.display(),
        disabled = disabled.join(", "),
        level = std::env::var("STRATA_TEST_CONTAINERD_LOG").unwrap_or_else(|_| "info".into()),
    );
    if let Some(cri) = &opts.cri_config {
        s.push_str(cri);
        s.push('\n');
    }
    if let Some(extra) = &opts.extra_config {
        s.push_str(extra);
        s.push('\n');
    }
    s
}

/// A private containerd with the busybox image imported into its namespace.
pub struct Daemon {
    pub info: DaemonInfo,
    child: Child,
}

impl Daemon {
    /// Starts containerd for the supervisor whose pid names it, and imports the busybox image.
    /// On failure everything created so far is torn down.
    pub fn start(opts: &DaemonOptions) -> Result<Daemon> {
        let mut info = DaemonInfo::for_name(&format!("{PREFIX}{}", std::process::id()));
        match Self::start_inner(&mut info, opts) {
            Ok(child) => Ok(Daemon { info, child }),
            Err(e) => {
                teardown(&info);
                Err(e)
            }
        }
    }

    fn start_inner(info: &mut DaemonInfo, opts: &DaemonOptions) -> Result<Child> {
        for d in [&info.root, &info.state] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        fs::write(
            info.state.join("supervisor.pid"),
            std::process::id().to_string(),
        )?;
        fs::write(&info.config, config_toml(info, opts))?;
        let log = fs::File::create(&info.log)?;
        let mut path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        if let Some(dir) = &opts.shim_dir {
            path = format!("{}:{path}", dir.display());
        }
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&info.config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context(
                "starting containerd: install Debian's containerd (apt-get install containerd)",
            )?;
        info.containerd_pid = child.id();
        fs::write(info.state.join("containerd.pid"), child.id().to_string())?;

        let ready = poll(Duration::from_secs(30), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            let mut c = Command::new("ctr");
            c.arg("-a").arg(&info.socket).arg("version");
            let out = cmd::run(c, None, Duration::from_secs(5)).ok()?;
            out.success().then_some(true)
        });
        if ready != Some(true) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "containerd did not come up on {}; its log:\n{}",
                info.socket.display(),
                fs::read_to_string(&info.log).unwrap_or_default()
            );
        }

        let tarball = info.state.join("busybox.oci.tar");
        ImageBuilder::busybox(&info.image)?.write_oci_tar(&tarball)?;
        let mut c = info.ctr();
        c.args(["images", "import"]).arg(&tarball);
        let out = cmd::run(c, None, Duration::from_secs(120))?;
        if !out.success() {
            bail!("importing the busybox image failed: {out}");
        }
        let mut c = info.ctr();
        c.args(["images", "ls", "-q"]);
        let out = cmd::run(c, None, Duration::from_secs(30))?;
        if !out.stdout.lines().any(|l| l.trim() == info.image) {
            bail!("image {} missing after import: {out}", info.image);
        }
        Ok(child)
    }

    /// Imports another image tarball into the namespace.
    pub fn import(&self, tarball: &Path) -> Result<()> {
        let mut c = self.info.ctr();
        c.args(["images", "import"]).arg(tarball);
        let out = cmd::run(c, None, Duration::from_secs(120))?;
        if !out.success() {
            bail!("importing {} failed: {out}", tarball.display());
        }
        Ok(())
    }

    /// Stops everything and removes every trace.
    pub fn stop(mut self) {
        teardown(&self.info);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctr_lines(info: &DaemonInfo, ns: &str, args: &[&str]) -> Vec<String> {
    let mut c = Command::new("ctr");
    c.arg("-a").arg(&info.socket).arg("-n").arg(ns).args(args);
    match cmd::run(c, None, Duration::from_secs(20)) {
        Ok(o) if o.success() => o
            .stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn ctr_quiet(info: &DaemonInfo, ns: &str, args: &[&str]) {
    let mut c = Command::new("ctr");
    c.arg("-a").arg(&info.socket).arg("-n").arg(ns).args(args);
    let _ = cmd::run(c, None, Duration::from_secs(20));
}

/// Pids of processes (other than this one) whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push((pid, line.trim().to_string()));
        }
    }
    found
}

/// Pids of processes whose cgroup path has a component equal to `name`.
pub fn pids_in_cgroup_named(name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cg) = fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        if cg
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|p| p.split('/').any(|c| c == name))
        {
            found.push(pid);
        }
    }
    found
}

/// Mount points (from this process's mountinfo) that satisfy `f`, deepest last.
pub fn mountpoints(f: impl Fn(&str) -> bool) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| f(m))
        .map(|m| m.to_string())
        .collect()
}

/// Directories under /sys/fs/cgroup whose name satisfies `f` (symlinks not followed).
pub fn cgroup_dirs(f: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, f: &dyn Fn(&str) -> bool, out: &mut Vec<PathBuf>, depth: usize) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            if f(&e.file_name().to_string_lossy()) {
                out.push(p.clone());
            }
            if depth < 12 {
                walk(&p, f, out, depth + 1);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), f, &mut out, 0);
    out
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

fn kill_pids(pids: impl IntoIterator<Item = u32>) {
    for pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn alive(pid: u32) -> bool {
    pid != 0 && kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Removes every trace of the daemon `info` describes: its containers, containerd itself, its
/// shims and their processes, mounts, cgroups and directories. Safe to call more than once.
pub fn teardown(info: &DaemonInfo) {
    let containerd_pid = fs::read_to_string(info.state.join("containerd.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(info.containerd_pid);
    let containerd_alive = alive(containerd_pid)
        && fs::read_to_string(format!("/proc/{containerd_pid}/cmdline"))
            .map(|c| c.contains(&*info.config.to_string_lossy()))
            .unwrap_or(false);

    if containerd_alive {
        let namespaces = ctr_lines(info, "default", &["namespaces", "ls", "-q"]);
        for ns in &namespaces {
            for task in ctr_lines(info, ns, &["tasks", "ls", "-q"]) {
                ctr_quiet(info, ns, &["tasks", "kill", "-a", "-s", "SIGKILL", &task]);
            }
            for task in ctr_lines(info, ns, &["tasks", "ls", "-q"]) {
                ctr_quiet(info, ns, &["tasks", "rm", "-f", &task]);
            }
            for c in ctr_lines(info, ns, &["containers", "ls", "-q"]) {
                ctr_quiet(info, ns, &["containers", "rm", &c]);
            }
        }
        let _ = kill(Pid::from_raw(containerd_pid as i32), Signal::SIGTERM);
        if poll(Duration::from_secs(10), || {
            (!alive(containerd_pid)).then_some(())
        })
        .is_none()
        {
            kill_pids([containerd_pid]);
        }
    }

    // Shims know the daemon by its socket; container processes sit in cgroups under the
    // namespace's name.
    let sock = info.socket.to_string_lossy().into_owned();
    for _ in 0..3 {
        kill_pids(pids_with_cmdline(&sock).into_iter().map(|(p, _)| p));
        kill_pids(pids_in_cgroup_named(&info.namespace));
        std::thread::sleep(Duration::from_millis(200));
    }

    let root = info.root.to_string_lossy().into_owned();
    let state = info.state.to_string_lossy().into_owned();
    let mut mounts = mountpoints(|m| m.starts_with(&*root) || m.starts_with(&*state));
    mounts.reverse();
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }

    for _ in 0..20 {
        let dirs = cgroup_dirs(&|n: &str| n == info.namespace);
        if dirs.is_empty() {
            break;
        }
        for d in dirs {
            remove_cgroup_tree(&d);
        }
        kill_pids(pids_in_cgroup_named(&info.namespace));
        std::thread::sleep(Duration::from_millis(100));
    }

    // STRATA_TEST_KEEP_LOG=DIR keeps each daemon's log there for a look after the run.
    if let Some(dir) = std::env::var_os("STRATA_TEST_KEEP_LOG") {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::copy(
            &info.log,
            Path::new(&dir).join(format!("{}.log", info.name)),
        );
    }
    let _ = fs::remove_dir_all(&info.root);
    let _ = fs::remove_dir_all(&info.state);
    // The tiers keep per-namespace state directories (empty once their containers are
    // gone); this namespace was the daemon's own, so its directories go with it.
    for tier in ["native", "sentry"] {
        let _ = fs::remove_dir(Path::new("/run/strata").join(tier).join(&info.namespace));
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()
}

/// Supervisors whose test process has ended: they are tearing their daemon down.
fn orphaned_supervisors() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/run") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(PREFIX)?.parse::<u32>().ok()?;
            let ppid = parent_of(pid)?;
            (ppid == 1 || !alive(ppid)).then_some(pid)
        })
        .collect()
}

/// Waits (up to a minute) for supervisors whose tests have ended to finish their teardown,
/// then tears down daemons left by supervisors that are gone (a test run killed hard).
/// Returns the names it cleaned.
pub fn sweep_stale() -> Vec<String> {
    let _ = poll(Duration::from_secs(60), || {
        orphaned_supervisors().is_empty().then_some(())
    });
    let mut cleaned = Vec::new();
    let Ok(rd) = fs::read_dir("/run") else {
        return cleaned;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        teardown(&DaemonInfo::for_name(&name));
        cleaned.push(name);
    }
    if let Ok(rd) = fs::read_dir("/var/lib") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !alive(pid) && !cleaned.contains(&name) {
                teardown(&DaemonInfo::for_name(&name));
                cleaned.push(name);
            }
        }
    }
    cleaned
}

/// The supervisor's main loop: start the daemon, print its [`DaemonInfo`] as one JSON line
/// (or `{"error": ...}`), wait for stdin to close, tear down.
pub fn supervise(opts: &DaemonOptions) -> i32 {
    let mut stdout = std::io::stdout();
    match Daemon::start(opts) {
        Ok(d) => {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(&d.info).unwrap_or_default()
            );
            let _ = stdout.flush();
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            d.stop();
            0
        }
        Err(e) => {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::json!({ "error": format!("{e:#}") })
            );
            let _ = stdout.flush();
            1
        }
    }
}
