//! Seccomp filters for the VMM's threads.
