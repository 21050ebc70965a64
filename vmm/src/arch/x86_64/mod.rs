//! x86_64: the guest memory layout, boot-time CPU state (GDT, page tables, registers, MSRs),
//! CPUID normalisation and the boot-protocol structures (zero page, PVH start info).

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
