//! The hypervisor seam: a driver boots one VM per pod and hands back a running [`Vm`].
//!
//! Two drivers, as Kata has several: QEMU (`qemu-system-x86_64 -M microvm`, virtio-mmio;
//! KVM where `/dev/kvm` is hardware-backed, TCG where it is not and `allow_tcg` is set) and
//! Strata's own VMM (`strata-vmm`, hardware KVM only). Both give the guest the same kernel and
//! agent, reach the agent by hybrid vsock (`CONNECT <port>\n` / `OK <port>\n` on a Unix socket),
//! and share the pod's directory with the guest (virtio-fs tag [`SHARE_TAG`]).
//!
//! Every process a driver starts (the VMM, virtiofsd, the vsock device) is a separate process,
//! never a thread of the shim, placed in [`VmSpec::cgroup`] when one is given, and named in
//! the VM's state directory ([`VM_RECORD_FILE`]) so that a later `delete` can end them after
//! the shim itself was killed ([`cleanup_orphan`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The virtio-fs tag of the pod's shared directory; the agent mounts it at
/// [`GUEST_SHARE_DIR`].
pub const SHARE_TAG: &str = "strata";
/// Where the guest agent mounts the pod's shared directory.
pub const GUEST_SHARE_DIR: &str = "/run/strata/shared";
/// The file in a VM's state directory that names its processes (JSON, [`VmRecord`]).
pub const VM_RECORD_FILE: &str = "vm.json";

/// How the guest's instructions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's emulator: no security boundary (QEMU's own policy), allowed only by `allow_tcg`.
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The pod's (sandbox's) id; names the VM in logs and process titles.
    pub id: String,
    /// The VM's own directory (0700, created by the caller, removed by [`Vm::stop`]): sockets,
    /// the console log, [`VM_RECORD_FILE`].
    pub state_dir: PathBuf,
    /// The guest kernel (ELF vmlinux with the PVH note).
    pub kernel: PathBuf,
    /// The initramfs holding the agent as `/init`.
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Shared with the guest through virtio-fs as [`SHARE_TAG`].
    pub shared_dir: PathBuf,
    /// The cgroup directories every process of the VM joins (the pod's): one on a cgroup v2
    /// host, one per controller hierarchy on a v1 or hybrid host; none to stay in the shim's.
    pub cgroups: Vec<PathBuf>,
    /// Whether QEMU may emulate (TCG) where /dev/kvm cannot run a Linux guest.
    pub allow_tcg: bool,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// The pod's network: one virtio-net device per (tap descriptor, MAC address), in order.
    /// The descriptors stay the caller's; the VMM gets copies.
    pub taps: Vec<(std::os::fd::RawFd, String)>,
}

/// The processes and sockets of a running VM, written to [`VM_RECORD_FILE`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct VmRecord {
    /// (pid, start time in clock ticks from /proc/PID/stat field 22): a pid is only signalled
    /// while its start time still matches, so a reused pid is never hit.
    pub processes: Vec<(u32, u64)>,
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

/// A VM that has booted far enough for its agent socket to exist.
pub trait Vm: Send + Sync {
    /// The hybrid vsock Unix socket on which `CONNECT <port>` reaches the guest.
    fn vsock_socket(&self) -> &Path;
    /// Which driver runs it ("qemu", "strata").
    fn driver(&self) -> &'static str;
    fn accel(&self) -> Accel;
    /// The host processes of this VM (VMM and helpers), for `pids` and the cgroup.
    fn host_pids(&self) -> Vec<u32>;
    /// Whether the VMM process is still running.
    fn is_running(&self) -> bool;
    /// The last lines of the guest console (for errors).
    fn console_tail(&self) -> String;
    /// Whether the guest console shows the agent's [`AGENT_SERVING_MARKER`]: only then may
    /// the host send its first `CONNECT` (the marker's documentation says why).
    ///
    /// [`AGENT_SERVING_MARKER`]: strata_agent_protocol::AGENT_SERVING_MARKER
    fn agent_announced(&self) -> bool;
    /// Ends every process of the VM (SIGKILL after `grace`), waits for them, removes the
    /// state directory. Idempotent.
    fn stop(&self, grace: Duration) -> Result<(), crate::Error>;
}

/// Boots VMs.
pub trait Hypervisor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts the VM's processes and returns once its vsock socket exists (not yet once the
    /// agent answers: the caller waits for that with its own deadline). A failure leaves
    /// nothing running and nothing in `state_dir` but the console log.
    fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, crate::Error>;
}
