//! The machine's devices: the port-I/O and MMIO buses, the legacy devices (8250 serial on COM1,
//! the i8042 for a reset request) and the virtio-mmio devices.

pub mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;

use vmm_sys_util::eventfd::EventFd;

/// A `vm_superio::Trigger` that signals an `EventFd` (an irqfd, so the in-kernel IOAPIC raises the
/// line).
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
