//! virtio-vsock with a host Unix socket, in Firecracker's "hybrid vsock" style.
//!
//! - Host-initiated: a host process connects to the Unix socket and sends `CONNECT <port>\n`;
//!   Strata asks the guest for a connection to `<port>` and, once the guest accepts, answers
//!   `OK <host port>\n`. From then on the Unix stream carries the connection's bytes.
//! - Guest-initiated: a guest connection to host CID 2, port `P` is forwarded to the Unix socket
//!   `<socket>_<P>`; no listener there means the guest gets a reset.
//!
//! The guest is untrusted: packets are parsed from its buffers through virtio-queue's
//! `Reader`/`Writer`; payloads over [`MAX_PKT_PAYLOAD`] are refused; a guest that sends more than
//! the credit Strata advertised ([`CONN_BUF_ALLOC`]) has that connection reset; the number of
//! connections and of queued control packets is capped.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, DeviceError, IrqTrigger, VirtioDevice, Worker, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};
use crate::machine::VcpuEvent;

/// The virtio device ID of a vsock device.
pub const TYPE_VSOCK: u32 = 19;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// The largest payload accepted in one packet.
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// The receive buffer Strata advertises per connection (and holds at most).
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// At most this many connections at once.
pub const MAX_CONNS: usize = 1024;
/// At most this many control packets waiting for guest RX buffers.
pub const MAX_PENDING_CTRL: usize = 4096;

const QUEUE_SIZE: u16 = 256;
const HDR_LEN: usize = 44;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_RCV: u32 = 1;
const SHUTDOWN_SEND: u32 = 2;
const FIRST_HOST_PORT: u32 = 1 << 30;
const MAX_CONNECT_LINE: usize = 32;

/// The vsock device's configuration.
#[derive(Clone, Debug)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// The host Unix socket.
    pub uds_path: PathBuf,
}

/// A vsock packet header (virtio_vsock_hdr, little endian, 44 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl PacketHeader {
    /// Parses the wire form.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or([0; 2]));
        PacketHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    /// Host-initiated; REQUEST sent, waiting for the guest's RESPONSE.
    AwaitingResponse,
    Established,
}

struct Conn {
    stream: UnixStream,
    state: ConnState,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    rx_cnt: u32,
    /// Bytes taken from the guest and passed to the host stream.
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: u32,
    /// Guest bytes not yet written to the host stream.
    to_host: VecDeque<u8>,
    host_eof: bool,
    /// The guest will send nothing more: shut the host stream's write side once drained.
    guest_done_sending: bool,
    /// Interest currently registered in the worker's epoll.
    registered: Option<EventSet>,
}

impl Conn {
    fn new(stream: UnixStream, state: ConnState) -> Self {
        Conn {
            stream,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            to_host: VecDeque::new(),
            host_eof: false,
            guest_done_sending: false,
            registered: None,
        }
    }

    /// How many more bytes the guest can take on this connection.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.rx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn flush_to_host(&mut self) -> std::io::Result<()> {
        while !self.to_host.is_empty() {
            let (a, _) = self.to_host.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.guest_done_sending {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// (host port, guest port)
type ConnKey = (u32, u32);

struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
}

struct Queues {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    irq: Arc<IrqTrigger>,
}

/// The connection table and the queues, shared by the vCPU threads (TX notifications) and the
/// worker (host-side readiness).
struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    queues: Option<Queues>,
    conns: HashMap<ConnKey, Conn>,
    ctrl: VecDeque<PacketHeader>,
    pending: Vec<Pending>,
    next_host_port: u32,
    /// The guest had no RX buffer the last time one was wanted.
    rx_starved: bool,
}

impl Muxer {
    fn hdr(&self, key: ConnKey, op: u16, c: Option<&Conn>) -> PacketHeader {
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: c.map(|c| c.fwd_cnt).unwrap_or(0),
        }
    }

    fn push_ctrl(&mut self, h: PacketHeader) {
        if self.ctrl.len() < MAX_PENDING_CTRL {
            self.ctrl.push_back(h);
        }
    }

    fn reset(&mut self, key: ConnKey) {
        self.conns.remove(&key);
        let h = self.hdr(key, OP_RST, None);
        self.push_ctrl(h);
    }

    fn alloc_host_port(&mut self) -> u32 {
        loop {
            let p = self.next_host_port;
            self.next_host_port = self
                .next_host_port
                .checked_add(1)
                .unwrap_or(FIRST_HOST_PORT);
            if !self.conns.keys().any(|k| k.0 == p) {
                return p;
            }
        }
    }

    /// Handles every TX packet the guest queued. Returns true if the TX queue was used.
    fn process_tx(&mut self) -> bool {
        let Some(mut q) = self.queues.take() else {
            return false;
        };
        let mut used = false;
        for _ in 0..q.tx.size() {
            let Some(chain) = q.tx.pop_descriptor_chain(&q.mem) else {
                break;
            };
            let head = chain.head_index();
            if let Ok(mut r) = chain.reader(&q.mem) {
                let mut hb = [0u8; HDR_LEN];
                if r.read_exact(&mut hb).is_ok() {
                    let h = PacketHeader::from_bytes(&hb);
                    let len = h.len as usize;
                    if len <= MAX_PKT_PAYLOAD && len <= r.available_bytes() {
                        let mut data = vec![0u8; len];
                        if r.read_exact(&mut data).is_ok() {
                            self.handle_guest_packet(h, &data);
                        }
                    } else if h.op == OP_RW {
                        self.reset((h.dst_port, h.src_port));
                    }
                }
            }
            if q.tx.add_used(&q.mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        if used {
            q.irq.trigger(VIRTIO_MMIO_INT_VRING);
        }
        self.queues = Some(q);
        used
    }

    fn handle_guest_packet(&mut self, h: PacketHeader, data: &[u8]) {
        let key = (h.dst_port, h.src_port);
        if h.dst_cid != HOST_CID || h.src_cid != self.guest_cid || h.type_ != TYPE_STREAM {
            if h.op != OP_RST {
                self.reset(key);
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match h.op {
            OP_REQUEST => self.guest_connect(key),
            OP_RESPONSE => {
                let ok = match self.conns.get_mut(&key) {
                    Some(c) if c.state == ConnState::AwaitingResponse => {
                        c.state = ConnState::Established;
                        c.to_host.extend(format!("OK {}\n", key.0).as_bytes());
                        c.flush_to_host().is_ok()
                    }
                    _ => false,
                };
                if !ok {
                    self.reset(key);
                }
            }
            OP_RW => {
                let ok = match self.conns.get_mut(&key) {
                    Some(c) if c.state == ConnState::Established => {
                        if c.to_host.len() + data.len() > CONN_BUF_ALLOC as usize {
                            false
                        } else {
                            c.to_host.extend(data);
                            c.flush_to_host().is_ok()
                        }
                    }
                    _ => false,
                };
                if !ok {
                    self.reset(key);
                } else {
                    self.maybe_credit_update(key);
                }
            }
            OP_SHUTDOWN => {
                if h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == (SHUTDOWN_RCV | SHUTDOWN_SEND) {
                    self.reset(key);
                } else if let Some(c) = self.conns.get_mut(&key) {
                    if h.flags & SHUTDOWN_SEND != 0 {
                        c.guest_done_sending = true;
                        let _ = c.flush_to_host();
                    }
                }
            }
            OP_RST => {
                self.conns.remove(&key);
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                if let Some(c) = self.conns.get(&key) {
                    let h = self.hdr(key, OP_CREDIT_UPDATE, Some(c));
                    self.push_ctrl(h);
                }
            }
            _ => self.reset(key),
        }
    }

    fn maybe_credit_update(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.fwd_cnt.wrapping_sub(c.fwd_cnt_sent) >= CONN_BUF_ALLOC / 4 {
            c.fwd_cnt_sent = c.fwd_cnt;
            let h = PacketHeader {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.0,
                dst_port: key.1,
                type_: TYPE_STREAM,
                op: OP_CREDIT_UPDATE,
                buf_alloc: CONN_BUF_ALLOC,
                fwd_cnt: c.fwd_cnt,
                ..Default::default()
            };
            self.push_ctrl(h);
        }
    }

    fn guest_connect(&mut self, key: ConnKey) {
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNS {
            self.reset(key);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.0));
        match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
            Ok(stream) => {
                let c = Conn::new(stream, ConnState::Established);
                let h = self.hdr(key, OP_RESPONSE, Some(&c));
                self.conns.insert(key, c);
                self.push_ctrl(h);
            }
            Err(_) => self.reset(key),
        }
    }

    /// A host process finished its `CONNECT <port>\n` line.
    fn host_connect(&mut self, stream: UnixStream, line: &[u8]) {
        let port = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.trim_end().strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(port) = port else {
            return; // dropping the stream closes it
        };
        if self.conns.len() >= MAX_CONNS {
            return;
        }
        let key = (self.alloc_host_port(), port);
        let c = Conn::new(stream, ConnState::AwaitingResponse);
        let h = self.hdr(key, OP_REQUEST, Some(&c));
        self.conns.insert(key, c);
        self.push_ctrl(h);
    }

    /// Moves control packets and host data into the guest's RX buffers.
    fn process_rx(&mut self) {
        let Some(mut q) = self.queues.take() else {
            return;
        };
        let mut used = false;
        // Control packets first.
        while let Some(h) = self.ctrl.front().copied() {
            let Some(chain) = q.rx.pop_descriptor_chain(&q.mem) else {
                self.rx_starved = true;
                break;
            };
            let head = chain.head_index();
            let n = match chain.writer(&q.mem) {
                Ok(mut w) if w.available_bytes() >= HDR_LEN => {
                    w.write_all(&h.to_bytes()).map(|_| HDR_LEN).unwrap_or(0)
                }
                _ => 0,
            };
            self.ctrl.pop_front();
            if q.rx.add_used(&q.mem, head, n as u32).is_err() {
                break;
            }
            used = true;
        }
        // Then data, connection by connection, within each one's credit.
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        let mut buf = vec![0u8; MAX_PKT_PAYLOAD];
        'conns: for key in keys {
            loop {
                let Some(c) = self.conns.get_mut(&key) else {
                    continue 'conns;
                };
                if c.state != ConnState::Established || c.host_eof || c.peer_credit() == 0 {
                    continue 'conns;
                }
                let Some(chain) = q.rx.pop_descriptor_chain(&q.mem) else {
                    self.rx_starved = true;
                    break 'conns;
                };
                let head = chain.head_index();
                let mut w = match chain.writer(&q.mem) {
                    Ok(w) if w.available_bytes() > HDR_LEN => w,
                    _ => {
                        let _ = q.rx.add_used(&q.mem, head, 0);
                        used = true;
                        continue;
                    }
                };
                let room = (w.available_bytes() - HDR_LEN)
                    .min(c.peer_credit() as usize)
                    .min(MAX_PKT_PAYLOAD);
                let (op, n, flags) = match c.stream.read(&mut buf[..room]) {
                    Ok(0) => {
                        c.host_eof = true;
                        (OP_SHUTDOWN, 0, SHUTDOWN_RCV | SHUTDOWN_SEND)
                    }
                    Ok(n) => (OP_RW, n, 0),
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock
                            || e.kind() == ErrorKind::Interrupted =>
                    {
                        q.rx.go_to_previous_position();
                        continue 'conns;
                    }
                    Err(_) => {
                        c.host_eof = true;
                        (OP_RST, 0, 0)
                    }
                };
                c.rx_cnt = c.rx_cnt.wrapping_add(n as u32);
                let h = PacketHeader {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: key.0,
                    dst_port: key.1,
                    len: n as u32,
                    type_: TYPE_STREAM,
                    op,
                    flags,
                    buf_alloc: CONN_BUF_ALLOC,
                    fwd_cnt: c.fwd_cnt,
                };
                c.fwd_cnt_sent = c.fwd_cnt;
                let written = w
                    .write_all(&h.to_bytes())
                    .and_then(|_| w.write_all(&buf[..n]))
                    .map(|_| HDR_LEN + n)
                    .unwrap_or(0);
                if op == OP_RST {
                    self.conns.remove(&key);
                }
                if q.rx.add_used(&q.mem, head, written as u32).is_err() {
                    break 'conns;
                }
                used = true;
            }
        }
        if used && q.rx.needs_notification(&q.mem).unwrap_or(true) {
            q.irq.trigger(VIRTIO_MMIO_INT_VRING);
        }
        self.queues = Some(q);
    }

    fn flush_all(&mut self) {
        let mut dead = Vec::new();
        for (k, c) in self.conns.iter_mut() {
            if !c.to_host.is_empty() && c.flush_to_host().is_err() {
                dead.push(*k);
            }
        }
        for k in dead {
            self.reset(k);
        }
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for k in keys {
            self.maybe_credit_update(k);
        }
    }
}

struct Shared {
    muxer: Mutex<Muxer>,
    wake: EventFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Muxer> {
        self.muxer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The virtio-vsock device.
pub struct Vsock {
    shared: Arc<Shared>,
    guest_cid: u64,
}

/// The vsock device's host-side thread: accepts host connections and moves host data in.
pub struct VsockWorker {
    shared: Arc<Shared>,
    listener: Option<UnixListener>,
    uds_path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Vsock {
    /// Binds the host socket. It must not exist yet.
    pub fn new(cfg: &VsockConfig) -> Result<(Self, VsockWorker), DeviceError> {
        let path = cfg.uds_path.display().to_string();
        if cfg.guest_cid < 3 || cfg.guest_cid > u64::from(u32::MAX) {
            return Err(DeviceError::VsockSocket {
                path,
                source: std::io::Error::new(
                    ErrorKind::InvalidInput,
                    "the guest CID must be 3..2^32",
                ),
            });
        }
        let listener = UnixListener::bind(&cfg.uds_path)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|source| DeviceError::VsockSocket {
                path: path.clone(),
                source,
            })?;
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceError::Worker {
            device: "vsock",
            source,
        })?;
        let shared = Arc::new(Shared {
            muxer: Mutex::new(Muxer {
                guest_cid: cfg.guest_cid,
                uds_path: cfg.uds_path.clone(),
                queues: None,
                conns: HashMap::new(),
                ctrl: VecDeque::new(),
                pending: Vec::new(),
                next_host_port: FIRST_HOST_PORT,
                rx_starved: false,
            }),
            wake,
        });
        Ok((
            Vsock {
                shared: shared.clone(),
                guest_cid: cfg.guest_cid,
            },
            VsockWorker {
                shared,
                listener: Some(listener),
                uds_path: cfg.uds_path.clone(),
                stop: Arc::new(AtomicBool::new(false)),
                thread: None,
            },
        ))
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), DeviceError> {
        let mut it = queues.into_iter();
        let (Some(rx), Some(tx), Some(_ev), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(DeviceError::QueueCount { got: 0, want: 3 });
        };
        self.shared.lock().queues = Some(Queues { mem, rx, tx, irq });
        let _ = self.shared.wake.write(1);
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        let mut m = self.shared.lock();
        match index {
            0 => m.rx_starved = false,
            1 => {
                m.process_tx();
            }
            _ => return,
        }
        m.process_rx();
        drop(m);
        let _ = self.shared.wake.write(1);
    }

    fn reset(&mut self) {
        let mut m = self.shared.lock();
        m.queues = None;
        m.conns.clear();
        m.ctrl.clear();
    }
}

const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_LISTENER: u64 = u64::MAX - 1;
const TOKEN_PENDING: u64 = 1 << 62;

fn worker_loop(shared: Arc<Shared>, listener: UnixListener, stop: Arc<AtomicBool>) {
    let Ok(epoll) = Epoll::new() else {
        return;
    };
    let add = |fd: i32, ev: EventSet, token: u64| {
        let _ = epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(ev, token));
    };
    add(shared.wake.as_raw_fd(), EventSet::IN, TOKEN_WAKE);
    add(listener.as_raw_fd(), EventSet::IN, TOKEN_LISTENER);
    let mut events = vec![EpollEvent::default(); 64];
    let mut pending_registered = 0usize;
    while !stop.load(Ordering::Acquire) {
        {
            let mut m = shared.lock();
            // Register what each connection currently wants: data in while the guest has credit
            // and buffers, room out while guest bytes wait for the host.
            let starved = m.rx_starved;
            for (k, c) in m.conns.iter_mut() {
                let mut want = EventSet::empty();
                if c.state == ConnState::Established
                    && !c.host_eof
                    && c.peer_credit() > 0
                    && !starved
                {
                    want |= EventSet::IN;
                }
                if !c.to_host.is_empty() {
                    want |= EventSet::OUT;
                }
                let token = (u64::from(k.0) << 32) | u64::from(k.1);
                let fd = c.stream.as_raw_fd();
                match c.registered {
                    None => {
                        let _ = epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(want, token));
                    }
                    Some(prev) if prev != want => {
                        let _ =
                            epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(want, token));
                    }
                    _ => {}
                }
                c.registered = Some(want);
            }
            for (i, p) in m.pending.iter().enumerate().skip(pending_registered) {
                add(p.stream.as_raw_fd(), EventSet::IN, TOKEN_PENDING + i as u64);
            }
            pending_registered = m.pending.len();
        }
        let n = match epoll.wait(100, &mut events) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let mut m = shared.lock();
        let mut pending_changed = false;
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_WAKE => {
                    let _ = shared.wake.read();
                }
                TOKEN_LISTENER => {
                    while let Ok((s, _)) = listener.accept() {
                        if m.pending.len() + m.conns.len() >= MAX_CONNS
                            || s.set_nonblocking(true).is_err()
                        {
                            continue;
                        }
                        m.pending.push(Pending {
                            stream: s,
                            line: Vec::new(),
                        });
                    }
                }
                t if (TOKEN_PENDING..TOKEN_WAKE - 1).contains(&t) => {
                    let i = (t - TOKEN_PENDING) as usize;
                    let Some(p) = m.pending.get_mut(i) else {
                        continue;
                    };
                    let mut b = [0u8; 1];
                    // Byte by byte: nothing past the newline may be consumed, it belongs to the
                    // connection.
                    loop {
                        match p.stream.read(&mut b) {
                            Ok(1) if b[0] == b'\n' => {
                                p.line.push(b'\n');
                                break;
                            }
                            Ok(1) if p.line.len() < MAX_CONNECT_LINE => p.line.push(b[0]),
                            Ok(_) => {
                                p.line.clear();
                                p.line.push(0); // marks it for closing
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    pending_changed = true;
                }
                _ => {}
            }
        }
        if pending_changed {
            let mut keep = Vec::new();
            for p in std::mem::take(&mut m.pending) {
                let _ = epoll.ctl(
                    ControlOperation::Delete,
                    p.stream.as_raw_fd(),
                    EpollEvent::default(),
                );
                if p.line.last() == Some(&b'\n') {
                    let line = p.line.clone();
                    m.host_connect(p.stream, &line);
                } else if p.line.first() != Some(&0) {
                    keep.push(p);
                }
            }
            m.pending = keep;
            pending_registered = 0;
        }
        m.flush_all();
        m.process_rx();
    }
}

impl Worker for VsockWorker {
    fn start(&mut self, events: Sender<VcpuEvent>, seccomp: bool) -> Result<(), crate::Error> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let t = super::spawn_worker(
            "strata-vsock",
            "vsock",
            crate::seccomp::ThreadRole::VsockWorker,
            events,
            seccomp,
            move || worker_loop(shared, listener, stop),
        )?;
        self.thread = Some(t);
        Ok(())
    }

    fn stop(&mut self) {
        super::stop_worker(&self.stop, &self.shared.wake, &mut self.thread);
        self.listener.take();
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl Drop for VsockWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1024,
            dst_port: 7,
            len: 5,
            type_: 1,
            op: OP_RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 9,
        };
        assert_eq!(PacketHeader::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn credit_is_what_the_peer_has_left() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Conn::new(a, ConnState::Established);
        c.peer_buf_alloc = 100;
        c.rx_cnt = 70;
        c.peer_fwd_cnt = 20;
        assert_eq!(c.peer_credit(), 50);
        c.rx_cnt = 200;
        assert_eq!(c.peer_credit(), 0);
        // Counters wrap.
        c.rx_cnt = 5;
        c.peer_fwd_cnt = u32::MAX - 4;
        assert_eq!(c.peer_credit(), 90);
    }
}
