//! Boot-time register state: general registers, segments and control registers for the 64-bit
//! Linux entry (long mode, identity-mapped) and for the PVH entry (32-bit flat protected mode,
//! paging off), the FPU, and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{gdt_entry, kvm_segment_from_gdt};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// Linux 64-bit boot protocol: long mode, `rip` at the 64-bit entry, `rsi` the zero page.
    Linux64 { entry: u64, zero_page: u64 },
    /// PVH: 32-bit protected mode without paging, `rip` at the PVH note's entry, `rbx` the
    /// `hvm_start_info`.
    Pvh { entry: u64, start_info: u64 },
}

impl BootEntry {
    /// The guest address of the first instruction.
    pub fn entry(&self) -> u64 {
        match *self {
            BootEntry::Linux64 { entry, .. } | BootEntry::Pvh { entry, .. } => entry,
        }
    }
}

/// Errors setting the boot CPU state.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("writing the boot GDT, IDT or page tables into guest memory")]
    GuestMemory,
    #[error("KVM refused the vCPU's {what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

/// Sets the general-purpose registers for `boot`.
pub fn setup_regs(vcpu: &VcpuFd, boot: BootEntry) -> Result<(), RegsError> {
    let regs = match boot {
        BootEntry::Linux64 { entry, zero_page } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: zero_page,
            ..Default::default()
        },
        BootEntry::Pvh { entry, start_info } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rbx: start_info,
            ..Default::default()
        },
    };
    vcpu.set_regs(&regs).map_err(kvm("general registers"))
}

/// Sets the FPU to its reset state (x87 control word, SSE MXCSR).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("FPU state"))
}

/// Writes the GDT (and, for long mode, the identity page tables) into guest memory and sets the
/// segment and control registers for `boot`.
pub fn setup_sregs(mem: &GuestMemoryMmap, vcpu: &VcpuFd, boot: BootEntry) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm("special registers"))?;
    configure_segments_and_sregs(mem, &mut sregs, boot)?;
    if let BootEntry::Linux64 { .. } = boot {
        setup_page_tables(mem, &mut sregs)?;
    }
    vcpu.set_sregs(&sregs).map_err(kvm("special registers"))
}

fn write_gdt_table(table: &[u64], mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let boot_gdt_addr = GuestAddress(BOOT_GDT_START);
    for (index, entry) in table.iter().enumerate() {
        let addr = boot_gdt_addr
            .checked_add((index * std::mem::size_of::<u64>()) as u64)
            .ok_or(RegsError::GuestMemory)?;
        mem.write_obj(*entry, addr)
            .map_err(|_| RegsError::GuestMemory)?;
    }
    Ok(())
}

fn configure_segments_and_sregs(
    mem: &GuestMemoryMmap,
    sregs: &mut kvm_sregs,
    boot: BootEntry,
) -> Result<(), RegsError> {
    let gdt_table: [u64; 4] = match boot {
        BootEntry::Linux64 { .. } => [
            gdt_entry(0, 0, 0),            // NULL
            gdt_entry(0xa09b, 0, 0xfffff), // CODE, 64-bit
            gdt_entry(0xc093, 0, 0xfffff), // DATA
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        BootEntry::Pvh { .. } => [
            gdt_entry(0, 0, 0),                // NULL
            gdt_entry(0xc09b, 0, 0xffff_ffff), // CODE, 32-bit flat
            gdt_entry(0xc093, 0, 0xffff_ffff), // DATA
            gdt_entry(0x008b, 0, 0x67),        // TSS
        ],
    };
    let code_seg = kvm_segment_from_gdt(gdt_table[1], 1);
    let data_seg = kvm_segment_from_gdt(gdt_table[2], 2);
    let tss_seg = kvm_segment_from_gdt(gdt_table[3], 3);

    write_gdt_table(&gdt_table, mem)?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt_table) - 1) as u16;

    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| RegsError::GuestMemory)?;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;

    sregs.cs = code_seg;
    sregs.ds = data_seg;
    sregs.es = data_seg;
    sregs.fs = data_seg;
    sregs.gs = data_seg;
    sregs.ss = data_seg;
    sregs.tr = tss_seg;

    match boot {
        BootEntry::Linux64 { .. } => {
            sregs.cr0 |= X86_CR0_PE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootEntry::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// Identity-maps the low 4 GiB with 2 MiB pages (so that a guest in long mode reaches the
/// virtio-mmio windows at 0xd000_0000 before it builds its own tables).
fn setup_page_tables(mem: &GuestMemoryMmap, sregs: &mut kvm_sregs) -> Result<(), RegsError> {
    let w = |val: u64, addr: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|_| RegsError::GuestMemory)
    };
    w(PDPTE_START | 0x03, PML4_START)?;
    for pdpt_index in 0..4u64 {
        let pd = PDE_START + pdpt_index * 0x1000;
        w(pd | 0x03, PDPTE_START + pdpt_index * 8)?;
        for i in 0..512u64 {
            let page = ((pdpt_index * 512 + i) << 21) | 0x83;
            w(page, pd + i * 8)?;
        }
    }
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PG;
    Ok(())
}

/// Configures the local APIC's LINT0 as ExtINT and LINT1 as NMI, as a PC's firmware would.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;

    let mut klapic = vcpu.get_lapic().map_err(kvm("local APIC"))?;
    let get = |regs: &[std::os::raw::c_char], off: usize| -> u32 {
        let b: [u8; 4] = std::array::from_fn(|i| regs[off + i] as u8);
        u32::from_le_bytes(b)
    };
    let set = |regs: &mut [std::os::raw::c_char], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    let set_mode = |reg: u32, mode: u32| (reg & !0x700) | (mode << 8);
    let lvt0 = get(&klapic.regs, APIC_LVT0);
    set(
        &mut klapic.regs,
        APIC_LVT0,
        set_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = get(&klapic.regs, APIC_LVT1);
    set(&mut klapic.regs, APIC_LVT1, set_mode(lvt1, APIC_MODE_NMI));
    vcpu.set_lapic(&klapic).map_err(kvm("local APIC"))
}
