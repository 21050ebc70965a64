//! The guest physical memory map, modelled on Firecracker's.
//!
//! ```text
//! 0x0000_0500  boot GDT            0x0000_0520  boot IDT
//! 0x0000_6000  PVH start info      0x0000_6040  PVH module list   0x0000_6100 PVH memory map
//! 0x0000_7000  zero page           0x0000_8ff0  boot stack (grows down)
//! 0x0000_9000  PML4                0x0000_a000  PDPT   0x0000_b000..0x0000_f000 PDs (4 GiB identity)
//! 0x0002_0000  kernel command line 0x0009_fc00  EBDA (reserved up to 1 MiB)
//! 0x0010_0000  kernel              ... initramfs at the top of low RAM
//! 0xd000_0000  32-bit MMIO gap (virtio-mmio devices, 4 KiB each) up to 0xfec0_0000 (IOAPIC/LAPIC)
//! 0x1_0000_0000 RAM above the gap, if the guest has more than 3.25 GiB
//! ```

/// Start of the boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of the four page directories (2 MiB pages, identity map of the low 4 GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line accepted, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Extended BIOS data area: reserved from here to 1 MiB.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the kernel is loaded (and "high memory" starts).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// First address after 4 GiB.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Each virtio-mmio device takes one 4 KiB window, from the start of the gap.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First legacy IRQ line handed to virtio-mmio devices (4 is COM1).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last legacy IRQ line usable through the IOAPIC.
pub const VIRTIO_IRQ_MAX: u32 = 23;
/// The IOAPIC's legacy line for COM1.
pub const SERIAL_IRQ: u32 = 4;
/// KVM's TSS: three pages just below the IOAPIC/LAPIC window.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// The RAM regions for a guest of `mem_size` bytes: one below the MMIO gap and, if needed, one
/// above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (FIRST_ADDR_PAST_32BITS, mem_size - MMIO_GAP_START),
        ]
    }
}

/// The end (exclusive) of RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_around_the_gap() {
        assert_eq!(ram_regions(128 << 20), vec![(0, 128 << 20)]);
        let r = ram_regions(4 << 30);
        assert_eq!(r[0], (0, MMIO_GAP_START));
        assert_eq!(r[1], (FIRST_ADDR_PAST_32BITS, (4 << 30) - MMIO_GAP_START));
    }
}
