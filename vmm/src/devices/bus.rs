//! An address bus (port I/O or MMIO): ranges mapped to devices. An access that no device claims
//! reads as all ones (port I/O) or zeroes (MMIO) and writes are dropped, as on a PC.

use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the device's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Error inserting a device.
#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps another device or is empty")]
pub struct BusOverlap {
    pub base: u64,
    pub len: u64,
}

struct Entry {
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping device ranges.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `dev` at `base..base+len`.
    pub fn insert(
        &mut self,
        dev: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusOverlap> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusOverlap { base, len });
        };
        if self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end)
        {
            return Err(BusOverlap { base, len });
        }
        self.entries.push(Entry { base, len, dev });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Entry, u64)> {
        let idx = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        (addr - e.base < e.len).then_some((e, addr - e.base))
    }

    /// Reads from the device at `addr`; false if there is none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((e, off)) => {
                e.dev
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(off, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false if there is none.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((e, off)) => {
                e.dev
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem([u8; 8]);
    impl BusDevice for Mem {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = self.0[offset as usize];
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0[offset as usize] = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let mut bus = Bus::new();
        let d: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Mem([0; 8])));
        bus.insert(d.clone(), 0x10, 8).unwrap();
        assert!(bus.insert(d.clone(), 0x17, 2).is_err());
        assert!(bus.insert(d.clone(), 0x8, 9).is_err());
        assert!(bus.insert(d.clone(), 0x0, 0).is_err());
        bus.insert(d, 0x18, 8).unwrap();
        assert!(bus.write(0x13, &[7]));
        let mut b = [0];
        assert!(bus.read(0x13, &mut b));
        assert_eq!(b[0], 7);
        assert!(!bus.read(0x20, &mut b));
        assert!(!bus.read(0xf, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
    }
}
