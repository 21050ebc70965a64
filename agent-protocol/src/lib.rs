//! Strata's agent protocol: what the host (the microvm tier, `strata vm`) and the guest agent
//! (PID 1 in the VM) say to each other.
//!
//! - [`proto`]: the messages and the ttrpc service and client, generated from
//!   `proto/agent.proto` by `build.rs` (ttrpc-codegen, no protoc);
//! - [`client`]: the host's side, [`client::Agent`], which never trusts the agent: every call
//!   has a deadline, and a reply that is not a well-formed ttrpc frame is an error;
//! - [`vsock`]: AF_VSOCK stream sockets (listen, accept with the peer's CID, connect).
//!
//! Every connection starts with `Version`: [`PROTOCOL_VERSION`] on both sides.
//! `unsafe` is denied except in [`vsock`] (wrapping the descriptor `accept4` returns).
#![deny(unsafe_code)]

pub mod client;
pub mod vsock;

/// The protocol's generated code: messages and the ttrpc service and client.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unused,
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case
)]
pub mod proto {
    pub mod agent {
        include!(concat!(env!("OUT_DIR"), "/proto/agent.rs"));
    }
    pub mod agent_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/proto/agent_ttrpc.rs"));
    }
}

/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// The protocol version this crate speaks.
/// 2: stdio streams, `Stats`, `OomEvent`. 3: `MountBundle`. 4: `Pause`, `Resume`, `Pids`,
/// `Update`, `ResizePty`, `CloseStdin`, a terminal with streamed stdio, bundles on the pod's
/// virtio-fs share (`/run/strata/shared/<id>`, "virtiofs" in `Ping`'s mounts), port 1024 from
/// the host's CID only, and the rest of a container's processes killed when its init exits.
pub const PROTOCOL_VERSION: u32 = 4;

/// A container's figures as the agent sends them (`Stats` in the guest) and as the host's
/// backend reports them: the two directions of one field list, kept side by side.
mod stats {
    use strata_backend::Stats;

    use crate::proto::agent::StatsResponse;

    impl From<&Stats> for StatsResponse {
        fn from(s: &Stats) -> Self {
            StatsResponse {
                cgroup_version: s.cgroup_version.into(),
                memory_usage: s.memory_usage,
                memory_limit: s.memory_limit,
                memory_max_usage: s.memory_max_usage,
                memory_failcnt: s.memory_failcnt,
                memory_cache: s.memory_cache,
                memory_rss: s.memory_rss,
                memory_oom_kills: s.memory_oom_kills,
                cpu_usage_total_ns: s.cpu_usage_total_ns,
                cpu_usage_user_ns: s.cpu_usage_user_ns,
                cpu_usage_kernel_ns: s.cpu_usage_kernel_ns,
                cpu_periods: s.cpu_periods,
                cpu_throttled_periods: s.cpu_throttled_periods,
                cpu_throttled_ns: s.cpu_throttled_ns,
                pids_current: s.pids_current,
                pids_limit: s.pids_limit,
                io_read_bytes: s.io_read_bytes,
                io_write_bytes: s.io_write_bytes,
                ..Default::default()
            }
        }
    }

    impl From<&StatsResponse> for Stats {
        fn from(s: &StatsResponse) -> Self {
            Stats {
                cgroup_version: s.cgroup_version as u8,
                memory_usage: s.memory_usage,
                memory_limit: s.memory_limit,
                memory_max_usage: s.memory_max_usage,
                memory_failcnt: s.memory_failcnt,
                memory_cache: s.memory_cache,
                memory_rss: s.memory_rss,
                memory_oom_kills: s.memory_oom_kills,
                cpu_usage_total_ns: s.cpu_usage_total_ns,
                cpu_usage_user_ns: s.cpu_usage_user_ns,
                cpu_usage_kernel_ns: s.cpu_usage_kernel_ns,
                cpu_periods: s.cpu_periods,
                cpu_throttled_periods: s.cpu_throttled_periods,
                cpu_throttled_ns: s.cpu_throttled_ns,
                pids_current: s.pids_current,
                pids_limit: s.pids_limit,
                io_read_bytes: s.io_read_bytes,
                io_write_bytes: s.io_write_bytes,
            }
        }
    }
}
