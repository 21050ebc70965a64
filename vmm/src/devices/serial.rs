//! The 8250 UART on COM1 (vm-superio), its output into the [`Console`](crate::console::Console)
//! and its interrupt on an irqfd.

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::bus::BusDevice;
use super::EventFdTrigger;
use crate::console::ConsoleWriter;

/// COM1's port base.
pub const COM1_BASE: u64 = 0x3f8;
/// The UART's register window.
pub const COM1_LEN: u64 = 8;

/// COM1.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, ConsoleWriter>,
}

impl SerialDevice {
    pub fn new(irq: EventFdTrigger, out: ConsoleWriter) -> Self {
        SerialDevice {
            serial: Serial::new(irq, out),
        }
    }

    /// Queues bytes for the guest to read (the console's input side).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.serial.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && offset < COM1_LEN {
            data[0] = self.serial.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && offset < COM1_LEN {
            // An output error is the console's, not the guest's: dropped.
            let _ = self.serial.write(offset as u8, data[0]);
        }
    }
}
