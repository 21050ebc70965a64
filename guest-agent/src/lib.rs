//! Strata's guest agent: PID 1 inside the microVM.
//!
//! What it does now (a skeleton, see docs/microvm.md): mounts /proc, /sys, /dev, /run and the
//! cgroup2 hierarchy; reaps orphans; listens on vsock port [`AGENT_VSOCK_PORT`] (or, for tests, a
//! Unix socket: same code, another transport); exchanges the protocol version; answers `PING`;
//! shuts the VM down on `SHUTDOWN`. Container creation and the ttrpc service come next.
//!
//! It must never trust the host's framing blindly either: a request line longer than
//! [`MAX_LINE`] closes the connection.
#![forbid(unsafe_code)]

pub mod pid1;
pub mod protocol;

/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// The longest request line accepted.
pub const MAX_LINE: usize = 4096;
