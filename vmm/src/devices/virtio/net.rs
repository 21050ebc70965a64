//! virtio-net over a tap descriptor: the (tap fd, MAC) pair the microvm tier already hands to
//! QEMU.
//!
//! Two queues, rx (0) and tx (1); features VIRTIO_F_VERSION_1 and VIRTIO_NET_F_MAC, no offloads.
//! Every frame carries the 12-byte `virtio_net_hdr_v1`, and the tap is set to the same header
//! size ([`tap::open_checked`]), so a frame crosses unchanged apart from the header, which Strata
//! zeroes both ways (nothing is offloaded, so no flag means anything).
//!
//! - TX runs on the notifying vCPU's thread: each chain is read through virtio-queue's `Reader`
//!   (every descriptor checked against guest memory) into one buffer and written to the tap in
//!   one `write`.
//! - RX runs on the [`NetWorker`] thread, which waits on the tap and on an eventfd the rx
//!   notifications (and activation) signal. A frame read from the tap goes into the next rx chain
//!   (`Writer`). With no rx buffer, the frame is kept (one at most) and the tap is not read again
//!   until the driver adds buffers: the kernel's tap queue holds the rest and drops past it.
//!
//! Bounds: a frame, header included, is at most [`MAX_FRAME`] bytes both ways; a tx chain longer
//! than that or shorter than the header is dropped; an rx chain too small for its frame (or
//! invalid) drops the frame. Each drop is counted in [`NetStats`].

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::tap::{self, VNET_HDR_LEN};
use super::{
    read_config_bytes, DeviceError, IrqTrigger, VirtioDevice, Worker, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};
use crate::machine::VcpuEvent;

/// The virtio device ID of a network device.
pub const TYPE_NET: u32 = 1;
/// VIRTIO_NET_F_MAC: the config space holds the MAC.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// The largest frame, virtio-net header included, in either direction (a 64 KiB IP packet, an
/// Ethernet header with a VLAN tag, and the header).
pub const MAX_FRAME: usize = 65562;
/// The size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// At most this many frames move from the tap per worker wake-up.
const RX_BATCH: usize = 64;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const TOKEN_WAKE: u64 = 0;
const TOKEN_TAP: u64 = 1;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl std::str::FromStr for MacAddr {
    type Err = DeviceError;

    /// `aa:bb:cc:dd:ee:ff` (or with `-`); a unicast address, not all zeroes.
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let bad = |why: &str| DeviceError::BadMac {
            mac: s.to_string(),
            why: why.to_string(),
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in mac.iter_mut() {
            let p = parts.next().ok_or_else(|| bad("it needs six octets"))?;
            if p.len() != 2 {
                return Err(bad("each octet is two hex digits"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad("an octet is not hex"))?;
        }
        if parts.next().is_some() {
            return Err(bad("it has more than six octets"));
        }
        if mac[0] & 1 != 0 {
            return Err(bad("it is a multicast address"));
        }
        if mac == [0; 6] {
            return Err(bad("it is all zeroes"));
        }
        Ok(MacAddr(mac))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A network device for the machine: a tap descriptor open in the VMM process, and the guest's
/// MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub tap_fd: RawFd,
    pub mac: MacAddr,
}

impl NetConfig {
    /// Parses `FD,MAC` or `tap=FD,mac=MAC` (the `--net` argument).
    pub fn parse(s: &str) -> Result<Self, DeviceError> {
        let bad = |why: &str| DeviceError::NetSpec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let (fd, mac) = s
            .split_once(',')
            .ok_or_else(|| bad("expected FD,MAC or tap=FD,mac=MAC"))?;
        let fd = fd.strip_prefix("tap=").unwrap_or(fd);
        let mac = mac.strip_prefix("mac=").unwrap_or(mac);
        let tap_fd = fd
            .trim()
            .parse::<RawFd>()
            .ok()
            .filter(|&fd| fd >= 0)
            .ok_or_else(|| bad("the tap descriptor is not a non-negative number"))?;
        Ok(NetConfig {
            tap_fd,
            mac: mac.trim().parse()?,
        })
    }
}

/// What the device moved and dropped, for tests and diagnostics.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames written into rx chains.
    pub rx_frames: AtomicU64,
    /// Frames from the tap dropped: their rx chain was invalid or too small, or the frame was
    /// longer than [`MAX_FRAME`].
    pub rx_dropped: AtomicU64,
    /// Frames from the tap that had to wait for an rx buffer (at most one waits at a time).
    pub rx_waits: AtomicU64,
    /// Frames written to the tap.
    pub tx_frames: AtomicU64,
    /// tx chains dropped: invalid, shorter than the header, or longer than [`MAX_FRAME`].
    pub tx_dropped: AtomicU64,
    /// Frames the tap refused (a write error).
    pub tx_errors: AtomicU64,
}

impl NetStats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Queues {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    irq: Arc<IrqTrigger>,
}

struct State {
    queues: Option<Queues>,
    /// One frame, header included, read from the tap.
    rx_buf: Vec<u8>,
    /// `rx_buf[..n]` holds a frame waiting for an rx buffer.
    pending: Option<usize>,
    tx_buf: Vec<u8>,
}

struct Shared {
    state: Mutex<State>,
    tap: File,
    wake: EventFd,
    stats: Arc<NetStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The virtio-net device.
pub struct Net {
    shared: Arc<Shared>,
    mac: MacAddr,
}

/// The network device's rx thread.
pub struct NetWorker {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Net {
    /// The device on the tap `cfg.tap_fd`, which must be a tap opened with `IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR` (the device works on its own duplicate; see [`tap::open_checked`]).
    pub fn new(cfg: &NetConfig) -> Result<(Self, NetWorker), DeviceError> {
        let (file, _name) = tap::open_checked(cfg.tap_fd)?;
        Self::with_frame_fd(file, cfg.mac)
    }

    /// The device on any descriptor that carries one frame (header included) per read and write:
    /// a checked tap, or in tests a datagram socket. It should be non-blocking.
    pub fn with_frame_fd(fd: File, mac: MacAddr) -> Result<(Self, NetWorker), DeviceError> {
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceError::Worker {
            device: "net",
            source,
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queues: None,
                rx_buf: vec![0u8; MAX_FRAME],
                pending: None,
                tx_buf: vec![0u8; MAX_FRAME],
            }),
            tap: fd,
            wake,
            stats: Arc::new(NetStats::default()),
        });
        Ok((
            Net {
                shared: shared.clone(),
                mac,
            },
            NetWorker {
                shared,
                stop: Arc::new(AtomicBool::new(false)),
                thread: None,
            },
        ))
    }

    /// The device's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.shared.stats.clone()
    }
}

/// Writes every queued tx chain to the tap.
fn process_tx(shared: &Shared, st: &mut State) {
    let State {
        queues: Some(q),
        tx_buf,
        ..
    } = st
    else {
        return;
    };
    let stats = &shared.stats;
    let mut used = false;
    // At most one pass over the ring per notification.
    for _ in 0..q.tx.size() {
        let Some(chain) = q.tx.pop_descriptor_chain(&q.mem) else {
            break;
        };
        let head = chain.head_index();
        match chain.reader(&q.mem) {
            Ok(mut r) if (VNET_HDR_LEN..=MAX_FRAME).contains(&r.available_bytes()) => {
                let n = r.available_bytes();
                if r.read_exact(&mut tx_buf[..n]).is_ok() {
                    // No offload was negotiated: whatever the driver put in the header means
                    // nothing, and the tap must not act on it.
                    tx_buf[..VNET_HDR_LEN].fill(0);
                    // A tap takes a frame whole or not at all.
                    match (&shared.tap).write(&tx_buf[..n]) {
                        Ok(w) if w == n => NetStats::inc(&stats.tx_frames),
                        _ => NetStats::inc(&stats.tx_errors),
                    }
                } else {
                    NetStats::inc(&stats.tx_dropped);
                }
            }
            _ => NetStats::inc(&stats.tx_dropped),
        }
        if q.tx.add_used(&q.mem, head, 0).is_err() {
            break;
        }
        used = true;
    }
    if used && q.tx.needs_notification(&q.mem).unwrap_or(true) {
        q.irq.trigger(VIRTIO_MMIO_INT_VRING);
    }
}

/// Moves frames from the tap into rx chains. Returns whether the tap should be read again (false
/// while a frame waits for a buffer, or before activation).
fn process_rx(shared: &Shared) -> bool {
    let mut guard = shared.lock();
    let st = &mut *guard;
    let Some(q) = st.queues.as_mut() else {
        return false;
    };
    let stats = &shared.stats;
    let mut used = false;
    let mut want_tap = true;
    for _ in 0..RX_BATCH {
        let was_pending = st.pending.is_some();
        let len = match st.pending.take() {
            Some(n) => n,
            None => match (&shared.tap).read(&mut st.rx_buf) {
                Ok(n) if n > VNET_HDR_LEN && n <= MAX_FRAME => n,
                // Longer than the buffer (the tap reports the whole length): cut, so dropped.
                Ok(n) if n > MAX_FRAME => {
                    NetStats::inc(&stats.rx_dropped);
                    continue;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Anything else: wait for the next readiness.
                Err(_) => break,
            },
        };
        let Some(chain) = q.rx.pop_descriptor_chain(&q.mem) else {
            st.pending = Some(len);
            if !was_pending {
                NetStats::inc(&stats.rx_waits);
            }
            want_tap = false;
            break;
        };
        let head = chain.head_index();
        let frame = &mut st.rx_buf[..len];
        // Flags and GSO fields zero (nothing offloaded), num_buffers 1.
        frame[..VNET_HDR_LEN].fill(0);
        frame[10] = 1;
        let written = match chain.writer(&q.mem) {
            Ok(mut w) if w.available_bytes() >= len => w.write_all(frame).is_ok(),
            _ => false,
        };
        let n = if written {
            NetStats::inc(&stats.rx_frames);
            len as u32
        } else {
            NetStats::inc(&stats.rx_dropped);
            0
        };
        if q.rx.add_used(&q.mem, head, n).is_err() {
            break;
        }
        used = true;
    }
    if used && q.rx.needs_notification(&q.mem).unwrap_or(true) {
        q.irq.trigger(VIRTIO_MMIO_INT_VRING);
    }
    want_tap
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio_net_config: mac[6], then fields of features not offered (read as zero).
        read_config_bytes(&self.mac.0, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), DeviceError> {
        let got = queues.len();
        let mut it = queues.into_iter();
        let (Some(rx), Some(tx), None) = (it.next(), it.next(), it.next()) else {
            return Err(DeviceError::QueueCount { got, want: 2 });
        };
        let mut st = self.shared.lock();
        st.queues = Some(Queues { mem, rx, tx, irq });
        st.pending = None;
        drop(st);
        let _ = self.shared.wake.write(1);
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        match index {
            RX_QUEUE => {
                let _ = self.shared.wake.write(1);
            }
            TX_QUEUE => {
                let mut st = self.shared.lock();
                process_tx(&self.shared, &mut st);
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        let mut st = self.shared.lock();
        st.queues = None;
        st.pending = None;
    }
}

fn worker_loop(shared: Arc<Shared>, epoll: Epoll, stop: Arc<AtomicBool>) {
    let tap_fd = shared.tap.as_raw_fd();
    let mut tap_armed = true;
    let mut events = [EpollEvent::default(); 4];
    while !stop.load(Ordering::Acquire) {
        let n = epoll.wait(100, &mut events).unwrap_or(0);
        for ev in &events[..n] {
            if ev.data() == TOKEN_WAKE {
                let _ = shared.wake.read();
            }
        }
        let want = process_rx(&shared);
        if want != tap_armed {
            let set = if want {
                EventSet::IN
            } else {
                EventSet::empty()
            };
            if epoll
                .ctl(
                    ControlOperation::Modify,
                    tap_fd,
                    EpollEvent::new(set, TOKEN_TAP),
                )
                .is_ok()
            {
                tap_armed = want;
            }
        }
    }
}

impl Worker for NetWorker {
    fn start(&mut self, events: Sender<VcpuEvent>, seccomp: bool) -> Result<(), crate::Error> {
        if self.thread.is_some() {
            return Ok(());
        }
        let err = |source| DeviceError::Worker {
            device: "net",
            source,
        };
        // Made here, so the thread's filter needs no epoll_create.
        let epoll = Epoll::new().map_err(err)?;
        epoll
            .ctl(
                ControlOperation::Add,
                self.shared.wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_WAKE),
            )
            .map_err(err)?;
        epoll
            .ctl(
                ControlOperation::Add,
                self.shared.tap.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_TAP),
            )
            .map_err(err)?;
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let t = super::spawn_worker(
            "strata-net",
            "net",
            crate::seccomp::ThreadRole::NetWorker,
            events,
            seccomp,
            move || worker_loop(shared, epoll, stop),
        )?;
        self.thread = Some(t);
        Ok(())
    }

    fn stop(&mut self) {
        super::stop_worker(&self.stop, &self.shared.wake, &mut self.thread);
    }
}

impl Drop for NetWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_specs() {
        let want = NetConfig {
            tap_fd: 7,
            mac: MacAddr([0x02, 0, 0, 0, 0, 0x0a]),
        };
        assert_eq!(NetConfig::parse("7,02:00:00:00:00:0a").unwrap(), want);
        assert_eq!(
            NetConfig::parse("tap=7,mac=02-00-00-00-00-0A").unwrap(),
            want
        );
        for bad in [
            "7",
            "x,02:00:00:00:00:0a",
            "-1,02:00:00:00:00:0a",
            "7,02:00:00:00:00",
            "7,02:00:00:00:00:0a:0b",
            "7,0g:00:00:00:00:0a",
            "7,01:00:00:00:00:0a",
            "7,00:00:00:00:00:00",
            "7,2:0:0:0:0:a",
        ] {
            assert!(NetConfig::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(want.mac.to_string(), "02:00:00:00:00:0a");
    }
}
