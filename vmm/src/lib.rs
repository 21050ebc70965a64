//! Strata's microVM machine: a Firecracker-style VMM on KVM, built from rust-vmm crates
//! (kvm-ioctls, vm-memory, linux-loader, vm-superio, virtio-queue).
//!
//! It boots a Linux kernel (ELF vmlinux through its PVH entry, or a bzImage through the 64-bit
//! boot protocol) with an initramfs, a serial console, an i8042 for the reset request, and
//! virtio-mmio block, vsock and net (over a tap) devices. The layout follows Firecracker:
//! `vstate/` holds the KVM state (memory, VM, vCPUs), `arch/x86_64/` the boot-time CPU and memory
//! set-up, `devices/` the machine's parts.
//!
//! The guest is untrusted. Nothing it writes into its memory or its device registers may crash,
//! hang or exhaust the host side: every descriptor is bounds-checked through vm-memory, every
//! queue is bounded, every host-side buffer has a cap.
//!
//! `unsafe` is confined to [`vstate::memory`] (the KVM memory-slot ioctl) and
//! [`devices::virtio::tap`] (the tap ioctls), each block with a `// SAFETY:` comment; everything
//! else is checked by `#![deny(unsafe_code)]`. The seccomp filters ([`seccomp`]) are built
//! through libseccomp's safe API.
#![deny(unsafe_code)]

pub mod arch;
pub mod cli;
pub mod console;
pub mod devices;
pub mod error;
pub mod machine;
pub mod rootfs;
pub mod seccomp;
pub mod vstate;

pub use error::Error;
pub use machine::{Exit, Machine, MachineConfig};
