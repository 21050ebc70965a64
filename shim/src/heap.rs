//! The shim's heap kept small: a shim sleeps for its container's whole life, so what it
//! allocated to set the container up should not stay resident.

/// One malloc arena for the whole process. glibc gives each thread that allocates its own
/// arena; a shim's threads (ttrpc workers, reaper, stdio, events) mostly wait, and each
/// arena keeps its high-water mark of pages.
#[allow(unsafe_code)]
pub fn single_arena() {
    // SAFETY: mallopt only changes the allocator's tuning; called before any thread starts.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Gives back to the kernel the heap that setting a process up used and freed (the parsed
/// spec, the builder's state); glibc keeps freed memory unless asked.
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim only releases free chunks; it touches no live allocation.
    unsafe { libc::malloc_trim(0) };
}
