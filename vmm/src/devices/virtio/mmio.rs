//! The virtio-mmio transport (version 2): the register window the driver programs, the queue
//! set-up, the status state machine, and the notify path into the device.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{IrqTrigger, VirtioDevice};
use crate::devices::bus::BusDevice;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5354_5241; // "STRA"

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_DEVICE_NEEDS_RESET: u32 = 0x40;
const STATUS_FAILED: u32 = 0x80;

/// One device's MMIO window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    irq: Arc<IrqTrigger>,
    features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    queues: Vec<Queue>,
    status: u32,
    activated: bool,
    config_generation: u32,
    activation_failure_logged: bool,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, irq_evt: EventFd) -> Self {
        let queues = Self::fresh_queues(device.as_ref());
        MmioTransport {
            device,
            mem,
            irq: Arc::new(IrqTrigger::new(irq_evt)),
            features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            queues,
            status: 0,
            activated: false,
            config_generation: 0,
            activation_failure_logged: false,
        }
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device
            .queue_max_sizes()
            .iter()
            // A maximum size that virtio-queue rejects (not a power of two) is a bug in the
            // device table, caught by the devices' own tests; fall back to 256.
            .map(|&max| Queue::new(max).unwrap_or_else(|_| Queue::new(256).expect("256 is valid")))
            .collect()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.features_select = 0;
        self.driver_features_select = 0;
        self.queue_select = 0;
        self.irq.ack(u32::MAX);
        self.queues = Self::fresh_queues(self.device.as_ref());
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            // FEATURES_OK is refused for a driver that did not take VIRTIO_F_VERSION_1 or asked
            // for features the device never offered.
            let offered = self.device.features();
            if self.driver_features & super::VIRTIO_F_VERSION_1 == 0
                || self.driver_features & !offered != 0
            {
                self.status = value & !STATUS_FEATURES_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
        }
        self.status = value;
        let want = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        if !self.activated && value & want == want && value & STATUS_FAILED == 0 {
            let mem = &self.mem;
            let all_valid = self.queues.iter().all(|q| !q.ready() || q.is_valid(mem));
            if !all_valid {
                self.status |= STATUS_DEVICE_NEEDS_RESET;
                return;
            }
            let Some(queues) = self.queues.iter().map(copy_queue).collect() else {
                self.status |= STATUS_DEVICE_NEEDS_RESET;
                return;
            };
            match self
                .device
                .activate(self.mem.clone(), queues, self.irq.clone())
            {
                Ok(()) => self.activated = true,
                Err(e) => {
                    // The guest can trigger this at will: logged once per device.
                    if !self.activation_failure_logged {
                        self.activation_failure_logged = true;
                        tracing::warn!(
                            device = self.device.device_type(),
                            error = %e,
                            "virtio device activation failed"
                        );
                    }
                    self.status |= STATUS_DEVICE_NEEDS_RESET;
                }
            }
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_select as usize);
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => match self.features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            0x034 => q.map(|q| u32::from(q.max_size())).unwrap_or(0),
            0x044 => q.map(|q| u32::from(q.ready())).unwrap_or(0),
            0x060 => self.irq.status(),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        // Queue layout may change only before the driver is done.
        let setup = !self.activated && self.status & STATUS_DRIVER_OK == 0;
        match offset {
            0x014 => self.features_select = v,
            0x020 => match self.driver_features_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            0x024 => self.driver_features_select = v,
            0x030 => self.queue_select = v,
            0x038 if setup => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            0x044 if setup => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            0x050 if self.activated && (v as usize) < self.queues.len() => {
                self.device.queue_notify(v as u16);
            }
            0x064 => self.irq.ack(v),
            0x070 => self.set_status(v),
            0x080 if setup => self.with_q(|q| q.set_desc_table_address(Some(v), None)),
            0x084 if setup => self.with_q(|q| q.set_desc_table_address(None, Some(v))),
            0x090 if setup => self.with_q(|q| q.set_avail_ring_address(Some(v), None)),
            0x094 if setup => self.with_q(|q| q.set_avail_ring_address(None, Some(v))),
            0x0a0 if setup => self.with_q(|q| q.set_used_ring_address(Some(v), None)),
            0x0a4 if setup => self.with_q(|q| q.set_used_ring_address(None, Some(v))),
            _ => {}
        }
    }

    fn with_q(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected() {
            f(q)
        }
    }
}

/// A copy of a queue's driver-programmed state for the device (virtio-queue's `Queue` is not
/// `Clone`; its state round-trips through `QueueState`).
fn copy_queue(q: &Queue) -> Option<Queue> {
    Queue::try_from(q.state()).ok()
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset < 0x100 && data.len() == 4 && offset.is_multiple_of(4) {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.write_reg(offset, v);
        }
        // Config-space writes: no Strata device has a writable field.
    }
}
