//! Virtio devices over the MMIO transport (virtio 1.x, "modern" only).
//!
//! A device sees its queues only after the driver set DRIVER_OK; the transport checks every
//! queue against guest memory first (virtio-queue's `is_valid`). Queue notifications are handled
//! on the notifying vCPU's thread; devices that also move data from the host side (vsock, net)
//! or talk to a back end in another process (fs, vhost-user) run a [`Worker`] thread.

pub mod block;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod tap;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::machine::VcpuEvent;

/// VIRTIO_F_VERSION_1.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Interrupt status bit: a used ring was updated.
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x01;
/// Interrupt status bit: the configuration changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x02;

/// Errors opening or running a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("opening the disk image {path}")]
    OpenDisk {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the disk image {path} is {size} bytes, not a whole number of 512-byte sectors")]
    DiskSize { path: String, size: u64 },
    #[error("binding the vsock socket {path}")]
    VsockSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the {device} worker")]
    Worker {
        device: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid MAC address {mac:?}: {why}")]
    BadMac { mac: String, why: String },
    #[error("invalid network device {spec:?}: {why}")]
    NetSpec { spec: String, why: String },
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    #[error("invalid file system device {spec:?}: {why}")]
    FsSpec { spec: String, why: String },
    #[error("the vhost-user back end at {socket}: {reason}")]
    VhostUser { socket: String, reason: String },
    #[error("the driver activated the device with {got} queues; it has {want}")]
    QueueCount { got: usize, want: usize },
}

/// The interrupt of one virtio-mmio device: the status register and the irqfd behind it.
pub struct IrqTrigger {
    status: AtomicU32,
    evt: EventFd,
}

impl IrqTrigger {
    pub fn new(evt: EventFd) -> Self {
        IrqTrigger {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// Sets `bit` in the interrupt status and raises the line.
    pub fn trigger(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        // An irqfd write fails only if the counter would overflow, which a pending interrupt
        // already covers.
        let _ = self.evt.write(1);
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// One virtio device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 net, 2 block, 19 vsock).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; the number of queues is its length.
    fn queue_max_sizes(&self) -> &[u16];
    /// The features offered, VIRTIO_F_VERSION_1 included.
    fn features(&self) -> u64;
    /// The driver's accepted features.
    fn ack_features(&mut self, _features: u64) {}
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver's queues are ready: the device may use them from now on.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: std::sync::Arc<IrqTrigger>,
    ) -> Result<(), DeviceError>;
    /// The driver notified queue `index`.
    fn queue_notify(&mut self, index: u16);
    /// The driver reset the device: forget the queues.
    fn reset(&mut self);
}

/// A device's host-side thread.
pub trait Worker: Send {
    /// Starts the thread; with `seccomp` it loads its filter first.
    fn start(&mut self, events: Sender<VcpuEvent>, seccomp: bool) -> Result<(), crate::Error>;
    fn stop(&mut self);
}

/// Starts a device's worker thread `name`: under `role`'s seccomp filter when `seccomp` (a
/// filter that cannot be loaded fails the machine through `events`, and `body` never runs).
pub fn spawn_worker(
    name: &str,
    device: &'static str,
    role: crate::seccomp::ThreadRole,
    events: Sender<VcpuEvent>,
    seccomp: bool,
    body: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, DeviceError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if seccomp {
                if let Err(e) = crate::seccomp::apply(role) {
                    let _ = events.send(VcpuEvent::Failed {
                        cpu: 0,
                        reason: e.to_string(),
                    });
                    return;
                }
            }
            body()
        })
        .map_err(|source| DeviceError::Worker { device, source })
}

/// Ends a worker that [`spawn_worker`] started: raises `stop`, wakes its loop through `wake`,
/// and waits for the thread.
pub fn stop_worker(
    stop: &std::sync::atomic::AtomicBool,
    wake: &EventFd,
    thread: &mut Option<std::thread::JoinHandle<()>>,
) {
    stop.store(true, Ordering::Release);
    let _ = wake.write(1);
    if let Some(t) = thread.take() {
        let _ = t.join();
    }
}

/// Copies `bytes` of a little-endian config structure into `data` from `offset`, reading zeroes
/// past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}
