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
/// What the agent writes to the guest console once it is about to listen on
/// [`AGENT_VSOCK_PORT`], followed by " at S s of guest uptime". The host sends no `CONNECT`
/// before it reads this: vhost-device-vsock (0.3) ends its worker thread for good when a
/// `CONNECT` reaches it after the guest's memory is mapped but before the guest driver has made
/// the queues ready, and then no `CONNECT` is ever answered.
pub const AGENT_SERVING_MARKER: &str = "strata-guest-agent: serving on vsock port 1024";
/// The protocol version this crate speaks.
/// 2: stdio streams, `Stats`, `OomEvent`. 3: `MountBundle`. 4: `Pause`, `Resume`, `Pids`,
/// `Update`, `ResizePty`, `CloseStdin`, a terminal with streamed stdio, bundles on the pod's
/// virtio-fs share (`/run/strata/shared/<id>`, "virtiofs" in `Ping`'s mounts), port 1024 from
/// the host's CID only, and the rest of a container's processes killed when its init exits.
/// 5: `ConfigureNetwork`.
pub const PROTOCOL_VERSION: u32 = 5;

/// A container's figures as the agent sends them (`Stats` in the guest) and as the host's
/// backend reports them: both directions from one field list.
mod stats {
    use strata_backend::Stats;

    use crate::proto::agent::StatsResponse;

    /// `From` both ways for the fields `Stats` and `StatsResponse` share by name and type; the
    /// cgroup version (a `u8` here, a `u32` on the wire) is given apart.
    macro_rules! both_ways {
        ($($field:ident),* $(,)?) => {
            impl From<&Stats> for StatsResponse {
                fn from(s: &Stats) -> Self {
                    StatsResponse {
                        cgroup_version: s.cgroup_version.into(),
                        $($field: s.$field,)*
                        ..Default::default()
                    }
                }
            }

            impl From<&StatsResponse> for Stats {
                fn from(s: &StatsResponse) -> Self {
                    Stats {
                        cgroup_version: s.cgroup_version as u8,
                        $($field: s.$field,)*
                    }
                }
            }
        };
    }

    both_ways!(
        memory_usage,
        memory_limit,
        memory_max_usage,
        memory_failcnt,
        memory_cache,
        memory_rss,
        memory_oom_kills,
        cpu_usage_total_ns,
        cpu_usage_user_ns,
        cpu_usage_kernel_ns,
        cpu_periods,
        cpu_throttled_periods,
        cpu_throttled_ns,
        pids_current,
        pids_limit,
        io_read_bytes,
        io_write_bytes,
    );

    #[cfg(test)]
    #[test]
    fn a_round_trip_keeps_every_figure() {
        let s = Stats {
            cgroup_version: 2,
            memory_usage: 1,
            memory_limit: 2,
            memory_max_usage: 3,
            memory_failcnt: 4,
            memory_cache: 5,
            memory_rss: 6,
            memory_oom_kills: 7,
            cpu_usage_total_ns: 8,
            cpu_usage_user_ns: 9,
            cpu_usage_kernel_ns: 10,
            cpu_periods: 11,
            cpu_throttled_periods: 12,
            cpu_throttled_ns: 13,
            pids_current: 14,
            pids_limit: 15,
            io_read_bytes: 16,
            io_write_bytes: 17,
        };
        let back = Stats::from(&StatsResponse::from(&s));
        assert_eq!(format!("{back:?}"), format!("{s:?}"));
    }
}

#[cfg(test)]
#[test]
fn the_serving_marker_names_the_agents_port() {
    assert!(AGENT_SERVING_MARKER.ends_with(&format!(" port {AGENT_VSOCK_PORT}")));
}
