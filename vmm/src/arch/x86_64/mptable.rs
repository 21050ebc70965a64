//! The Intel MultiProcessor table (MP spec 1.4), as Firecracker writes it: how a guest without
//! ACPI learns its CPUs, the IOAPIC and how the 24 legacy IRQ lines reach it. Written at the
//! start of the EBDA (0x9fc00), where Linux's `smp_scan_config` looks.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the MP floating pointer goes (the EBDA, reserved in e820).
pub const MPTABLE_START: u64 = 0x9fc00;
/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' MMIO base.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IOAPIC input pins.
pub const IOAPIC_PINS: u8 = 24;

const APIC_VERSION: u8 = 0x14;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MP_IRQ_SRC_INT: u8 = 0;
const MP_IRQ_SRC_NMI: u8 = 1;
const MP_IRQ_SRC_EXTINT: u8 = 3;
const MPC_APIC_USABLE: u8 = 1;

/// Errors writing the table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("{0} vCPUs do not fit the MP table (at most 254)")]
    TooManyCpus(u8),
    #[error("writing the MP table into guest memory")]
    GuestMemory,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The table's bytes (floating pointer + configuration table) for `cpus` vCPUs, laid out for
/// `MPTABLE_START`.
pub fn build(cpus: u8) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > 254 {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus + 1;
    let table_addr = MPTABLE_START as u32 + 16;

    // Entries after the 44-byte header.
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.push(0u8); // processor
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 });
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, APIC_VERSION, MPC_APIC_USABLE]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        // Every ISA IRQ, the timer's included, goes to the IOAPIC pin of the same number. (An
        // ExtINT entry on pin 0 makes Linux's check_timer() take the 8259 through-path, which
        // oopses on KVM's IOAPIC.)
        entries.extend_from_slice(&[3, MP_IRQ_SRC_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0: ExtINT on the boot CPU; LINT1: NMI on every local APIC.
    entries.extend_from_slice(&[4, MP_IRQ_SRC_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, MP_IRQ_SRC_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"STRATA  ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // oem table
    table.extend_from_slice(&0u16.to_le_bytes()); // oem size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended length + checksum + reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut mpf = Vec::with_capacity(16);
    mpf.extend_from_slice(b"_MP_");
    mpf.extend_from_slice(&table_addr.to_le_bytes());
    mpf.push(1); // length in 16-byte units
    mpf.push(4); // spec 1.4
    mpf.push(0); // checksum, below
    mpf.extend_from_slice(&[0u8; 5]); // feature bytes: the table is present
    mpf[10] = checksum(&mpf);

    mpf.extend_from_slice(&table);
    Ok(mpf)
}

/// Writes the table for `cpus` vCPUs into guest memory.
pub fn setup(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| MptableError::GuestMemory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        for cpus in [1u8, 2, 4, 254] {
            let b = build(cpus).unwrap();
            assert_eq!(&b[..4], b"_MP_");
            assert_eq!(b[..16].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
            let ptr = u32::from_le_bytes(b[4..8].try_into().unwrap());
            assert_eq!(ptr, MPTABLE_START as u32 + 16);
            let t = &b[16..];
            assert_eq!(&t[..4], b"PCMP");
            let len = u16::from_le_bytes([t[4], t[5]]) as usize;
            assert_eq!(len, t.len());
            assert_eq!(t.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
            let n = u16::from_le_bytes([t[34], t[35]]) as usize;
            assert_eq!(n, cpus as usize + 2 + 24 + 2);
            // The whole table stays inside the EBDA's reserved kilobyte for a small machine.
            if cpus <= 4 {
                assert!(b.len() <= 1024);
            }
        }
        assert!(build(0).is_err());
        assert!(build(255).is_err());
    }
}
