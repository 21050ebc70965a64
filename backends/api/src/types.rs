//! Plain data exchanged between the shim and a backend.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One of Strata's isolation tiers, as named by the `strata.dev/backend` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Native,
    Sentry,
    Microvm,
    Wasm,
}

impl BackendKind {
    /// Every tier, weakest isolation first.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Native,
        BackendKind::Sentry,
        BackendKind::Microvm,
        BackendKind::Wasm,
    ];

    /// The annotation value naming this tier.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::Sentry => "sentry",
            BackendKind::Microvm => "microvm",
            BackendKind::Wasm => "wasm",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The annotation value did not name a tier.
#[derive(Debug, thiserror::Error)]
#[error("unknown backend {0:?}: expected one of native, sentry, microvm, wasm")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "native" => Ok(BackendKind::Native),
            "sentry" => Ok(BackendKind::Sentry),
            "microvm" => Ok(BackendKind::Microvm),
            "wasm" => Ok(BackendKind::Wasm),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// Where a process's standard streams go: containerd's FIFO paths (empty: none).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Everything a backend needs to create a container.
#[derive(Debug, Clone)]
pub struct CreateOpts {
    pub id: String,
    /// The OCI bundle; its `rootfs` is already mounted by the shim.
    pub bundle: PathBuf,
    pub spec: oci_spec::runtime::Spec,
    pub stdio: StdioPaths,
    /// containerd namespace, used to keep state of different namespaces apart.
    pub namespace: String,
    /// The Strata configuration file the container was created under, if one was named
    /// (a tier may keep its own settings beside it).
    pub config_path: Option<PathBuf>,
    /// The pod's sandbox ([`crate::Sandbox`]) this container belongs to: the pod's sandbox
    /// container's id, or the container's own id outside a pod.
    pub sandbox_id: String,
}

/// An additional process to run in an existing container.
#[derive(Debug, Clone)]
pub struct ExecOpts {
    pub container_id: String,
    pub exec_id: String,
    pub process: oci_spec::runtime::Process,
    pub stdio: StdioPaths,
}

/// Something that happened to a container which the shim must turn into an event.
#[derive(Debug, Clone)]
pub enum BackendEvent {
    /// A process ended; `status` is its exit code, or 128+signal.
    Exited {
        container_id: String,
        exec_id: Option<String>,
        pid: u32,
        status: u32,
    },
    /// The kernel's OOM killer acted in the container's memory cgroup.
    Oom { container_id: String },
}

/// Where a backend sends [`BackendEvent`]s.
pub type EventSink = Arc<dyn Fn(BackendEvent) + Send + Sync>;

/// Resource usage of one container, independent of the cgroup version that measured it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// 1 or 2: which cgroup hierarchy the figures come from (0: neither, e.g. a VM).
    pub cgroup_version: u8,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    pub memory_failcnt: u64,
    pub memory_cache: u64,
    pub memory_rss: u64,
    pub memory_oom_kills: u64,
    pub cpu_usage_total_ns: u64,
    pub cpu_usage_user_ns: u64,
    pub cpu_usage_kernel_ns: u64,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}
