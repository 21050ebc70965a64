//! Boot MSRs: the values a freshly reset PC would hold, limited to the MSRs the host's KVM can
//! save and restore (`KVM_GET_MSR_INDEX_LIST`), so that a PVM or an older host is not handed an
//! MSR it cannot honour.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::{Kvm, VcpuFd};

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 0x1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE: u64 = 0x800;
const MTRR_MEM_TYPE_WB: u64 = 0x6;

/// The boot MSR values (index, value).
pub fn boot_msr_values() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// Errors setting the boot MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    #[error("reading the host's MSR list")]
    IndexList(#[source] kvm_ioctls::Error),
    #[error("building the MSR list")]
    Fam,
    #[error("KVM refused the boot MSRs")]
    Set(#[source] kvm_ioctls::Error),
    #[error("KVM set only {set} of {wanted} boot MSRs")]
    Partial { set: usize, wanted: usize },
}

/// The boot MSRs that `kvm` supports.
pub fn supported_boot_msrs(kvm: &Kvm) -> Result<Vec<(u32, u64)>, MsrError> {
    let list = kvm.get_msr_index_list().map_err(MsrError::IndexList)?;
    let supported = list.as_slice();
    Ok(boot_msr_values()
        .into_iter()
        .filter(|(index, _)| supported.contains(index))
        .collect())
}

/// Writes `msrs` into `vcpu`.
pub fn setup_msrs(vcpu: &VcpuFd, msrs: &[(u32, u64)]) -> Result<(), MsrError> {
    let entries: Vec<kvm_msr_entry> = msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let kvm_msrs = Msrs::from_entries(&entries).map_err(|_| MsrError::Fam)?;
    let set = vcpu.set_msrs(&kvm_msrs).map_err(MsrError::Set)?;
    if set != entries.len() {
        return Err(MsrError::Partial {
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}
