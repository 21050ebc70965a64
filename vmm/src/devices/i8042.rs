//! The i8042 keyboard controller, only as far as a guest needs it to ask for a reset
//! (command 0xfe on port 0x64), which Strata treats as a clean shutdown.

use std::sync::mpsc::Sender;

use vm_superio::I8042Device;

use super::bus::BusDevice;
use crate::machine::VcpuEvent;

/// The controller's data port; the command port is at +4.
pub const I8042_BASE: u64 = 0x60;
/// The ports 0x60..=0x64.
pub const I8042_LEN: u64 = 5;

/// Sends [`VcpuEvent::Reset`] when the guest asks for a reset.
pub struct ResetTrigger(pub Sender<VcpuEvent>);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0
            .send(VcpuEvent::Reset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// The i8042.
pub struct I8042 {
    dev: I8042Device<ResetTrigger>,
}

impl I8042 {
    pub fn new(reset: ResetTrigger) -> Self {
        I8042 {
            dev: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && (offset == 0 || offset == 4) {
            data[0] = self.dev.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && (offset == 0 || offset == 4) {
            let _ = self.dev.write(offset as u8, data[0]);
        }
    }
}
