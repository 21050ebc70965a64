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
