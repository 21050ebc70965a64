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
use crate::harness::HarnessError;
use crate::image::ImageBuilder;

/// Prefix of every private daemon's directories, namespace and cgroups.
pub const PREFIX: &str = "strata-test-";
/// The busybox image every test runs.
pub const BUSYBOX_IMAGE: &str = "localhost/strata-test/busybox:latest";
/// Where `scripts/fetch-containerd` unpacks containerd 1.7 and 2.1 (`<dir>/<version>/usr/bin`);
/// `STRATA_CONTAINERD_CACHE` overrides it, as it does for the script.
pub const CONTAINERD_CACHE: &str = "/var/cache/strata/containerd";

/// Which containerd the tests run, from `STRATA_TEST_CONTAINERD`: `1.6` (the default: the
/// system's, Debian bookworm's package), `1.7` or `2.1` (Debian trixie's and sid's packages,
/// unpacked by `scripts/fetch-containerd`). Its `containerd`, `ctr` and `containerd-shim-runc-v2`
/// are used together: the daemon, every `ctr` the tests run and the runc shim containerd starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerdVersion {
    V1_6,
    V1_7,
    V2_1,
}

impl ContainerdVersion {
    pub const ALL: [ContainerdVersion; 3] = [
        ContainerdVersion::V1_6,
        ContainerdVersion::V1_7,
        ContainerdVersion::V2_1,
    ];

    /// From `STRATA_TEST_CONTAINERD` (unset or empty: 1.6).
    pub fn from_env() -> Result<ContainerdVersion> {
        match std::env::var("STRATA_TEST_CONTAINERD").as_deref() {
            Err(_) | Ok("") => Ok(ContainerdVersion::V1_6),
            Ok(s) => ContainerdVersion::ALL
                .into_iter()
                .find(|v| v.label() == s)
                .ok_or_else(|| {
                    anyhow::anyhow!("STRATA_TEST_CONTAINERD={s}: expected 1.6, 1.7 or 2.1")
                }),
        }
    }

    /// `1.6`, `1.7` or `2.1`: what `STRATA_TEST_CONTAINERD` takes, and the label of results.
    pub fn label(self) -> &'static str {
        match self {
            ContainerdVersion::V1_6 => "1.6",
            ContainerdVersion::V1_7 => "1.7",
            ContainerdVersion::V2_1 => "2.1",
        }
    }

    /// containerd 2.x reads config version 3 (the CRI plugin split into
    /// `io.containerd.cri.v1.runtime`, `io.containerd.cri.v1.images` and the server
    /// `io.containerd.grpc.v1.cri`); 1.6 and 1.7 read version 2.
    pub fn config_version(self) -> u32 {
        match self {
            ContainerdVersion::V1_6 | ContainerdVersion::V1_7 => 2,
            ContainerdVersion::V2_1 => 3,
        }
    }

    /// The directory holding this version's `containerd`, `ctr` and `containerd-shim-runc-v2`;
    /// `None` for 1.6, which is the system's (found on PATH).
    pub fn bin_dir(self) -> Option<PathBuf> {
        if self == ContainerdVersion::V1_6 {
            return None;
        }
        let cache = std::env::var_os("STRATA_CONTAINERD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CONTAINERD_CACHE));
        Some(cache.join(self.label()).join("usr/bin"))
    }

    /// Checks that this version's binaries are there (for 1.6, on PATH).
    pub fn check(self) -> Result<(), HarnessError> {
        let progs = ["containerd", "ctr", "containerd-shim-runc-v2"];
        match self.bin_dir() {
            None => {
                for prog in progs {
                    if which(prog).is_none() {
                        return Err(HarnessError::Missing(format!(
                            "`{prog}` (containerd 1.6) is not on PATH: run scripts/install-deps"
                        )));
                    }
                }
            }
            Some(dir) => {
                for prog in progs {
                    if !dir.join(prog).is_file() {
                        return Err(HarnessError::Missing(format!(
                            "STRATA_TEST_CONTAINERD={}: {} is missing: run scripts/fetch-containerd",
                            self.label(),
                            dir.join(prog).display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// This version's `prog` (`containerd`, `ctr`): in [`Self::bin_dir`], or the bare name
    /// (found on PATH) for 1.6.
    pub fn program(self, prog: &str) -> PathBuf {
        match self.bin_dir() {
            Some(dir) => dir.join(prog),
            None => PathBuf::from(prog),
        }
    }

    /// A command running this version's `prog` (`containerd`, `ctr`).
    pub fn command(self, prog: &str) -> Command {
        Command::new(self.program(prog))
    }
}

impl std::fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The containerd the tests run (`STRATA_TEST_CONTAINERD`), for labels: `1.6`, `1.7` or `2.1`.
/// An unknown value reads as the default 1.6 here; the harness refuses it when it starts.
pub fn containerd_version() -> ContainerdVersion {
    ContainerdVersion::from_env().unwrap_or(ContainerdVersion::V1_6)
}

/// The containerd the tests run, checked: an unknown `STRATA_TEST_CONTAINERD` is a failure, a
/// version whose binaries are not there is [`HarnessError::Missing`] (naming
/// `scripts/fetch-containerd`), so the test is skipped, or fails on CI.
pub fn check_containerd() -> Result<ContainerdVersion, HarnessError> {
    let version =
        ContainerdVersion::from_env().map_err(|e| HarnessError::Failed(format!("{e:#}")))?;
    version.check()?;
    Ok(version)
}

/// `prog` itself when it is a path, else where it is on this process's PATH.
pub fn which_path(prog: &Path) -> Option<PathBuf> {
    if prog.components().count() > 1 {
        return Some(prog.to_path_buf());
    }
    which(&prog.to_string_lossy())
}

/// `prog`'s path on this process's PATH, if it is there.
pub(crate) fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

/// How to start the daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonOptions {
    /// Directory holding `containerd-shim-strata-v2` (put first on containerd's PATH).
    pub shim_dir: Option<PathBuf>,
    /// When set, the CRI plugin is enabled and this TOML is appended to the config; it must
    /// hold the CRI plugin's whole configuration in the format of the containerd under test
    /// (see [`default_cri_section`]: `restrict_oom_score_adj = true` is needed on this machine).
    pub cri_config: Option<String>,
    /// Further TOML appended to containerd's config.
    pub extra_config: Option<String>,
    /// A whole containerd configuration (e.g. `containerd config default` with handlers
    /// merged) that the daemon's own settings above are laid over, key by key: its paths,
    /// socket, disabled plugins and CRI settings win, everything else is the base's.
    pub base_config: Option<String>,
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
    /// The containerd it runs (its `ctr` is the one [`DaemonInfo::ctr`] runs).
    #[serde(default = "containerd_version")]
    pub containerd: ContainerdVersion,
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
            containerd: containerd_version(),
        }
    }

    /// `ctr` (of the daemon's containerd version) on this daemon's socket and namespace.
    pub fn ctr(&self) -> Command {
        self.ctr_in(&self.namespace)
    }

    /// `ctr` (of the daemon's containerd version) on this daemon's socket, in namespace `ns`.
    pub fn ctr_in(&self, ns: &str) -> Command {
        let mut c = self.containerd.command("ctr");
        c.arg("-a").arg(&self.socket).arg("-n").arg(ns);
        c
    }
}

/// The table under which containerd `version`'s CRI plugin takes its runtimes (handlers):
/// `plugins."io.containerd.grpc.v1.cri".containerd.runtimes` (config version 2, 1.6 and 1.7) or
/// `plugins."io.containerd.cri.v1.runtime".containerd.runtimes` (version 3, 2.x).
pub fn cri_runtimes_table(version: ContainerdVersion) -> &'static str {
    match version.config_version() {
        2 => r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#,
        _ => r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes"#,
    }
}

/// The CRI plugin's configuration that works on this machine, for [`DaemonOptions::cri_config`],
/// in `version`'s format: `restrict_oom_score_adj = true` (this machine refuses a lowered
/// oom_score_adj), the pause image, the CNI directories and, when given, the registry hosts
/// directory (`config_path`: `<dir>/<host>/hosts.toml`). Callers add runtimes under
/// [`cri_runtimes_table`] after it.
///
/// Config version 2 (1.6, 1.7): all of it in `[plugins."io.containerd.grpc.v1.cri"]`. Version 3
/// (2.x): runtime settings and CNI in `io.containerd.cri.v1.runtime`, the pause image
/// (`pinned_images.sandbox`) and the registry in `io.containerd.cri.v1.images`; the gRPC server
/// part, still `io.containerd.grpc.v1.cri`, needs nothing here.
pub fn default_cri_section(
    version: ContainerdVersion,
    cni_conf_dir: &Path,
    cni_bin_dir: &Path,
    sandbox_image: &str,
    registry_config_path: Option<&Path>,
) -> String {
    let conf_dir = cni_conf_dir.display();
    let bin_dir = cni_bin_dir.display();
    let registry = registry_config_path
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match version.config_version() {
        2 => format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{conf_dir}"
    bin_dir = "{bin_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registry}"
"#
        ),
        _ => format!(
            r#"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    conf_dir = "{conf_dir}"
    bin_dirs = ["{bin_dir}"]

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{registry}"
"#
        ),
    }
}

fn config_toml(info: &DaemonInfo, opts: &DaemonOptions) -> Result<String> {
    let version = info.containerd;
    let mut disabled = vec![
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    ];
    match version.config_version() {
        // aufs left with 2.0; blockfile and erofs came with 1.7 / 2.1 and need set-up of their own.
        2 => disabled.push("io.containerd.snapshotter.v1.aufs"),
        _ => disabled.extend([
            "io.containerd.snapshotter.v1.blockfile",
            "io.containerd.snapshotter.v1.erofs",
            // NRI (on by default in 2.x) listens on the one host-wide /var/run/nri/nri.sock:
            // a second test containerd's CRI then fails to start ("address already in use").
            "io.containerd.nri.v1.nri",
        ]),
    }
    if opts.cri_config.is_none() {
        disabled.push("io.containerd.grpc.v1.cri");
        if version.config_version() >= 3 {
            // 2.x: the CRI plugin's other parts, and the pod sandbox controller that needs them.
            disabled.extend([
                "io.containerd.cri.v1.runtime",
                "io.containerd.cri.v1.images",
                "io.containerd.podsandbox.controller.v1.podsandbox",
            ]);
        }
    }
    let disabled: Vec<String> = disabled.iter().map(|p| format!("\"{p}\"")).collect();
    let mut s = format!(
        r#"version = {config_version}
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
        config_version = version.config_version(),
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
    match &opts.base_config {
        Some(base) => overlay(base, &s),
        None => Ok(s),
    }
}

/// `over` laid over `base` (both whole TOML documents): tables merged key by key, every other
/// value of `over` replacing the base's. Comments and layout of `base` are not kept.
fn overlay(base: &str, over: &str) -> Result<String> {
    fn lay(base: &mut toml::Table, over: toml::Table) {
        for (k, v) in over {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => lay(b, o),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }
    let mut doc: toml::Table = base.parse().context("the base config is not TOML")?;
    let over: toml::Table = over
        .parse()
        .context("the test daemon's config is not TOML")?;
    lay(&mut doc, over);
    Ok(toml::to_string(&doc)?)
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
        info.containerd = ContainerdVersion::from_env()?;
        info.containerd
            .check()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for d in [&info.root, &info.state] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        fs::write(
            info.state.join("supervisor.pid"),
            std::process::id().to_string(),
        )?;
        fs::write(&info.config, config_toml(info, opts)?)?;
        let child = Self::spawn_containerd(info, opts)?;
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

    /// Starts containerd on the daemon's configuration (its log appended to) and waits until
    /// it answers.
    fn spawn_containerd(info: &mut DaemonInfo, opts: &DaemonOptions) -> Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&info.log)?;
        // The shims containerd starts are found on its PATH: Strata's first, then the runc shim
        // of the containerd version under test.
        let mut path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        if let Some(dir) = info.containerd.bin_dir() {
            path = format!("{}:{path}", dir.display());
        }
        if let Some(dir) = &opts.shim_dir {
            path = format!("{}:{path}", dir.display());
        }
        let mut child = info
            .containerd
            .command("containerd")
            .arg("--config")
            .arg(&info.config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| match info.containerd {
                ContainerdVersion::V1_6 => {
                    "starting containerd: install Debian's containerd (apt-get install containerd)"
                        .to_string()
                }
                v => format!("starting containerd {v}: run scripts/fetch-containerd"),
            })?;
        info.containerd_pid = child.id();
        fs::write(info.state.join("containerd.pid"), child.id().to_string())?;

        let ready = poll(Duration::from_secs(30), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            let mut c = info.containerd.command("ctr");
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

        Ok(child)
    }

    /// Restarts containerd as `systemctl restart` would (SIGTERM, then a new one on the same
    /// configuration, socket and state), leaving the shims and their containers running.
    pub fn restart_containerd(&mut self, opts: &DaemonOptions) -> Result<()> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = cmd::wait_deadline(&mut self.child, Duration::from_secs(30));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn_containerd(&mut self.info, opts)?;
        Ok(())
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
    let mut c = info.ctr_in(ns);
    c.args(args);
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
    let mut c = info.ctr_in(ns);
    c.args(args);
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
/// The supervisor's command that restarts containerd ([`Daemon::restart_containerd`]).
pub const SUPERVISOR_RESTART: &str = "restart-containerd";

pub fn supervise(opts: &DaemonOptions) -> i32 {
    let mut stdout = std::io::stdout();
    match Daemon::start(opts) {
        Ok(mut d) => {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(&d.info).unwrap_or_default()
            );
            let _ = stdout.flush();
            // Commands, one per line, each answered with one line; the end of stdin stops all.
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                let answer = match line.trim() {
                    SUPERVISOR_RESTART => match d.restart_containerd(opts) {
                        Ok(()) => format!("ok {}", d.info.containerd_pid),
                        Err(e) => format!("error {e:#}").replace('\n', " "),
                    },
                    other => format!("error unknown command {other:?}"),
                };
                let _ = writeln!(stdout, "{answer}");
                let _ = stdout.flush();
            }
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
