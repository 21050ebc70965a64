//! Strata's microvm tier: every pod in its own VM, Kata-style.
//!
//! The pod's sandbox is the VM; its containers are created inside it by the guest agent
//! (`strata-guest-agent`), reached through `strata-agent-protocol`'s client over hybrid vsock.
//! The VM is run by a hypervisor driver: QEMU (`-M microvm`, KVM where it can, TCG where it
//! cannot and the configuration allows it) or Strata's own VMM (`strata-vmm`).
#![deny(unsafe_code)]

pub mod backend;
pub mod error;
pub mod guest_spec;
pub mod hypervisor;
pub mod network;
pub mod process;
pub mod qemu;
pub mod settings;
pub mod share;
pub mod strata_vmm;
pub mod tools;
pub mod vmproc;

pub use backend::MicrovmBackend;
pub use error::Error;
pub use hypervisor::{Accel, Hypervisor, Vm, VmRecord, VmSpec};
pub use settings::Settings;

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

    fn validate(&self, settings: &toml::Value) -> std::result::Result<(), String> {
        Settings::from_table(settings).map(|_| ())
    }

    fn build(&self, ctx: &TierContext) -> strata_backend::Result<Arc<dyn Backend>> {
        let settings = match &ctx.settings {
            Some(v) => Settings::from_table(v).map_err(strata_backend::Error::InvalidArgument)?,
            None => Settings::default(),
        };
        let hypervisor: Box<dyn Hypervisor> = match settings.driver {
            settings::Driver::Qemu => Box::new(qemu::Qemu {
                qemu: settings.qemu.clone(),
                virtiofsd: settings.virtiofsd.clone(),
                vhost_vsock: settings.vhost_device_vsock.clone(),
            }),
            settings::Driver::Strata => Box::new(strata_vmm::StrataVmm {
                strata: settings.strata.clone(),
                virtiofsd: settings.virtiofsd.clone(),
                require_hardware_kvm: true,
            }),
        };
        Ok(Arc::new(MicrovmBackend::new(
            settings,
            hypervisor,
            ctx.sink.clone(),
        )))
    }

    /// A dead shim's pod: its VM's processes (by the record the driver wrote), the shared
    /// directory's mounts, the state directory. Only the pod's sandbox container owns a VM.
    fn cleanup_orphan(&self, orphan: &Orphan<'_>) -> strata_backend::Result<()> {
        if orphan.tier != Some(BackendKind::Microvm) {
            return Ok(());
        }
        let settings = Settings::default();
        backend::cleanup_orphan(
            orphan.bundle,
            &settings.state_dir,
            orphan.namespace,
            orphan.id,
        );
        Ok(())
    }
}
