//! What the CRI smoke test needs around containerd's CRI plugin: a pod network of the test's own
//! (a `bridge` + `host-local` conflist for Debian's `containernetworking-plugins`, on a bridge
//! no one else uses, without masquerade), a pause image built from a small static C program, a
//! private containerd with the CRI plugin and Strata's handlers taken from the shipped snippet for
//! the containerd under test (`configs/containerd-strata.toml` for 1.6 and 1.7,
//! `configs/containerd-strata-v3.toml` for 2.x), and a CRI client (the `k8s-cri` crate) on its
//! socket.
//!
//! Everything it creates is named after the test process (`/run/strata-cri-<pid>-<n>`, bridge
//! `stc<pid>-<n>`) and removed when the [`CriEnv`] drops; what a killed run left behind is swept
//! by the next one. It never touches a system containerd, the host's CNI configuration or any
//! network device but its own bridge.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Status;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, ExecSyncRequest, ImageSpec,
    LinuxPodSandboxConfig, ListContainersRequest, ListPodSandboxRequest, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, StopPodSandboxRequest,
};

use crate::cmd;
use crate::daemon::{self, default_cri_section, ContainerdVersion, DaemonOptions, BUSYBOX_IMAGE};
use crate::harness::{Harness, HarnessError, Runtime};
use crate::image::ImageBuilder;

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The plugins the pod network uses (`loopback` is set up by the CRI plugin itself).
pub const CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];
/// The sandbox image, built locally and imported into the CRI namespace.
pub const PAUSE_IMAGE: &str = "localhost/strata-test/pause:3.9";
/// The containerd namespace the CRI plugin works in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// How long one CRI call may take.
pub const CRI_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one CRI call may take when the suite runs on microvm: longer than the tier's
/// boot deadline (120 s), so that a pod whose emulated guest boots slowly under load fails
/// with the shim's own error and the guest console's tail, not with this client's timeout.
pub const CRI_TIMEOUT_VM: Duration = Duration::from_secs(180);

fn cri_timeout() -> Duration {
    match crate::Tier::from_env() {
        Ok(crate::Tier::Microvm) => CRI_TIMEOUT_VM,
        _ => CRI_TIMEOUT,
    }
}

const DIR_PREFIX: &str = "strata-cri-";

/// The pause program: PID 1 of the pod's sandbox. Sleeps in pause(), reaps children, exits 0 on
/// SIGTERM or SIGINT.
pub const PAUSE_C: &str = r#"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = stop;
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, 0);
    for (;;) pause();
}
"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The repository's `configs/` directory.
pub fn configs_dir() -> PathBuf {
    crate::package_dir()
        .parent()
        .map(|p| p.join("configs"))
        .unwrap_or_else(|| PathBuf::from("configs"))
}

/// The shipped snippet of Strata's CRI handlers for containerd `version`:
/// `configs/containerd-strata.toml` (config version 2: containerd 1.6 and 1.7) or
/// `configs/containerd-strata-v3.toml` (version 3: containerd 2.x).
pub fn shipped_snippet(version: ContainerdVersion) -> &'static str {
    match version.config_version() {
        2 => "containerd-strata.toml",
        _ => "containerd-strata-v3.toml",
    }
}

/// The shipped `configs/` as the test daemon's handlers read them, copied into `out`: the
/// snippets and per-tier configurations unchanged, but `strata-microvm.toml` with the
/// `[microvm]` table of this machine ([`crate::harness::microvm_test_table`]: the cached guest
/// kernel and initramfs, `allow_tcg`).
pub fn test_configs(out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for entry in fs::read_dir(configs_dir())? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let mut text = fs::read_to_string(&path)?;
        if path.file_name().and_then(|n| n.to_str()) == Some("strata-microvm.toml") {
            text.push('\n');
            text.push_str(&crate::harness::microvm_test_table());
        }
        fs::write(out.join(path.file_name().unwrap()), text)?;
    }
    Ok(())
}

/// The CRI runtimes section for the test daemon on containerd `version`: `runc` (the baseline)
/// and Strata's handlers exactly as the shipped snippet for that version
/// ([`shipped_snippet`]) has them, with `/etc/strata/` pointed at the repository's `configs/`,
/// so the test runs the shipped snippet and per-tier configs.
pub fn runtimes_section(version: ContainerdVersion, configs: &Path) -> Result<String> {
    let path = configs.join(shipped_snippet(version));
    let shipped =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table = daemon::cri_runtimes_table(version);
    if !shipped.contains(&format!("[{table}.strata-")) {
        bail!(
            "{} has no [{table}.strata-*] handler for containerd {version}",
            path.display()
        );
    }
    Ok(format!(
        "\n{}{}",
        runc_table(version),
        for_the_test_daemon(&shipped, configs)
    ))
}

/// The `runc` handler (the baseline), in `version`'s format.
fn runc_table(version: ContainerdVersion) -> String {
    let table = daemon::cri_runtimes_table(version);
    format!("[{table}.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n")
}

/// Handler tables as the test daemon takes them: without the file's `version` line (the
/// daemon's config has its own), and with `/etc/strata/` pointed at `configs`.
fn for_the_test_daemon(text: &str, configs: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("version") {
            continue;
        }
        out.push_str(&line.replace("/etc/strata/", &format!("{}/", configs.display())));
        out.push('\n');
    }
    out
}

/// The CRI runtimes section as `strata install` merges it: `runc`, then Strata's handlers
/// merged by `strata install --config-only` (the binary at `strata`) into a file holding `runc`
/// only, checked by containerd `version`'s own `config dump`; `/etc/strata/` pointed at
/// `configs`. So every CRI test runs its pods on handlers that install wrote. `work` is a
/// scratch directory (the install's root, removed again).
pub fn runtimes_by_install(
    version: ContainerdVersion,
    configs: &Path,
    strata: &Path,
    work: &Path,
) -> Result<String> {
    let table = daemon::cri_runtimes_table(version);
    let original = format!(
        "version = {}\n\n{}",
        version.config_version(),
        runc_table(version)
    );
    let merged = install_config_only(version, strata, work, &original)?;
    let section = for_the_test_daemon(&merged, configs);
    if !section.contains(&format!("[{table}.strata-")) {
        bail!("strata install merged no [{table}.strata-*] handler:\n{merged}");
    }
    Ok(section)
}

/// containerd `version`'s own `containerd config default`, with Strata's handlers merged by
/// `strata install --config-only` as on a node that never had a config of its own
/// edited, and `/etc/strata/` pointed at `configs`: the base of [`CriOptions::default_config`].
pub fn default_config_by_install(
    version: ContainerdVersion,
    configs: &Path,
    strata: &Path,
    work: &Path,
) -> Result<String> {
    let out = version
        .command("containerd")
        .args(["config", "default"])
        .output()
        .context("running containerd config default")?;
    if !out.status.success() {
        bail!(
            "containerd config default: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let original = String::from_utf8(out.stdout).context("containerd config default")?;
    let merged = install_config_only(version, strata, work, &original)?;
    Ok(merged.replace("/etc/strata/", &format!("{}/", configs.display())))
}

/// `strata install --config-only --restart never` on a scratch root under `work` whose
/// containerd config is `original`: the merged file (the root is removed again).
fn install_config_only(
    version: ContainerdVersion,
    strata: &Path,
    work: &Path,
    original: &str,
) -> Result<String> {
    let root = work.join("install-root");
    let file = root.join("etc/containerd/config.toml");
    fs::create_dir_all(file.parent().unwrap())?;
    fs::write(&file, original)?;
    let out = Command::new(strata)
        .args(["install", "--config-only", "--restart", "never", "--root"])
        .arg(&root)
        .arg("--containerd")
        .arg(version.program("containerd"))
        .output()
        .with_context(|| format!("running {} install", strata.display()))?;
    let merged = fs::read_to_string(&file);
    let _ = fs::remove_dir_all(&root);
    if !out.status.success() {
        bail!(
            "strata install --config-only failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(merged?)
}

/// A bridge + host-local conflist on `bridge`, addresses from `subnet`, leases kept in
/// `ipam_dir`; the gateway's address (the first of the subnet) on the bridge, so that the
/// node reaches its pods as on a Kubernetes node; no masquerade.
pub fn conflist(name: &str, bridge: &str, subnet: &str, ipam_dir: &Path) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [ {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [ [ { "subnet": subnet } ] ],
                "dataDir": ipam_dir,
            },
        } ],
    }))
    .unwrap_or_default()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn ip(args: &[&str]) -> Result<cmd::Output> {
    let mut c = Command::new("ip");
    c.args(args);
    cmd::run(c, None, Duration::from_secs(20))
}

/// Removes what test processes that are gone left behind: their bridges and directories.
pub fn sweep_stale() {
    let Ok(rd) = fs::read_dir("/run") else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        remove_env_dir(&e.path(), &bridge_name(pid, n));
    }
}

fn bridge_name(pid: u32, n: &str) -> String {
    format!("stc{pid}-{n}")
}

fn remove_env_dir(dir: &Path, bridge: &str) {
    if Path::new("/sys/class/net").join(bridge).exists() {
        let _ = ip(&["link", "del", bridge]);
    }
    let d = dir.to_string_lossy().into_owned();
    let mut mounts = daemon::mountpoints(|m| m.starts_with(&*d));
    mounts.reverse();
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(dir);
}

/// What a [`CriEnv`] may be started with.
#[derive(Debug, Clone, Default)]
pub struct CriOptions {
    /// The CRI plugin's registry hosts directory (`config_path` of its registry configuration:
    /// `<dir>/<host>/hosts.toml`), e.g. for a registry on loopback; none by default.
    pub registry_config_path: Option<PathBuf>,
    /// Run containerd on its own `containerd config default` with Strata's handlers merged by
    /// `strata install`, as a node that never edited its config has it
    /// ([`default_config_by_install`]), rather than on a config holding only the handlers; the
    /// test daemon's paths, socket and CRI network settings still replace the default's.
    pub default_config: bool,
}

/// A private containerd with the CRI plugin, its pod network and images.
pub struct CriEnv {
    pub harness: Harness,
    /// The CRI runtime handler pods are run with: `strata-native`, or `runc` for the baseline.
    pub handler: &'static str,
    /// The shim binary containerd starts for `handler`.
    pub shim_binary: &'static str,
    /// The Strata config the handler's `ConfigPath` names (None for runc).
    pub runtime_config: Option<PathBuf>,
    /// `/run/strata-cri-<pid>-<n>`: CNI config, leases, logs, the pause build.
    pub dir: PathBuf,
    pub network: String,
    pub bridge: String,
    /// The pods' subnet, e.g. `198.19.37.0/24`.
    pub subnet: String,
    /// Where host-local keeps its leases (one file per address handed out).
    pub ipam_dir: PathBuf,
    pub log_dir: PathBuf,
    /// The network namespaces that existed before this env started (see [`CriEnv::own_netns`]).
    netns_before: Vec<String>,
}

/// Where containerd 1.6's CRI plugin (and `ip netns`) keep named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

fn netns_names() -> Vec<String> {
    fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl CriEnv {
    /// Checks the prerequisites, builds the pause image, writes the network configuration and
    /// starts containerd (through the `strata-testenv` supervisor at `testenv`).
    pub fn start(testenv: &Path) -> Result<CriEnv, HarnessError> {
        Self::start_with(testenv, CriOptions::default())
    }

    /// [`CriEnv::start`] with options.
    pub fn start_with(testenv: &Path, options: CriOptions) -> Result<CriEnv, HarnessError> {
        let missing = |s: String| HarnessError::Missing(s);
        let failed = |e: anyhow::Error| HarnessError::Failed(format!("{e:#}"));
        let runtime = Runtime::from_env().map_err(failed)?;
        let tier = crate::Tier::from_env().map_err(failed)?;
        let containerd = daemon::check_containerd()?;
        if !nix::unistd::geteuid().is_root() {
            return Err(missing("the CRI test needs root".into()));
        }
        for p in CNI_PLUGINS {
            if !Path::new(CNI_BIN_DIR).join(p).is_file() {
                return Err(missing(format!(
                    "{CNI_BIN_DIR}/{p} is missing: apt-get install containernetworking-plugins"
                )));
            }
        }
        if ip(&["-V"]).map(|o| !o.success()).unwrap_or(true) {
            return Err(missing("`ip` is missing: apt-get install iproute2".into()));
        }
        sweep_stale();
        let netns_before = netns_names();

        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from("/run").join(format!("{DIR_PREFIX}{pid}-{n}"));
        let bridge = bridge_name(pid, &n.to_string());
        let (handler, shim_binary, runtime_config) = match runtime {
            Runtime::Strata => (
                tier.cri_handler(),
                crate::harness::STRATA_SHIM,
                Some(dir.join("configs").join(format!("strata-{tier}.toml"))),
            ),
            Runtime::Runc => ("runc", "containerd-shim-runc-v2", None),
        };
        test_configs(&dir.join("configs")).map_err(failed)?;
        // From here on, a failure removes the directory and the bridge.
        let mut guard = DirGuard {
            dir: dir.clone(),
            bridge: bridge.clone(),
            armed: true,
        };
        let net_dir = dir.join("net.d");
        let ipam_dir = dir.join("ipam");
        let log_dir = dir.join("logs");
        for d in [&net_dir, &ipam_dir, &log_dir] {
            fs::create_dir_all(d)
                .with_context(|| format!("creating {}", d.display()))
                .map_err(failed)?;
        }

        let pause = build_pause(&dir)?;

        let network = format!("{DIR_PREFIX}{pid}-{n}");
        // In 198.19.0.0/16, half of the benchmarking range (RFC 2544) that no host routes:
        // test traffic goes only to addresses the tests made (the other half is
        // crate::netns's).
        let subnet = format!("198.19.{}.0/24", (pid as usize * 8 + n as usize) % 256);
        fs::write(
            net_dir.join("10-strata-test.conflist"),
            conflist(&network, &bridge, &subnet, &ipam_dir),
        )
        .map_err(|e| failed(e.into()))?;

        let mut cri = default_cri_section(
            containerd,
            &net_dir,
            Path::new(CNI_BIN_DIR),
            PAUSE_IMAGE,
            options.registry_config_path.as_deref(),
        );
        let strata = crate::harness::shim_dir(testenv).join("strata");
        let configs = dir.join("configs");
        let base_config = if options.default_config {
            Some(default_config_by_install(containerd, &configs, &strata, &dir).map_err(failed)?)
        } else {
            cri.push_str(
                &runtimes_by_install(containerd, &configs, &strata, &dir).map_err(failed)?,
            );
            None
        };
        let harness = Harness::start(
            testenv,
            DaemonOptions {
                cri_config: Some(cri),
                base_config,
                ..Default::default()
            },
        )?;

        let env = CriEnv {
            harness,
            handler,
            shim_binary,
            runtime_config,
            dir,
            network,
            bridge,
            subnet,
            ipam_dir,
            log_dir,
            netns_before,
        };
        guard.armed = false; // the env's Drop takes over
        let mut busybox = ImageBuilder::busybox(BUSYBOX_IMAGE).map_err(failed)?;
        busybox.cmd(&["sleep", "3600"]);
        let mut pause_image = ImageBuilder::busybox(PAUSE_IMAGE).map_err(failed)?;
        pause_image.file("pause", pause, 0o755).cmd(&["/pause"]);
        for image in [&pause_image, &busybox] {
            env.import(image).map_err(failed)?;
        }
        Ok(env)
    }

    /// Imports an image into the CRI namespace.
    pub fn import(&self, image: &ImageBuilder) -> Result<()> {
        let tar = self.dir.join("image.tar");
        image.write_oci_tar(&tar)?;
        let mut c = self.ctr();
        c.args(["images", "import"]).arg(&tar);
        let out = cmd::run(c, None, Duration::from_secs(120))?;
        let _ = fs::remove_file(&tar);
        if !out.success() {
            bail!("importing {} into {CRI_NAMESPACE}: {out}", image.name());
        }
        Ok(())
    }

    /// `ctr` (of the containerd version under test) on this daemon, in the CRI namespace.
    pub fn ctr(&self) -> Command {
        self.harness.info.ctr_in(CRI_NAMESPACE)
    }

    /// A CRI client on the daemon's socket.
    pub async fn client(&self) -> Result<Cri> {
        let channel = containerd_client::connect(&self.harness.info.socket)
            .await
            .with_context(|| format!("connecting to {}", self.harness.info.socket.display()))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// A pod sandbox config: its own hostname, logs in the env's directory, its cgroups under
    /// the daemon's name (so the harness's teardown finds strays).
    pub fn pod_config(&self, name: &str, annotations: HashMap<String, String>) -> PodSandboxConfig {
        let uid = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: self.log_dir.join(&uid).to_string_lossy().into_owned(),
            annotations,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{}", self.harness.info.namespace, uid),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A busybox container running `command`.
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.to_string(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    /// Live shim processes of this daemon for the handler: `(pid, command line)`.
    pub fn shim_processes(&self) -> Vec<(u32, String)> {
        let sock = self.harness.info.socket.to_string_lossy().into_owned();
        daemon::pids_with_cmdline(&sock)
            .into_iter()
            .filter(|(_, cmdline)| {
                cmdline
                    .split_whitespace()
                    .next()
                    .is_some_and(|argv0| argv0.ends_with(self.shim_binary))
            })
            .collect()
    }

    /// Interfaces attached to the test's bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        fs::read_dir(Path::new("/sys/class/net").join(&self.bridge).join("brif"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the test's bridge exists.
    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// Deletes the test's bridge (the bridge plugin creates it and never removes it).
    pub fn delete_bridge(&self) -> Result<()> {
        if self.bridge_exists() {
            let out = ip(&["link", "del", &self.bridge])?;
            if !out.success() {
                bail!("deleting bridge {}: {out}", self.bridge);
            }
        }
        Ok(())
    }

    /// Addresses host-local still has leased.
    pub fn ipam_leases(&self) -> Vec<String> {
        fs::read_dir(self.ipam_dir.join(&self.network))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `addr` (dotted quad) is inside the test's /24.
    pub fn in_subnet(&self, addr: &str) -> bool {
        let prefix = self.subnet.trim_end_matches("0/24");
        addr.starts_with(prefix) && addr.len() > prefix.len()
    }

    /// Network namespaces this env's CRI plugin made and left: created since the env started,
    /// named like the CRI plugin names them, and holding addresses from the test's subnet only.
    /// One with nothing but `lo` is not claimed: it may be another env's, made a moment ago and
    /// not yet given its address by CNI (a CI run lost a pod that way, to a test that ended
    /// beside it); the CRI plugin itself removes the namespace of a RunPodSandbox that fails.
    pub fn own_netns(&self) -> Vec<String> {
        netns_names()
            .into_iter()
            .filter(|n| n.starts_with("cni-") && !self.netns_before.contains(n))
            .filter(|n| {
                let Ok(out) = ip(&["-n", n, "-4", "-o", "addr", "show"]) else {
                    return false;
                };
                let addrs: Vec<&str> = out
                    .stdout
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(3))
                    .filter(|a| !a.starts_with("127."))
                    .collect();
                !addrs.is_empty()
                    && addrs
                        .iter()
                        .all(|a| self.in_subnet(a.split('/').next().unwrap_or_default()))
            })
            .collect()
    }

    /// Stops and removes every pod the daemon still has, best effort (after a failed test).
    pub fn remove_all_pods(&self) {
        block_on(async {
            let Ok(mut cri) = self.client().await else {
                return;
            };
            let Ok(pods) = cri.list_pods().await else {
                return;
            };
            for id in pods {
                let _ = cri.stop_pod(&id).await;
                let _ = cri.remove_pod(&id).await;
            }
        });
    }
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        self.remove_all_pods();
        self.harness.stop();
        for ns in self.own_netns() {
            eprintln!("cri: removing network namespace {ns} that a failed pod left behind");
            let _ = ip(&["netns", "del", &ns]);
        }
        remove_env_dir(&self.dir, &self.bridge);
    }
}

/// Removes the env's directory and bridge if [`CriEnv::start`] fails half-way.
struct DirGuard {
    dir: PathBuf,
    bridge: String,
    armed: bool,
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.armed {
            remove_env_dir(&self.dir, &self.bridge);
        }
    }
}

/// Compiles [`PAUSE_C`] with `gcc -static` in `dir`; returns the binary.
fn build_pause(dir: &Path) -> Result<Vec<u8>, HarnessError> {
    let src = dir.join("pause.c");
    let bin = dir.join("pause");
    fs::write(&src, PAUSE_C).map_err(|e| HarnessError::Failed(e.to_string()))?;
    let mut c = Command::new("gcc");
    c.args(["-static", "-Os", "-s", "-o"]).arg(&bin).arg(&src);
    let out = cmd::run(c, None, Duration::from_secs(120));
    match out {
        Ok(o) if o.success() => fs::read(&bin)
            .map_err(|e| HarnessError::Failed(format!("reading {}: {e}", bin.display()))),
        Ok(o) => Err(HarnessError::Missing(format!(
            "cannot build the pause image with `gcc -static` (apt-get install gcc libc6-dev): {o}"
        ))),
        Err(e) => Err(HarnessError::Missing(format!(
            "cannot run gcc (apt-get install gcc libc6-dev): {e:#}"
        ))),
    }
}

/// A CRI client: the runtime and image services on one connection. Every call has a deadline.
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

async fn deadline<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let limit = cri_timeout();
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what} took longer than {limit:?}"
        ))),
    }
}

/// What ExecSync returned.
#[derive(Debug)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl Cri {
    /// RunPodSandbox; returns the sandbox id.
    pub async fn run_pod(
        &mut self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, Status> {
        let req = k8s_cri::v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        let resp = deadline("RunPodSandbox", self.runtime.run_pod_sandbox(req)).await?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    /// CreateContainer then StartContainer; returns the container id.
    pub async fn start_container(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, Status> {
        let req = k8s_cri::v1::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        let id = deadline("CreateContainer", self.runtime.create_container(req))
            .await?
            .into_inner()
            .container_id;
        let req = k8s_cri::v1::StartContainerRequest {
            container_id: id.clone(),
        };
        deadline("StartContainer", self.runtime.start_container(req)).await?;
        Ok(id)
    }

    /// ExecSync with a 30 s timeout.
    pub async fn exec_sync(&mut self, container: &str, cmd: &[&str]) -> Result<ExecResult, Status> {
        let req = ExecSyncRequest {
            container_id: container.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let r = deadline("ExecSync", self.runtime.exec_sync(req))
            .await?
            .into_inner();
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            exit_code: r.exit_code,
        })
    }

    /// PodSandboxStatus (verbose): the status and the `info` JSON.
    pub async fn pod_status(
        &mut self,
        pod: &str,
    ) -> Result<(k8s_cri::v1::PodSandboxStatus, serde_json::Value), Status> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: true,
        };
        let r = deadline("PodSandboxStatus", self.runtime.pod_sandbox_status(req))
            .await?
            .into_inner();
        let mut info = r
            .info
            .get("info")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        normalize_sandbox_info(&mut info);
        let status = r
            .status
            .ok_or_else(|| Status::internal("PodSandboxStatus without a status"))?;
        Ok((status, info))
    }

    /// ContainerStatus (verbose): the state and the `info` JSON.
    pub async fn container_status(
        &mut self,
        id: &str,
    ) -> Result<(k8s_cri::v1::ContainerStatus, serde_json::Value), Status> {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let r = deadline("ContainerStatus", self.runtime.container_status(req))
            .await?
            .into_inner();
        let info = r
            .info
            .get("info")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        let status = r
            .status
            .ok_or_else(|| Status::internal("ContainerStatus without a status"))?;
        Ok((status, info))
    }

    /// StopPodSandbox.
    pub async fn stop_pod(&mut self, pod: &str) -> Result<(), Status> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        };
        deadline("StopPodSandbox", self.runtime.stop_pod_sandbox(req)).await?;
        Ok(())
    }

    /// RemovePodSandbox.
    pub async fn remove_pod(&mut self, pod: &str) -> Result<(), Status> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        };
        deadline("RemovePodSandbox", self.runtime.remove_pod_sandbox(req)).await?;
        Ok(())
    }

    /// Ids of every pod sandbox the CRI plugin knows.
    pub async fn list_pods(&mut self) -> Result<Vec<String>, Status> {
        let r = deadline(
            "ListPodSandbox",
            self.runtime
                .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )
        .await?;
        Ok(r.into_inner().items.into_iter().map(|p| p.id).collect())
    }

    /// Ids of every container the CRI plugin knows.
    pub async fn list_containers(&mut self) -> Result<Vec<String>, Status> {
        let r = deadline(
            "ListContainers",
            self.runtime
                .list_containers(ListContainersRequest { filter: None }),
        )
        .await?;
        Ok(r.into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }
}

/// Runs `f` on a fresh single-threaded tokio runtime.
pub fn run_async<F: std::future::Future>(f: F) -> F::Output {
    block_on(f)
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Gives a sandbox's verbose info the keys containerd 1.6 and 1.7 put at its top level, where
/// 2.x has them only in the sandbox's metadata: `runtimeHandler`
/// (`sandboxMetadata.Metadata.RuntimeHandler` in 2.x). Keys already there are left alone.
pub fn normalize_sandbox_info(info: &mut serde_json::Value) {
    let handler = info
        .pointer("/sandboxMetadata/Metadata/RuntimeHandler")
        .cloned();
    if let (Some(obj), Some(handler)) = (info.as_object_mut(), handler) {
        obj.entry("runtimeHandler").or_insert(handler);
    }
}

/// The network namespace path of a sandbox, from its verbose status info (the runtime spec's
/// network namespace).
pub fn netns_path(info: &serde_json::Value) -> Option<PathBuf> {
    info.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// `net:[<inode>]` for the namespace file at `path`, as `readlink /proc/self/ns/net` prints it.
pub fn ns_link(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok(format!("net:[{}]", meta.ino()))
}

/// A pid from a verbose status info.
pub fn info_pid(info: &serde_json::Value) -> Result<u32> {
    info["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("no pid in the status info: {info}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_at<'a>(v: &'a toml::Value, path: &[&str]) -> &'a toml::value::Table {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(|v| v.as_table())
            .unwrap_or_else(|| panic!("no table {path:?} in {v}"))
    }

    /// The two shipped snippets hold the same handlers, each under its format's table.
    #[test]
    fn shipped_snippets_agree_across_config_versions() {
        let read = |v: ContainerdVersion| -> toml::Value {
            let path = configs_dir().join(shipped_snippet(v));
            toml::from_str(&fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let v2 = read(ContainerdVersion::V1_7);
        let v3 = read(ContainerdVersion::V2_1);
        assert_eq!(v2["version"].as_integer(), Some(2));
        assert_eq!(v3["version"].as_integer(), Some(3));
        let r2 = table_at(
            &v2,
            &[
                "plugins",
                "io.containerd.grpc.v1.cri",
                "containerd",
                "runtimes",
            ],
        );
        let r3 = table_at(
            &v3,
            &[
                "plugins",
                "io.containerd.cri.v1.runtime",
                "containerd",
                "runtimes",
            ],
        );
        assert_eq!(r2.len(), 4);
        assert_eq!(r2, r3);
        assert_eq!(table_at(&v3, &["plugins"]).len(), 1, "{v3}");
    }

    /// The test daemon's CRI configuration parses in both formats, with the registry hosts
    /// directory where each version reads it.
    #[test]
    fn cri_sections_in_both_formats() {
        let hosts = Path::new("/run/x/hosts");
        for version in ContainerdVersion::ALL {
            let mut text = format!("version = {}\n", version.config_version());
            text.push_str(&default_cri_section(
                version,
                Path::new("/run/x/net.d"),
                Path::new(CNI_BIN_DIR),
                PAUSE_IMAGE,
                Some(hosts),
            ));
            text.push_str(&runtimes_section(version, &configs_dir()).unwrap());
            let v: toml::Value =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{version}: {e}\n{text}"));
            let (runtime, registry) = match version.config_version() {
                2 => (
                    vec!["plugins", "io.containerd.grpc.v1.cri"],
                    vec!["plugins", "io.containerd.grpc.v1.cri", "registry"],
                ),
                _ => (
                    vec!["plugins", "io.containerd.cri.v1.runtime"],
                    vec!["plugins", "io.containerd.cri.v1.images", "registry"],
                ),
            };
            let rt = table_at(&v, &runtime);
            assert_eq!(
                rt["restrict_oom_score_adj"].as_bool(),
                Some(true),
                "{version}"
            );
            let runtimes = [runtime.as_slice(), &["containerd", "runtimes"]].concat();
            assert!(table_at(&v, &runtimes).contains_key("runc"), "{version}");
            let native = [runtimes.as_slice(), &["strata-native", "options"]].concat();
            assert_eq!(
                table_at(&v, &native)["ConfigPath"]
                    .as_str()
                    .map(PathBuf::from),
                Some(configs_dir().join("strata-native.toml")),
                "{version}"
            );
            assert_eq!(
                table_at(&v, &registry)["config_path"].as_str(),
                Some("/run/x/hosts"),
                "{version}"
            );
        }
    }
}
