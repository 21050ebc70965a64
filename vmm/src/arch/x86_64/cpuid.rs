//! CPUID: the host's `KVM_GET_SUPPORTED_CPUID`, normalised for the guest.
//!
//! What KVM reports as supported is a ceiling, not a description of a machine. The guest is told:
//! the hypervisor bit; its own APIC ID and the vCPU count (leaves 0x1, 0xb, 0x4); no performance
//! monitoring (leaf 0xa); no thermal/power management (leaf 0x6). Where the host cannot save the
//! extended state (no XSAVE, as on PVM), every feature that needs XSAVE is cleared as well:
//! OSXSAVE, AVX and its descendants, and leaf 0xd. A guest that saw AVX without XSAVE would take a
//! #UD on its first `xgetbv`.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_AVX: u32 = 1 << 28;
const LEAF1_ECX_FMA: u32 = 1 << 12;
const LEAF1_ECX_F16C: u32 = 1 << 29;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 7 EBX bits that need XSAVE-managed state: AVX2, AVX512F/DQ/IFMA/PF/ER/CD/BW/VL.
const LEAF7_EBX_XSAVE_DEPENDENT: u32 = (1 << 5)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
/// Leaf 7 ECX bits that need XSAVE-managed state: AVX512VBMI, VBMI2, VAES, VPCLMULQDQ, VNNI,
/// BITALG, VPOPCNTDQ.
const LEAF7_ECX_XSAVE_DEPENDENT: u32 =
    (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
/// Leaf 7 EDX bits that need XSAVE-managed state: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT,
/// AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8.
const LEAF7_EDX_XSAVE_DEPENDENT: u32 =
    (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25);

/// Errors reading CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    Supported(#[source] kvm_ioctls::Error),
    #[error("building the CPUID table")]
    Fam,
}

/// The host's supported CPUID, read once per machine.
pub fn supported(kvm: &Kvm) -> Result<Vec<kvm_cpuid_entry2>, CpuidError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuidError::Supported)?;
    Ok(cpuid.as_slice().to_vec())
}

/// True if the host can give the guest XSAVE-managed state.
pub fn host_has_xsave(entries: &[kvm_cpuid_entry2], kvm_xsave_cap: bool) -> bool {
    kvm_xsave_cap
        && entries
            .iter()
            .any(|e| e.function == 1 && e.ecx & LEAF1_ECX_XSAVE != 0)
}

/// Normalises `entries` for vCPU `cpu_id` of `cpu_count`.
pub fn normalise(
    entries: &[kvm_cpuid_entry2],
    cpu_id: u8,
    cpu_count: u8,
    host_xsave: bool,
) -> Vec<kvm_cpuid_entry2> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut e = *entry;
        match e.function {
            0x1 => {
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if !host_xsave {
                    e.ecx &= !(LEAF1_ECX_XSAVE
                        | LEAF1_ECX_OSXSAVE
                        | LEAF1_ECX_AVX
                        | LEAF1_ECX_FMA
                        | LEAF1_ECX_F16C);
                }
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
                e.ebx = (e.ebx & 0x0000_ffff)
                    | (u32::from(cpu_id) << 24)
                    | (u32::from(cpu_count) << 16);
                if cpu_count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 => {
                // EAX[31:26]: cores per package - 1. One thread per core.
                e.eax =
                    (e.eax & 0x03ff_ffff) | ((u32::from(cpu_count).saturating_sub(1) & 0x3f) << 26);
            }
            0x6 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0x7 if e.index == 0 && !host_xsave => {
                e.ebx &= !LEAF7_EBX_XSAVE_DEPENDENT;
                e.ecx &= !LEAF7_ECX_XSAVE_DEPENDENT;
                e.edx &= !LEAF7_EDX_XSAVE_DEPENDENT;
            }
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                // x2APIC topology (0xb, and its V2 0x1f): EDX is the x2APIC ID; level 0 (SMT)
                // has 1 thread, level 1 (core) has `cpu_count`.
                e.edx = u32::from(cpu_id);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 0x100;
                    }
                    1 => {
                        e.eax = bits_for(cpu_count);
                        e.ebx = u32::from(cpu_count);
                        e.ecx = 0x201;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0xd if !host_xsave => continue,
            _ => {}
        }
        out.push(e);
    }
    out
}

/// The number of APIC-ID bits needed for `count` CPUs.
fn bits_for(count: u8) -> u32 {
    if count <= 1 {
        0
    } else {
        u32::BITS - (u32::from(count) - 1).leading_zeros()
    }
}

/// Wraps normalised entries for `KVM_SET_CPUID2`.
pub fn to_kvm(entries: &[kvm_cpuid_entry2]) -> Result<CpuId, CpuidError> {
    CpuId::from_entries(entries).map_err(|_| CpuidError::Fam)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn no_xsave_clears_avx_family_and_leaf_d() {
        let host = vec![
            leaf(1, 0, 0, 0xffff_ffff, LEAF1_ECX_XSAVE | LEAF1_ECX_AVX | 1, 0),
            leaf(7, 0, 0, (1 << 5) | (1 << 3), 0, 0),
            leaf(0xd, 0, 7, 0, 0, 0),
        ];
        let out = normalise(&host, 1, 2, false);
        let l1 = out.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ecx & (LEAF1_ECX_XSAVE | LEAF1_ECX_AVX), 0);
        assert_ne!(l1.ecx & 1, 0, "SSE3 kept");
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.ebx >> 24, 1, "APIC ID");
        assert_eq!((l1.ebx >> 16) & 0xff, 2, "CPU count");
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        let l7 = out.iter().find(|e| e.function == 7).unwrap();
        assert_eq!(l7.ebx, 1 << 3, "AVX2 cleared, BMI1 kept");
        assert!(out.iter().all(|e| e.function != 0xd));
    }

    #[test]
    fn xsave_host_keeps_avx() {
        let host = vec![
            leaf(1, 0, 0, 0, LEAF1_ECX_XSAVE | LEAF1_ECX_AVX, 0),
            leaf(0xd, 0, 7, 0, 0, 0),
        ];
        let out = normalise(&host, 0, 1, true);
        assert_ne!(out[0].ecx & LEAF1_ECX_AVX, 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn topology_leaves_describe_the_guest() {
        let host = vec![
            leaf(0xb, 0, 1, 2, 0x100, 7),
            leaf(0xb, 1, 4, 16, 0x201, 7),
            leaf(0x1f, 1, 4, 16, 0x201, 7),
        ];
        let out = normalise(&host, 2, 3, true);
        assert!(out.iter().all(|e| e.edx == 2), "x2APIC ID");
        let core = out
            .iter()
            .find(|e| e.function == 0xb && e.index == 1)
            .unwrap();
        assert_eq!((core.eax, core.ebx), (2, 3));
        let core2 = out
            .iter()
            .find(|e| e.function == 0x1f && e.index == 1)
            .unwrap();
        assert_eq!((core2.eax, core2.ebx), (2, 3));
    }

    #[test]
    fn topology_bits() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
    }
}
