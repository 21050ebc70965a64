//! Guest memory: mappings laid out by [`crate::arch::x86_64::layout`], registered with KVM as
//! memory slots. Anonymous by default; backed by one memfd ([`create_shared`]) when a vhost-user
//! back end (virtiofsd) must map it too. The `unsafe` here is `KVM_SET_USER_MEMORY_REGION` and
//! `memfd_create`.
#![allow(unsafe_code)]

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use std::os::fd::FromRawFd;

use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

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

/// Maps `mem_size` bytes of guest RAM backed by one memfd (the regions at consecutive offsets),
/// which a vhost-user back end can map from the descriptor each region carries.
pub fn create_shared(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let err = |reason: String| MemoryError::Map {
        mib: mem_size >> 20,
        reason,
    };
    let name = c"strata-guest-ram";
    // SAFETY: `name` is a NUL-terminated string that outlives the call; the flags are valid.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let file = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    file.set_len(mem_size)
        .map_err(|e| err(format!("sizing the memfd: {e}")))?;
    let file = std::sync::Arc::new(file);
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    for (start, size) in layout::ram_regions(mem_size) {
        ranges.push((
            GuestAddress(start),
            size as usize,
            Some(FileOffset::from_arc(file.clone(), offset)),
        ));
        offset += size;
    }
    GuestMemoryMmap::from_ranges_with_files(&ranges).map_err(|e| err(e.to_string()))
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
