//! Strata's guest agent: PID 1 inside the microVM.
//!
//! The agent mounts /proc, /sys, /dev, /run and the cgroup2 hierarchy, and the pod's virtio-fs
//! share ([`share`]), reaps orphans, and serves the agent protocol (`proto/agent.proto`, ttrpc)
//! on vsock port [`AGENT_VSOCK_PORT`] to the host's CID only, or on a Unix socket when run as a
//! host process for tests: same code, another transport. Every connection starts with
//! `Version`. Containers are created inside the guest with the native backend's code; their
//! stdio can stream over the transport ([`streams`]).
//!
//! The agent must never serve a peer other than the host (the guest's own processes reach its
//! ports through vsock loopback), nor mount a disk for a request when it is not the guest's
//! PID 1.
//!
//! The protocol, its generated code, the host's client and the vsock transport are the
//! `strata-agent-protocol` crate's (re-exported here).
//! No unsafe code, but in [`network`]: the interface and route `ioctl`s, which no safe crate
//! of the build offers.
#![deny(unsafe_code)]

pub mod bundle;
pub mod cgroup_stats;
pub mod container;
pub mod containers;
#[allow(unsafe_code)]
pub mod network;
pub mod pid1;
pub mod selftest;
pub mod service;
pub mod share;
pub mod streams;

pub use strata_agent_protocol::{
    client, proto, vsock, AGENT_SERVING_MARKER, AGENT_VSOCK_PORT, PROTOCOL_VERSION,
};

pub(crate) use strata_backend::chain;
