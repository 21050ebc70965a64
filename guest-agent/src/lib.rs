//! Strata's guest agent: PID 1 inside the microVM, and the host side's client for it.
//!
//! The agent mounts /proc, /sys, /dev, /run and the cgroup2 hierarchy, reaps orphans, and serves
//! the agent protocol (`proto/agent.proto`, ttrpc) on vsock port [`AGENT_VSOCK_PORT`], or on a
//! Unix socket when run as a host process for tests: same code, another transport. Every
//! connection starts with `Version`. Containers are created inside the guest with the native
//! backend's code; their stdio can stream over the transport ([`streams`]).
//!
//! The host side ([`client`]) must never trust the agent: every call has a deadline, and a reply
//! that is not a well-formed ttrpc frame is an error, never a panic or a hang.
//!
//! `unsafe` is denied except in [`vsock`] (wrapping the descriptor `accept4` returns).
#![deny(unsafe_code)]

pub mod bundle;
pub mod cgroup_stats;
pub mod client;
pub mod container;
pub mod containers;
pub mod pid1;
pub mod selftest;
pub mod service;
pub mod streams;
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
/// 2: stdio streams, `Stats`, `OomEvent`. 3: `MountBundle`.
pub const PROTOCOL_VERSION: u32 = 3;

/// An error and its sources, `: `-separated.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
