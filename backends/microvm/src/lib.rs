//! Strata's microvm tier: every pod in its own VM, Kata-style.
//!
//! The pod's sandbox is the VM; its containers are created inside it by the guest agent
//! (`strata-guest-agent`), reached through `strata-agent-protocol`'s client over hybrid vsock.
//! The VM is run by a hypervisor driver: QEMU (`-M microvm`, KVM where it can, TCG where it
//! cannot and the configuration allows it) or Strata's own VMM (`strata-vmm`).
#![deny(unsafe_code)]

pub mod error;
pub mod hypervisor;

pub use error::Error;
pub use hypervisor::{Accel, Hypervisor, Vm, VmRecord, VmSpec};
