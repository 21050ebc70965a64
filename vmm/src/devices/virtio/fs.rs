//! virtio-fs (device type 26) as a vhost-user front end, as QEMU's `vhost-user-fs-device` is:
//! the file system is served by a vhost-user back end in its own process (rust-vmm's
//! `virtiofsd`). This device gives the guest its configuration space (the tag, one request
//! queue) and hands the back end what it needs to serve the queues itself:
//!
//! - guest memory, which must therefore be shared ([`crate::vstate::memory::create_shared`]:
//!   one memfd, whose descriptor goes with `SET_MEM_TABLE`);
//! - each queue's size and ring addresses (in this process's address space, which the back end
//!   translates through the memory table);
//! - a kick eventfd per queue, written when the driver notifies the queue;
//! - a call eventfd per queue. The back end does not raise the guest's interrupt itself: the
//!   MMIO transport's interrupt status must show "used ring" before the line is raised, or
//!   Linux's `vm_interrupt` ignores it. The worker thread waits on the call eventfds and raises
//!   the interrupt through the transport's [`IrqTrigger`].
//!
//! The connection is made and the features negotiated when the device is built, before any
//! seccomp filter is loaded, so a missing or refusing back end fails the machine's start with
//! its reason. After that the vhost-user conversation (activation, reset) happens on the worker
//! thread, whose filter allows `sendmsg`/`recvmsg` on the connected socket and nothing that
//! opens or connects. The vCPU that sets DRIVER_OK waits for the activation to be done (as
//! QEMU's does): a kick that reached the back end before `SET_VRING_ENABLE` would be consumed
//! and dropped, and the guest's first request never answered.
//!
//! A back end that closes its socket ends the machine (`VcpuEvent::Failed`): the guest's file
//! system would otherwise hang for ever on requests nobody serves.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, DeviceError, IrqTrigger, VirtioDevice, Worker, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};
use crate::machine::VcpuEvent;

/// The virtio device ID of a file system device.
pub const TYPE_FS: u32 = 26;
/// The longest tag the configuration space holds (bytes, no NUL needed).
pub const TAG_MAX: usize = 36;
/// The high-priority queue and one request queue.
pub const NUM_QUEUES: usize = 2;
/// Each queue's maximum size (QEMU's default for vhost-user-fs is 128).
pub const QUEUE_SIZE: u16 = 256;

/// vhost-user's own feature bit: the back end speaks protocol features.
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// What the guest may be offered, of what the back end offers: ring formats the back end
/// handles and the transport does not care about.
const GUEST_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

const TOKEN_WAKE: u64 = 0;
const TOKEN_SOCKET: u64 = 1;
const TOKEN_CALL: u64 = 2;

/// A virtio-fs device: the tag the guest mounts, and the back end's vhost-user socket.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub tag: String,
    pub socket: PathBuf,
}

impl FsConfig {
    /// `TAG=SOCKET` (`strata vm run --fs`).
    pub fn parse(spec: &str) -> Result<FsConfig, DeviceError> {
        let bad = |why: &str| DeviceError::FsSpec {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (tag, socket) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected TAG=SOCKET"))?;
        let cfg = FsConfig {
            tag: tag.to_string(),
            socket: PathBuf::from(socket),
        };
        cfg.check().map_err(|why| bad(&why))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.tag.is_empty() || self.tag.len() > TAG_MAX || self.tag.contains('\0') {
            return Err(format!(
                "the tag must be 1 to {TAG_MAX} bytes without NUL; {:?} is not",
                self.tag
            ));
        }
        if self.socket.as_os_str().is_empty() {
            return Err("no socket path".into());
        }
        Ok(())
    }
}

/// One queue as the driver set it up (guest addresses).
#[derive(Clone, Copy, Debug)]
struct Ring {
    index: usize,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

/// What a vCPU thread asks the worker to do.
enum Command {
    Activate {
        mem: GuestMemoryMmap,
        features: u64,
        rings: Vec<Ring>,
        irq: Arc<IrqTrigger>,
        done: Sender<Result<(), String>>,
    },
    Reset,
}

/// How long a vCPU waits for the back end to take the queues.
const ACTIVATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The device model, on the MMIO bus.
pub struct Fs {
    socket: String,
    config: [u8; TAG_MAX + 4],
    offered: u64,
    acked: u64,
    commands: Sender<Command>,
    wake: EventFd,
    kicks: Vec<EventFd>,
}

/// The worker: the vhost-user conversation and the interrupt relay.
pub struct FsWorker {
    /// The thread's state, until the thread takes it.
    ctx: Option<WorkerCtx>,
    /// Wakes the thread (to stop it).
    wake: EventFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn eventfd(device: &'static str) -> Result<EventFd, DeviceError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceError::Worker { device, source })
}

impl Fs {
    /// Connects to the back end and negotiates its features. The back end must be listening.
    pub fn new(cfg: &FsConfig) -> Result<(Fs, FsWorker), DeviceError> {
        cfg.check().map_err(|why| DeviceError::FsSpec {
            spec: format!("{}={}", cfg.tag, cfg.socket.display()),
            why,
        })?;
        let socket = cfg.socket.display().to_string();
        let fail = |what: &str, e: vhost::Error| DeviceError::VhostUser {
            socket: socket.clone(),
            reason: format!("{what}: {e}"),
        };
        let mut frontend =
            Frontend::connect(&cfg.socket, NUM_QUEUES as u64).map_err(|e| fail("connecting", e))?;
        frontend.set_owner().map_err(|e| fail("SET_OWNER", e))?;
        let backend_features = frontend
            .get_features()
            .map_err(|e| fail("GET_FEATURES", e))?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(DeviceError::VhostUser {
                socket,
                reason: format!(
                    "the back end does not offer VIRTIO_F_VERSION_1 (features {backend_features:#x})"
                ),
            });
        }
        let protocol = backend_features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        if protocol {
            let offered = frontend
                .get_protocol_features()
                .map_err(|e| fail("GET_PROTOCOL_FEATURES", e))?;
            // Only REPLY_ACK, so that every later request is acknowledged (and an error in it
            // is seen here, not as a guest that hangs).
            let wanted = offered & VhostUserProtocolFeatures::REPLY_ACK;
            frontend
                .set_protocol_features(wanted)
                .map_err(|e| fail("SET_PROTOCOL_FEATURES", e))?;
            if wanted.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        let wake = eventfd("fs")?;
        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..NUM_QUEUES {
            kicks.push(eventfd("fs")?);
            calls.push(eventfd("fs")?);
        }
        let dup = |e: &EventFd| {
            e.try_clone().map_err(|source| DeviceError::Worker {
                device: "fs",
                source,
            })
        };
        let mut config = [0u8; TAG_MAX + 4];
        config[..cfg.tag.len()].copy_from_slice(cfg.tag.as_bytes());
        config[TAG_MAX..].copy_from_slice(&1u32.to_le_bytes());
        let (tx, rx) = mpsc::channel();
        let dev = Fs {
            socket: socket.clone(),
            config,
            offered: backend_features & GUEST_FEATURES,
            acked: 0,
            commands: tx,
            wake: dup(&wake)?,
            kicks: kicks.iter().map(dup).collect::<Result<_, _>>()?,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let worker = FsWorker {
            ctx: Some(WorkerCtx {
                socket,
                frontend,
                commands: rx,
                protocol,
                backend_features,
                wake: dup(&wake)?,
                kicks,
                calls,
                stop: stop.clone(),
                irq: None,
                active: Vec::new(),
                _mem: None,
            }),
            wake,
            stop,
            thread: None,
        };
        Ok((dev, worker))
    }

    fn send(&self, cmd: Command) -> Result<(), DeviceError> {
        let gone = || DeviceError::Worker {
            device: "fs",
            source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the fs worker ended"),
        };
        self.commands.send(cmd).map_err(|_| gone())?;
        self.wake.write(1).map_err(|_| gone())
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.offered;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), DeviceError> {
        if queues.len() != NUM_QUEUES {
            return Err(DeviceError::QueueCount {
                got: queues.len(),
                want: NUM_QUEUES,
            });
        }
        let rings = queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready())
            .map(|(index, q)| Ring {
                index,
                size: q.size(),
                desc: q.desc_table(),
                avail: q.avail_ring(),
                used: q.used_ring(),
            })
            .collect();
        let (done, result) = mpsc::channel();
        self.send(Command::Activate {
            mem,
            features: self.acked,
            rings,
            irq,
            done,
        })?;
        match result.recv_timeout(ACTIVATE_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(DeviceError::VhostUser {
                socket: self.socket.clone(),
                reason,
            }),
            Err(_) => Err(DeviceError::VhostUser {
                socket: self.socket.clone(),
                reason: format!(
                    "the queues were not set up within {} s",
                    ACTIVATE_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    fn queue_notify(&mut self, index: u16) {
        if let Some(k) = self.kicks.get(usize::from(index)) {
            // Fails only when the counter would overflow: a kick is pending then anyway.
            let _ = k.write(1);
        }
    }

    fn reset(&mut self) {
        self.acked = 0;
        if let Err(e) = self.send(Command::Reset) {
            tracing::warn!(error = %e, "virtio-fs reset");
        }
    }
}

impl Worker for FsWorker {
    fn start(&mut self, events: Sender<VcpuEvent>, seccomp: bool) -> Result<(), crate::Error> {
        if self.thread.is_some() {
            return Ok(());
        }
        let Some(mut ctx) = self.ctx.take() else {
            return Ok(());
        };
        let err = |source| DeviceError::Worker {
            device: "fs",
            source,
        };
        // Made here, so the thread's filter needs no epoll_create.
        let epoll = Epoll::new().map_err(err)?;
        let add = |fd: i32, set: EventSet, token: u64| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(set, token))
                .map_err(err)
        };
        add(ctx.wake.as_raw_fd(), EventSet::IN, TOKEN_WAKE)?;
        add(
            ctx.frontend.as_raw_fd(),
            EventSet::READ_HANG_UP,
            TOKEN_SOCKET,
        )?;
        for (i, c) in ctx.calls.iter().enumerate() {
            add(c.as_raw_fd(), EventSet::IN, TOKEN_CALL + i as u64)?;
        }
        let failures = events.clone();
        let t = super::spawn_worker(
            "strata-fs",
            "fs",
            crate::seccomp::ThreadRole::FsWorker,
            events,
            seccomp,
            move || {
                if let Err(reason) = ctx.run(&epoll) {
                    let _ = failures.send(VcpuEvent::Failed { cpu: 0, reason });
                }
            },
        )?;
        self.thread = Some(t);
        Ok(())
    }

    fn stop(&mut self) {
        super::stop_worker(&self.stop, &self.wake, &mut self.thread);
    }
}

impl Drop for FsWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker thread's state.
struct WorkerCtx {
    socket: String,
    frontend: Frontend,
    commands: Receiver<Command>,
    protocol: bool,
    backend_features: u64,
    wake: EventFd,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    stop: Arc<AtomicBool>,
    irq: Option<Arc<IrqTrigger>>,
    /// The queues the back end serves now.
    active: Vec<usize>,
    /// The memory the back end maps, kept while it serves it.
    _mem: Option<GuestMemoryMmap>,
}

impl WorkerCtx {
    /// Until stopped; an error is the reason the machine must stop.
    fn run(&mut self, epoll: &Epoll) -> Result<(), String> {
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("virtio-fs worker: epoll_wait: {e}")),
            };
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_WAKE => {
                        let _ = self.wake.read();
                        while let Ok(cmd) = self.commands.try_recv() {
                            self.handle(cmd);
                        }
                    }
                    TOKEN_SOCKET => {
                        return Err(format!(
                            "the virtio-fs back end ({}) closed its connection",
                            self.socket
                        ))
                    }
                    t => {
                        let i = (t - TOKEN_CALL) as usize;
                        if let Some(c) = self.calls.get(i) {
                            let _ = c.read();
                        }
                        if let Some(irq) = &self.irq {
                            irq.trigger(VIRTIO_MMIO_INT_VRING);
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Activate {
                mem,
                features,
                rings,
                irq,
                done,
            } => {
                // The guest can ask again after a failure (a reset, a new set-up): not fatal.
                let r = self.activate(&mem, features, &rings);
                if r.is_ok() {
                    self.active = rings.iter().map(|r| r.index).collect();
                    self._mem = Some(mem);
                    self.irq = Some(irq);
                }
                let _ = done.send(r);
            }
            Command::Reset => {
                self.irq = None;
                for i in std::mem::take(&mut self.active) {
                    if self.protocol {
                        let _ = self.frontend.set_vring_enable(i, false);
                    }
                    // GET_VRING_BASE stops the ring in the back end.
                    let _ = self.frontend.get_vring_base(i);
                }
                self._mem = None;
            }
        }
    }

    fn activate(
        &mut self,
        mem: &GuestMemoryMmap,
        features: u64,
        rings: &[Ring],
    ) -> Result<(), String> {
        let fe = &mut self.frontend;
        let step = |what: &str, r: vhost::Result<()>| r.map_err(|e| format!("{what}: {e}"));
        step(
            "SET_FEATURES",
            fe.set_features(features | (self.backend_features & VHOST_USER_F_PROTOCOL_FEATURES)),
        )?;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("guest memory is not shareable: {e}"))?;
        step("SET_MEM_TABLE", fe.set_mem_table(&regions).map(|_| ()))?;
        let host = |a: u64| {
            mem.get_host_address(GuestAddress(a))
                .map(|p| p as u64)
                .map_err(|e| format!("ring address {a:#x}: {e}"))
        };
        for r in rings {
            let i = r.index;
            let addrs = VringConfigData {
                queue_max_size: QUEUE_SIZE,
                queue_size: r.size,
                flags: 0,
                desc_table_addr: host(r.desc)?,
                used_ring_addr: host(r.used)?,
                avail_ring_addr: host(r.avail)?,
                log_addr: None,
            };
            step("SET_VRING_NUM", fe.set_vring_num(i, r.size))?;
            step("SET_VRING_BASE", fe.set_vring_base(i, 0))?;
            step("SET_VRING_ADDR", fe.set_vring_addr(i, &addrs))?;
            step("SET_VRING_CALL", fe.set_vring_call(i, &self.calls[i]))?;
            step("SET_VRING_KICK", fe.set_vring_kick(i, &self.kicks[i]))?;
            if self.protocol {
                step("SET_VRING_ENABLE", fe.set_vring_enable(i, true))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_and_socket_are_parsed_and_checked() {
        let c = FsConfig::parse("strata=/run/x/virtiofs.sock").unwrap();
        assert_eq!(c.tag, "strata");
        assert_eq!(c.socket, PathBuf::from("/run/x/virtiofs.sock"));
        // The socket path may hold '=': only the first one splits.
        let c = FsConfig::parse("t=/a=b").unwrap();
        assert_eq!(c.socket, PathBuf::from("/a=b"));
        for bad in [
            "",
            "strata",
            "=/sock",
            "t=",
            &format!("{}=/s", "x".repeat(37)),
        ] {
            let e = FsConfig::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(FsConfig::parse(&format!("{}=/s", "x".repeat(36))).is_ok());
    }

    #[test]
    fn a_missing_back_end_is_a_clear_error() {
        let e = Fs::new(&FsConfig {
            tag: "t".into(),
            socket: "/nonexistent/virtiofs.sock".into(),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/virtiofs.sock"), "{e}");
        assert!(e.contains("connecting"), "{e}");
    }
}
