//! Guest memory: anonymous mappings laid out by [`crate::arch::x86_64::layout`], registered with
//! KVM as memory slots. The one `unsafe` here is `KVM_SET_USER_MEMORY_REGION`.
#![allow(unsafe_code)]

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout;

/// Errors creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("mapping {mib} MiB of guest memory: {reason}")]
    Map { mib: u64, reason: String },
    #[error("registering guest memory with KVM")]
    Register(#[source] kvm_ioctls::Error),
}

/// Maps `mem_size` bytes of guest RAM.
pub fn create(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_regions(mem_size)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map {
        mib: mem_size >> 20,
        reason: e.to_string(),
    })
}

/// Registers every region of `mem` with the VM, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let host_addr =
            mem.get_host_address(region.start_addr())
                .map_err(|e| MemoryError::Map {
                    mib: region.len() >> 20,
                    reason: e.to_string(),
                })?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host_addr as u64,
        };
        // SAFETY: `host_addr..host_addr + len` is a live anonymous mapping owned by `mem`'s region,
        // which the machine keeps alive (it holds `mem`) for as long as the VM fd exists; the slot
        // numbers are distinct and the guest ranges come from `layout`, which never overlaps them.
        unsafe { vm.set_user_memory_region(desc) }.map_err(MemoryError::Register)?;
    }
    Ok(())
}
