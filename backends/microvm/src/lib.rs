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

use std::sync::Arc;

use strata_backend::{Backend, BackendKind, Orphan, Tier, TierContext};

/// The microvm tier in the shim's registry.
pub struct MicrovmTier;

/// The registry's entry for this tier.
pub static TIER: MicrovmTier = MicrovmTier;

impl Tier for MicrovmTier {
    fn kind(&self) -> BackendKind {
        BackendKind::Microvm
    }

    fn build(&self, _ctx: &TierContext) -> strata_backend::Result<Arc<dyn Backend>> {
        Err(strata_backend::Error::Unavailable {
            backend: BackendKind::Microvm,
            reason: "this build of Strata does not include it yet; use the native backend".into(),
        })
    }

    fn cleanup_orphan(&self, _orphan: &Orphan<'_>) -> strata_backend::Result<()> {
        Ok(())
    }
}
