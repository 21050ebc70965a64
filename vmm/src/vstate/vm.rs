//! The KVM VM: `/dev/kvm`, the VM fd with its in-kernel IRQ chip (PIC + IOAPIC), PIT and TSS,
//! and the guest memory registered in it.

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::memory::{self, MemoryError};
use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

/// Errors creating the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "opening /dev/kvm (is KVM available on this host? `strata check` says what it supports)"
    )]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    #[error("the host KVM lacks {0}")]
    MissingCap(&'static str),
    #[error("KVM_CREATE_VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR failed")]
    Tss(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP failed")]
    IrqChip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2 failed")]
    Pit(#[source] kvm_ioctls::Error),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("the host allows at most {max} vCPUs; {asked} were asked for")]
    TooManyVcpus { asked: u8, max: usize },
}

/// A VM with its memory.
pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub memory: GuestMemoryMmap,
}

const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
];

impl Vm {
    /// Opens KVM, creates the VM with its IRQ chip, PIT and TSS, and registers `memory`.
    pub fn new(memory: GuestMemoryMmap, vcpus: u8) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(VmError::ApiVersion(api));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(*cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let max = kvm.get_max_vcpus();
        if usize::from(vcpus) > max {
            return Err(VmError::TooManyVcpus { asked: vcpus, max });
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(KVM_TSS_ADDRESS).map_err(VmError::Tss)?;
        fd.create_irq_chip().map_err(VmError::IrqChip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(VmError::Pit)?;
        memory::register(&fd, &memory)?;
        Ok(Vm { kvm, fd, memory })
    }
}
